package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestHabits runs the habits people bring from other filesystems (issue
// #14, README "Everyday habits") through a real mount with real tools.
func TestHabits(t *testing.T) {
	habits := []scenario{
		{"Fsync", testHabitFsync},
	}
	for _, d := range []string{"filesystem", "inmemory"} {
		t.Run(d, func(t *testing.T) {
			for _, s := range habits {
				t.Run(s.name, func(t *testing.T) {
					m := startMount(t, d, mountOpts{})
					s.run(t, m)
				})
			}
		})
	}
}

// wantFail runs script, which must fail with output containing want.
func wantFail(t *testing.T, script, want string) {
	t.Helper()
	out, err := shErr(t, script)
	if err == nil {
		t.Errorf("%s: succeeded, want failure %q\n%s", script, want, out)
		return
	}
	if !strings.Contains(out, want) {
		t.Errorf("%s: output %q, want it to contain %q", script, out, want)
	}
}

// testHabitFsync: fsync, fdatasync, dd conv=fsync and sync FILE succeed on
// every kind of node, and on a manifest being written (stored at close).
func testHabitFsync(t *testing.T, m *mount) {
	mf := pushImage(t, m, "r", "v1", 1)
	rev := sha(mf)
	layer := strings.TrimSpace(sh(t, fmt.Sprintf("ls %q | head -1", m.path("r/_layers"))))
	for _, p := range []string{
		m.path("r/_layers", layer), m.path("r/_manifests", rev), m.path("r/_manifests/v1"),
		m.path("r/_layers"), m.path("r/_manifests"), m.path("r/_uploads"), m.path("r"), m.Dir,
		m.path(".regfs/stats"),
	} {
		sh(t, fmt.Sprintf("sync %q && sync -d %q", p, p))
	}
	// A manifest being written, by dd with conv=fsync: fsync returns 0, the
	// manifest is stored at close.
	src := writeFile(t, mf)
	sh(t, fmt.Sprintf("dd if=%q of=%q conv=fsync status=none", src, m.path("r/_manifests/v2")))
	if got := readFile(t, m.path("r/_manifests/v2")); string(got) != string(mf) {
		t.Errorf("v2 after dd conv=fsync reads %q", got)
	}
	// An upload: dd conv=fsync,fdatasync commits at close.
	blob := randomBytes(t, 70000)
	bsrc := writeFile(t, blob)
	sh(t, fmt.Sprintf("dd if=%q of=%q bs=4096 conv=fsync status=none", bsrc, m.path("r/_uploads", sha(blob))))
	sh(t, fmt.Sprintf("test -f %q", m.path("r/_layers", sha(blob))))
}
