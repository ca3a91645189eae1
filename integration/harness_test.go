// Package integration drives the real regfs binary with real tools (cp, cat,
// dd, ln, rm, mkdir, rmdir, stat, find, sha256sum) and real peers.
//
// Every test mounts in a fresh temporary directory and unmounts in
// t.Cleanup, falling back to a lazy unmount and SIGKILL, so no test leaves a
// mount or a process behind.
package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/driver/s3/s3test"
	regfsfs "github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/testenv"
)

// regfsBin is the binary under test, built once by TestMain.
var regfsBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintln(os.Stderr, "integration: /dev/fuse is missing: FUSE integration tests are skipped")
		if testenv.InCI() {
			fmt.Fprintln(os.Stderr, "integration: CI must run them: failing")
			return 1
		}
		return 0
	}
	dir, err := os.MkdirTemp("", "regfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	defer stopS3()
	regfsBin = filepath.Join(dir, "regfs")
	build := exec.Command("go", "build", "-race", "-o", regfsBin, "../cmd/regfs")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building regfs:", err)
		return 1
	}
	return m.Run()
}

// drivers lists the drivers every scenario runs on.
var drivers = []string{"filesystem", "inmemory", "s3"}

// s3Shared is the versitygw that every mount on the s3 driver uses, each
// in a bucket of its own: started by the first such mount, stopped by
// TestMain after the tests (starting one per mount would cost a second each).
var s3Shared struct {
	once sync.Once
	srv  *s3test.Server
	err  error
}

// sharedS3 returns the shared server, starting it on first use. A missing
// versitygw fails t under CI and skips it elsewhere.
func sharedS3(t testing.TB) *s3test.Server {
	t.Helper()
	s3Shared.once.Do(func() { s3Shared.srv, s3Shared.err = s3test.Launch() })
	if errors.Is(s3Shared.err, s3test.ErrNotInstalled) {
		s3test.SkipOrFail(t, s3Shared.err)
	}
	if s3Shared.err != nil {
		t.Fatalf("starting versitygw: %v", s3Shared.err)
	}
	return s3Shared.srv
}

// stopS3 stops the shared server if a test started it.
func stopS3() {
	if s3Shared.srv != nil {
		if err := s3Shared.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "integration: stopping versitygw:", err)
		}
	}
}

// mount is one running regfs daemon.
type mount struct {
	t      testing.TB
	Dir    string // the mountpoint
	Root   string // the filesystem driver's root ("" for the other drivers)
	Driver string
	// S3 is the server of an s3 mount, Bucket and Prefix where in it the
	// registry is (nil and "" for the other drivers).
	S3             *s3test.Server
	Bucket, Prefix string
	bin            string
	args           []string
	env            []string
	cmd            *exec.Cmd
	// log is this run's output (a restart starts a new one). The daemon
	// writes it while it runs: read it then with logText.
	log   *bytes.Buffer
	logMu sync.Mutex // guards log while the daemon writes it
	done  chan error
}

// logText returns the daemon's output so far.
func (m *mount) logText() string {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	return m.log.String()
}

// lockedWriter appends to a buffer under a mutex.
type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// mountOpts tunes startMount.
type mountOpts struct {
	Root string // reuse this storage root (filesystem driver)
	// Bin is the regfs binary to run; empty: the race-enabled one TestMain
	// built.
	Bin string
	// Bucket reuses this bucket of the shared server (s3 driver); empty:
	// a new bucket, removed when the test ends. Prefix is the key prefix.
	Bucket, Prefix string
	Extra          []string
}

