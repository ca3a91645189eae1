package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/testenv"
)

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	file := filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{file, filepath.Join(full, "x")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if abs, err := checkMountpoint(empty); err != nil || abs != empty {
		t.Errorf("empty directory: %q %v", abs, err)
	}
	for _, c := range []struct{ p, want string }{
		{filepath.Join(dir, "missing"), "does not exist"},
		{file, "is not a directory"},
		{full, "is not empty"},
		{"/proc", "is already a mount point"},
	} {
		_, err := checkMountpoint(c.p)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("checkMountpoint(%s) = %v, want one line with %q", c.p, err, c.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunMountsAndUnmounts mounts the in-memory store, waits for the ready
// line, cancels (as a signal does) and checks the mount is gone in time.
func TestRunMountsAndUnmounts(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.SkipOrFail(t, "/dev/fuse is missing: FUSE tests need a FUSE device")
	}
	mnt := t.TempDir()
	t.Cleanup(func() {
		if isMountPoint(mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, Config{Mountpoint: mnt, Storage: Storage{Driver: driverInmemory}, CacheSize: 1 << 20, Service: Service{UID: -1, GID: -1, Umask: defaultUmask}}, newLogger(&log, false), func() {})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "msg=mounted") {
		select {
		case err := <-done:
			t.Fatalf("run returned before mounting: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready line within 10s:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !isMountPoint(mnt) {
		t.Fatalf("ready line logged but %s is not mounted", mnt)
	}
	if _, err := checkMountpoint(mnt); err == nil || !strings.Contains(err.Error(), "already a mount point") {
		t.Errorf("second mount on the same directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, ".regfs", "stats")); err != nil {
		t.Errorf("stat through the mount: %v", err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("run did not return within 5s of the signal:\n%s", log.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("unmount took %v", d)
	}
	if isMountPoint(mnt) {
		t.Errorf("%s still mounted after run returned", mnt)
	}
	for _, want := range []string{"msg=mounted", "driver=inmemory", "mountpoint=" + mnt, "msg=unmounted"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
}
