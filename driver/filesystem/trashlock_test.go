package filesystem

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
)

// TestLeftoversSkipDeleteInProgress: a trash entry whose lock is held (a
// Delete removing it right now, in this process or another) is neither
// reported by Leftovers nor removed by Clean; once the lock is free it is
// a crash's leftover like any other.
func TestLeftoversSkipDeleteInProgress(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	busy := filepath.Join(root, trashDirName, "busy.1")
	if err := os.MkdirAll(filepath.Join(busy, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(busy, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	j := newDriver(t, root).(driver.Janitor)
	if left, err := j.Leftovers(ctx); err != nil || len(left) != 0 {
		t.Errorf("Leftovers with a Delete in progress = %q, %v; want none", left, err)
	}
	if err := j.Clean(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(busy, "x")); err != nil {
		t.Errorf("Clean removed a Delete's entry in progress: %v", err)
	}
	unix.Close(fd)
	if left, err := j.Leftovers(ctx); err != nil || !slices.Equal(left, []string{busy}) {
		t.Errorf("Leftovers once the lock is free = %q, %v; want %q", left, err, busy)
	}
}
