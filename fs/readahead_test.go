package fs

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/regfs/regfs/internal/testenv"
)

// TestSetReadAhead sets the read-ahead of a real mount and reads it back
// from sysfs; the kernel's default is 128 KiB.
func TestSetReadAhead(t *testing.T) {
	m := newMount(t, mountConfig{})
	var st syscall.Stat_t
	if err := syscall.Stat(m.dir, &st); err != nil {
		t.Fatal(err)
	}
	p := bdiReadAheadPath(st.Dev)
	if _, err := os.Stat(p); err != nil {
		testenv.SkipOrFail(t, "no bdi read-ahead in sysfs for the mount: %v", err)
	}
	err := SetReadAhead(m.dir)
	if errors.Is(err, os.ErrPermission) {
		testenv.SkipOrFail(t, "setting read-ahead needs root: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || got != ReadAheadKB {
		t.Errorf("read_ahead_kb = %q, want %d", b, ReadAheadKB)
	}
}

func TestSetReadAheadNotMounted(t *testing.T) {
	if err := SetReadAhead(t.TempDir() + "/missing"); err == nil {
		t.Error("SetReadAhead of a missing directory succeeded")
	}
}
