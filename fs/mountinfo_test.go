package fs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// MountAt finds a mount point whose name mountinfo escapes (a space, a
// backslash), with its device, and nothing at a directory that is not one.
func TestMountAt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	if m, ok, err := MountAt("/"); err != nil || !ok || m.Point != "/" {
		t.Fatalf("MountAt(/) = %+v %v %v", m, ok, err)
	}
	dir := filepath.Join(t.TempDir(), `with space\and backslash`)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := MountAt(dir); ok || err != nil {
		t.Fatalf("a plain directory listed as a mount: %v %v", ok, err)
	}
	src := t.TempDir()
	if out, err := exec.Command("mount", "--bind", src, dir).CombinedOutput(); err != nil {
		t.Skipf("mount --bind: %v: %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	m, ok, err := MountAt(dir)
	if err != nil || !ok {
		t.Fatalf("MountAt(%q) = %v %v", dir, ok, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d:%d", st.Dev>>8&0xfff, st.Dev&0xff|(st.Dev>>12)&0xfff00); m.Dev != want {
		t.Errorf("device %s, want %s", m.Dev, want)
	}
	all, err := Mounts()
	if err != nil || len(all) < 2 {
		t.Errorf("Mounts: %d, %v", len(all), err)
	}
}
