package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/regfs/regfs/internal/testenv"
)

// checkRemoteRows checks the R rows of a tiny run: each measured, with a
// positive value, comparison and ratio. Outside CI a missing registry or
// curl leaves them out; in CI that fails.
func checkRemoteRows(t *testing.T, rep *Report) {
	t.Helper()
	for _, tool := range []string{gcRegistryBin, "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Errorf("%s is not installed: the R rows were not measured", tool)
			} else {
				t.Logf("%s not installed: the R rows were left out", tool)
			}
			return
		}
	}
	wantRows(t, rep, "", []rowWant{
		{"R1", "curl GET of the same blob"},
		{"R1", "a bare bazil.org/fuse file system serving the blob"},
		{"R2", "curl POST + monolithic PUT of the same file"},
		{"R3", "the same tags/list requests alone (curl)"},
		{"R3", remoteFloorAgainst},
		{"R3", remoteFloorParallelAgainst},
		{"R3", remoteBareTreeAgainst},
		{"R3", remoteCombinedAgainst},
	})
}

// TestRemoteRowsTiny runs R1 to R3 once on tiny data (a 4 MiB layer, 50
// repositories) against a docker-registry of their own, so that they
// cannot rot: every row has figures, among them the bare remote file
// system's (bareremote.go, its own child process), R3's floor (the
// requests ls -l needs, by curl) and R3's FUSE floors (ls -l through the
// bare tree of baretree.go, alone and beside the curls, whose output the
// bench checks is regfs's but for the dates), and nothing is left behind.
// No figure is checked against its target.
func TestRemoteRowsTiny(t *testing.T) {
	needFUSE(t)
	cfg := tinyConfig(t)
	cfg.Only = []string{"R"}
	rep, _ := runTiny(t, cfg)
	checkRemoteRows(t, rep)
	if _, err := exec.LookPath(gcRegistryBin); err == nil {
		if row, ok := findRow(rep, "R1", "through the bare bazil.org/fuse file system", "curl GET"); !ok || row.Value <= 0 || row.Ratio <= 0 {
			t.Errorf("the bare remote file system's R1 row against curl: %+v (found %v)", row, ok)
		}
		if row, ok := findRow(rep, "R3", remoteFloorWhat, "the same tags/list requests alone"); !ok || row.Value <= 0 || row.Compare <= 0 || row.Ratio <= 0 {
			t.Errorf("R3's floor row against the tags/list requests: %+v (found %v)", row, ok)
		}
		for _, what := range []string{remoteBareTreeWhat, remoteCombinedWhat} {
			if row, ok := findRow(rep, "R3", what, "the same tags/list requests alone"); !ok || row.Value <= 0 || row.Compare <= 0 || row.Ratio <= 0 {
				t.Errorf("R3's row %q against the tags/list requests: %+v (found %v)", what, row, ok)
			}
		}
	}
	assertCleanedUp(t, cfg.TempDir)
}

// findRow finds the row id whose What contains what and whose Against
// contains against.
func findRow(rep *Report, id, what, against string) (Row, bool) {
	for _, r := range rep.Rows {
		if r.ID == id && strings.Contains(r.What, what) && strings.Contains(r.Against, against) {
			return r, true
		}
	}
	return Row{}, false
}
