package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	regfsfs "github.com/regfs/regfs/fs"
)

// Timing of mounts.
const (
	// mountTimeout bounds the wait for a new mount to appear.
	mountTimeout = 20 * time.Second
	// mountPoll is how often /proc/self/mountinfo is read meanwhile.
	mountPoll = 2 * time.Millisecond
	// stopTimeout is how long a server may take to unmount and exit after
	// SIGTERM before it is unmounted lazily and killed.
	stopTimeout = 15 * time.Second
)

// errStopped is returned for a mount asked for after the benchmark was
// told to stop.
var errStopped = errors.New("stopped: no new mounts")

// mountSet tracks the file system servers the benchmark runs, so that
// every one is unmounted and ended whatever happens.
type mountSet struct {
	logDir string

	mu sync.Mutex
	// closed refuses new mounts once closeAll ran; guarded by mu.
	closed bool
	// live are the servers started and not yet stopped; guarded by mu.
	live map[*mount]bool
	// seq numbers the log files; guarded by mu.
	seq int
}

func newMountSet(logDir string) *mountSet {
	return &mountSet{logDir: logDir, live: map[*mount]bool{}}
}

// mount is one running file system server and its mountpoint.
type mount struct {
	set  *mountSet
	dir  string
	name string
	cmd  *exec.Cmd
	// exited is closed when the process ended; waitErr is then its status.
	exited  chan struct{}
	waitErr error
	logPath string
	// bdi is the mount's backing device info name (major:minor).
	bdi string

	stopOnce sync.Once
	stopErr  error
}

// start runs argv (a FUSE server that mounts dir and serves it in the
// foreground until SIGTERM), and returns once dir is mounted and, when
// readyLine is not empty, the server's output has a line containing it: a
// server may tune its mount after mounting (regfs sets the kernel's
// read-ahead, which a file opened earlier would not get).
func (s *mountSet) start(name, dir string, argv, env []string, readyLine string) (*mount, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStopped
	}
	s.seq++
	logPath := filepath.Join(s.logDir, fmt.Sprintf("%03d-%s.log", s.seq, name))
	s.mu.Unlock()

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	// Should this program die without cleaning up, the server still
	// unmounts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	m := &mount{set: s, dir: dir, name: name, cmd: cmd, exited: make(chan struct{}), logPath: logPath}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStopped
	}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s.live[m] = true
	s.mu.Unlock()
	go func() {
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()

	deadline := time.Now().Add(mountTimeout)
	for {
		if bdi, ok, err := mountedAt(dir); err != nil {
			m.stop()
			return nil, err
		} else if ok && (readyLine == "" || m.logHas(readyLine)) {
			m.bdi = bdi
			return m, nil
		}
		select {
		case <-m.exited:
			m.stop()
			return nil, fmt.Errorf("%s exited before mounting %s (%v): %s", name, dir, m.waitErr, m.logTail())
		case <-time.After(mountPoll):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("%s did not mount %s within %v: %s", name, dir, mountTimeout, m.logTail())
		}
	}
}

// pid is the server's process ID.
func (m *mount) pid() int { return m.cmd.Process.Pid }

// logHas reports whether the server's output so far contains s.
func (m *mount) logHas(s string) bool {
	b, err := os.ReadFile(m.logPath)
	return err == nil && strings.Contains(string(b), s)
}

// logTail is the end of the server's log, for error messages.
func (m *mount) logTail() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return "(no log)"
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// readAheadKB is the kernel read-ahead of the mount's bdi, or -1 when it
// cannot be read.
func (m *mount) readAheadKB() int {
	b, err := os.ReadFile(filepath.Join("/sys/class/bdi", m.bdi, "read_ahead_kb"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// stop asks the server to unmount and exit (SIGTERM); one that does not
// within stopTimeout is unmounted lazily and killed. It is safe to call
// more than once and concurrently.
func (m *mount) stop() error {
	m.stopOnce.Do(func() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(stopTimeout):
			lazyUnmount(m.dir)
			_ = m.cmd.Process.Kill()
			<-m.exited
		}
		// A server that died leaves its mount behind ("transport endpoint
		// is not connected"): take it away.
		if _, ok, _ := mountedAt(m.dir); ok {
			lazyUnmount(m.dir)
		}
		if _, ok, err := mountedAt(m.dir); ok || err != nil {
			m.stopErr = fmt.Errorf("%s still mounted at %s after stopping it", m.name, m.dir)
		}
		m.set.mu.Lock()
		delete(m.set.live, m)
		m.set.mu.Unlock()
	})
	return m.stopErr
}

// closeAll stops every live server and refuses new ones. It is what the
// signal handler and the final defer call.
func (s *mountSet) closeAll() error {
	s.mu.Lock()
	s.closed = true
	live := make([]*mount, 0, len(s.live))
	for m := range s.live {
		live = append(live, m)
	}
	s.mu.Unlock()
	var errs []error
	for _, m := range live {
		errs = append(errs, m.stop())
	}
	return errors.Join(errs...)
}

func lazyUnmount(dir string) {
	for _, prog := range []string{"fusermount3", "fusermount"} {
		if exec.Command(prog, "-u", "-z", dir).Run() == nil {
			return
		}
	}
	_ = syscall.Unmount(dir, syscall.MNT_DETACH)
}

// mountedAt reports whether dir is a mount point, and its device
// (major:minor), which names its bdi in /sys/class/bdi.
func mountedAt(dir string) (bdi string, ok bool, err error) {
	m, ok, err := regfsfs.MountAt(dir)
	return m.Dev, ok, err
}

// mountsBelow lists the mount points at or below dir.
func mountsBelow(dir string) ([]string, error) {
	mounts, err := regfsfs.Mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mi := range mounts {
		if mi.Point == dir || strings.HasPrefix(mi.Point, dir+"/") {
			out = append(out, mi.Point)
		}
	}
	return out, nil
}

// peakRSS is the process's resident set high-water mark (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM of %d: %v", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
