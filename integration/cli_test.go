package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalUnmountsIdle checks that SIGTERM and SIGINT unmount an idle mount
// and exit 0 within 5 s.
func TestSignalUnmountsIdle(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			m := startMount(t, "inmemory", mountOpts{})
			start := time.Now()
			if err := m.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-m.done:
				m.done <- err
				if err != nil {
					t.Errorf("regfs exited with %v after %v\n%s", err, sig, m.logText())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("regfs still running 5 s after %v\n%s", sig, m.logText())
			}
			t.Logf("exited %v after %v", time.Since(start).Round(time.Millisecond), sig)
			if isMounted(m.Dir) {
				t.Errorf("%s still mounted after %v", m.Dir, sig)
			}
		})
	}
}

// TestSignalBusyMount checks that a busy mount is reported with what to do,
// and that the daemon still unmounts (lazily) and exits in bounded time.
func TestSignalBusyMount(t *testing.T) {
	m := startMount(t, "inmemory", mountOpts{})
	holder := exec.Command("sleep", "60")
	holder.Dir = m.Dir // its working directory keeps the mount busy
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-m.done:
		m.done <- err
	case <-time.After(15 * time.Second):
		t.Fatalf("regfs still running 15 s after SIGTERM on a busy mount\n%s", m.logText())
	}
	log := m.logText()
	if !strings.Contains(log, "mount is busy") || !strings.Contains(log, "fusermount3 -u -z") {
		t.Errorf("the log does not say the mount is busy and what to do:\n%s", log)
	}
	if isMounted(m.Dir) {
		t.Errorf("%s still mounted after the daemon exited", m.Dir)
	}
}

// TestMountpointRefused checks that a bad mountpoint gets a one-line message
// and a non-zero exit, not a stack trace.
func TestMountpointRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	full := filepath.Join(dir, "full")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(full, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	busy := startMount(t, "inmemory", mountOpts{})
	for _, c := range []struct{ mnt, want string }{
		{filepath.Join(dir, "missing"), "does not exist"},
		{file, "not a directory"},
		{full, "is not empty"},
		{busy.Dir, "already a mount point"},
	} {
		out, err := exec.Command(regfsBin, "mount", "--driver", "inmemory", c.mnt).CombinedOutput()
		var ee *exec.ExitError
		if err == nil || !errorsAs(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("mount %s: err=%v, want exit status 1\n%s", c.mnt, err, out)
			continue
		}
		if !strings.Contains(string(out), c.want) || strings.Contains(string(out), "goroutine ") {
			t.Errorf("mount %s: output %q, want one line saying %q", c.mnt, out, c.want)
		}
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*target = e
	return ok
}
