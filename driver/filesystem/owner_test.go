package filesystem

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/regfs/regfs/driver"
)

// TestLeftoversSkipLiveOwner: a staging entry not locked yet (its writer
// between creating and locking it) is no leftover while the process that
// made it runs; once that process is gone, or a later process has its pid,
// the entry is a crash's leftover. fsck beside a live mount once reported
// such an entry.
func TestLeftoversSkipLiveOwner(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	self := os.Getpid()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := cmd.Process.Pid
	names := map[string]bool{ // name -> a leftover
		ownerID("aaaa") + ".1":                                 false,
		strconv.Itoa(gone) + "-" + procStart(self) + "-bbbb.2": true, // pid exited
		strconv.Itoa(self) + "-1-cccc.3":                       true, // pid reused: another start time
		"dddd.4":                                               true, // no owner to ask
	}
	var want []string
	for n, left := range names {
		if err := os.MkdirAll(filepath.Join(root, tmpDirName, n), 0o700); err != nil {
			t.Fatal(err)
		}
		if left {
			want = append(want, filepath.Join(root, tmpDirName, n))
		}
	}
	slices.Sort(want)
	j := newDriver(t, root).(driver.Janitor)
	left, err := j.Leftovers(ctx)
	if err != nil || !slices.Equal(left, want) {
		t.Errorf("Leftovers = %q, %v;\nwant %q", left, err, want)
	}
	if err := j.Clean(ctx); err != nil {
		t.Fatal(err)
	}
	for n, left := range names {
		_, err := os.Stat(filepath.Join(root, tmpDirName, n))
		if left != os.IsNotExist(err) {
			t.Errorf("after Clean, %s: %v (a leftover: %v)", n, err, left)
		}
	}
}
