package main

import (
	"os/exec"
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
		{"R2", "curl POST + monolithic PUT of the same file"},
		{"R3", "the same tags/list requests alone (curl)"},
	})
}