// startMount runs `regfs mount` on a new mountpoint and waits until the
// kernel has it. Cleanup stops the daemon and unmounts.
func startMount(t testing.TB, driver string, o mountOpts) *mount {
	t.Helper()
	m := &mount{t: t, Driver: driver, Dir: t.TempDir(), bin: o.Bin}
	if m.bin == "" {
		m.bin = regfsBin
	}
	args := []string{"mount", "--driver", driver}
	if driver == "filesystem" {
		m.Root = o.Root
		if m.Root == "" {
			m.Root = t.TempDir()
		}
		args = append(args, "--root", m.Root)
	}
	if driver == "s3" {
		m.S3 = sharedS3(t)
		m.Bucket, m.Prefix = o.Bucket, o.Prefix
		if m.Bucket == "" {
			m.Bucket = m.S3.NewBucket(t)
		}
		args = append(args, "--s3-bucket", m.Bucket, "--s3-endpoint", m.S3.Endpoint, "--s3-region", m.S3.Region)
		if m.Prefix != "" {
			args = append(args, "--s3-prefix", m.Prefix)
		}
		m.env = m.S3.Env()
	}
	args = append(args, o.Extra...)
	args = append(args, m.Dir)
	m.args = args
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mount) start() {
	t := m.t
	t.Helper()
	m.logMu.Lock()
	m.log = &bytes.Buffer{}
	m.logMu.Unlock()
	w := lockedWriter{&m.logMu, m.log}
	m.cmd = exec.Command(m.bin, m.args...)
	m.cmd.Env = append(os.Environ(), m.env...)
	m.cmd.Stdout = w
	m.cmd.Stderr = w
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting regfs: %v", err)
	}
	m.done = make(chan error, 1)
	go func() { m.done <- m.cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(m.Dir) {
		select {
		case err := <-m.done:
			m.done <- err
			t.Fatalf("regfs exited before mounting: %v\n%s", err, m.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("regfs did not mount %s within 20s\n%s", m.Dir, m.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM, waits for a clean exit and falls back to a lazy
// unmount and SIGKILL. The test fails if the daemon exited with an error
// (before or after the SIGTERM) or its log reports a data race or a panic.
func (m *mount) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	var err error
	select {
	case err = <-m.done:
		m.done <- err
	default:
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-m.done:
		case <-time.After(10 * time.Second):
			m.t.Errorf("regfs did not exit within 10s of SIGTERM\n%s", m.logText())
			m.killHard()
			err = nil // reported above
		}
	}
	if err != nil {
		m.t.Errorf("regfs %s exited with %v\n%s", m.Dir, err, m.log)
	}
	m.checkLog()
	if isMounted(m.Dir) {
		_ = exec.Command("fusermount3", "-u", "-z", m.Dir).Run()
	}
	m.cmd = nil
}

// kill SIGKILLs the daemon and cleans up the dead mount, as an operator
// would. The test fails if the daemon had already exited on its own or its
// log reports a data race or a panic: only the SIGKILL sent here is
// expected.
func (m *mount) kill() {
	m.t.Helper()
	err := m.killHard()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !killedBy(ee, syscall.SIGKILL) {
		m.t.Errorf("regfs %s ended with %v before the test's SIGKILL\n%s", m.Dir, err, m.log)
	}
	m.checkLog()
	m.cmd = nil
	if out, err := exec.Command("fusermount3", "-u", "-z", m.Dir).CombinedOutput(); err != nil && isMounted(m.Dir) {
		m.t.Fatalf("unmounting dead mount: %v: %s", err, out)
	}
}

// killHard SIGKILLs the daemon and returns how it ended. A daemon with a
// thread stuck in the kernel on its own mount (a deadlock: SIGKILL cannot
// end it until the FUSE connection goes) fails the test, with the stuck
// threads' kernel stacks and a goroutine dump in the log; the connection is
// then aborted so that the test goes on instead of hanging.
func (m *mount) killHard() error {
	m.t.Helper()
	if stacks := stuckThreads(m.cmd.Process.Pid); stacks != "" {
		_ = m.cmd.Process.Signal(syscall.SIGQUIT) // the Go runtime dumps every goroutine
		time.Sleep(2 * time.Second)
		m.t.Errorf("regfs %s has threads stuck in the kernel for over a second (a deadlock on its own mount):\n%s\ndaemon log and goroutines:\n%s", m.Dir, stacks, m.logText())
	}
	_ = m.cmd.Process.Kill()
	select {
	case err := <-m.done:
		return err
	case <-time.After(10 * time.Second):
	}
	m.t.Errorf("regfs %s did not die within 10s of SIGKILL: stuck in the kernel:\n%s", m.Dir, stuckThreads(m.cmd.Process.Pid))
	abortFUSE(m.t, m.Dir)
	return <-m.done
}

// stuckThreads returns the kernel stacks of pid's threads that are in
// uninterruptible sleep in FUSE code now and still a second later, or ""
// if none is (a thread briefly in D state for disk I/O is not stuck).
func stuckThreads(pid int) string {
	dState := func() []string {
		var out []string
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		for _, task := range tasks {
			stat, err := os.ReadFile(filepath.Join(task, "stat"))
			if err != nil {
				continue
			}
			// The state follows the parenthesised command name.
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'D' {
				out = append(out, task)
			}
		}
		return out
	}
	first := dState()
	if len(first) == 0 {
		return ""
	}
	time.Sleep(time.Second)
	var b strings.Builder
	for _, task := range dState() {
		stack, _ := os.ReadFile(filepath.Join(task, "stack"))
		if slices.Contains(first, task) && bytes.Contains(stack, []byte("fuse")) {
			fmt.Fprintf(&b, "%s:\n%s", task, stack)
		}
	}
	return b.String()
}

// abortFUSE aborts the FUSE connection of the mount at dir through the
// fusectl file system (mounting it if needed), which ends every request
// waiting on it, and unmounts dir lazily.
func abortFUSE(t testing.TB, dir string) {
	t.Helper()
	mnt, ok, err := regfsfs.MountAt(dir)
	if err != nil || !ok {
		t.Logf("aborting the FUSE connection of %s: not mounted (%v)", dir, err)
		return
	}
	const ctl = "/sys/fs/fuse/connections"
	// A FUSE connection is named by its device number, which for these
	// anonymous devices (major 0) is the minor.
	minor := mnt.Dev[strings.LastIndexByte(mnt.Dev, ':')+1:]
	if _, err := os.Stat(filepath.Join(ctl, minor)); err != nil {
		if exec.Command("mount", "-t", "fusectl", "none", ctl).Run() == nil {
			defer func() { _ = exec.Command("umount", ctl).Run() }()
		}
	}
	if err := os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0o200); err != nil {
		t.Logf("aborting the FUSE connection of %s (%s): %v", dir, mnt.Dev, err)
	}
	_ = exec.Command("fusermount3", "-u", "-z", dir).Run()
}

// killedBy tells whether the process ended by signal sig.
func killedBy(ee *exec.ExitError, sig syscall.Signal) bool {
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// daemonFailures are what a daemon's log must never hold: the race
// detector's report (the binary is built with -race; it exits 66 at the
// end, but a SIGKILL comes first), a panic, or a fatal runtime error.
var daemonFailures = []string{"WARNING: DATA RACE", "panic:", "fatal error:"}

// checkLog fails the test if the log of the daemon's run that just ended
// reports a race, a panic or a fatal error. Call it once the process is
// gone, so that the log is complete.
func (m *mount) checkLog() {
	m.t.Helper()
	log := m.logText()
	for _, f := range daemonFailures {
		if strings.Contains(log, f) {
			m.t.Errorf("regfs %s: its log reports %q:\n%s", m.Dir, f, log)
			return
		}
	}
}

// restart mounts the same storage again after stop or kill.
func (m *mount) restart() {
	m.t.Helper()
	if m.cmd != nil {
		m.stop()
	}
	m.start()
}

// path joins elements under the mountpoint.
func (m *mount) path(elem ...string) string {
	return filepath.Join(append([]string{m.Dir}, elem...)...)
}

// isMounted tells whether dir is a mount point, from /proc/self/mountinfo.
func isMounted(dir string) bool {
	_, ok, _ := regfsfs.MountAt(dir)
	return ok
}

// sh runs a shell command line with a timeout and returns its combined
// output; the test fails when it fails.
func sh(t *testing.T, script string) string {
	t.Helper()
	out, err := shErr(t, script)
	if err != nil {
		t.Fatalf("sh %q: %v\n%s", script, err, out)
	}
	return out
}

// shErr runs a shell command line with a timeout and returns its output and
// error, for commands expected to fail.
func shErr(t *testing.T, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -o pipefail; "+script)
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("sh %q timed out\n%s", script, out)
	}
	return string(out), err
}

// sha returns "sha256:<hex>" of b.
func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// writeFile writes a temp file with content and returns its path.
func writeFile(t *testing.T, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
