package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Daemon mode. `regfs mount --daemon` (and the mount helper form, which
// mount.fuse3 waits on) starts itself again as a child in a new session,
// with a pipe on descriptor 3, and waits: the child writes "ok" once the
// mount answers, or the error that stopped it, and the parent exits 0 or 1
// accordingly. The child's standard streams are /dev/null; its log goes to
// --log-file, or syslog.

// daemonEnv tells the child which descriptor reports readiness. It is
// removed from the child's environment once read.
const daemonEnv = "REGFS_DAEMON_READY_FD"

// daemonReady is what the child writes when the mount is up.
const daemonReady = "ok"

// startDaemon runs args again as a daemon and waits for its report. It
// returns nil once the mount is up.
func startDaemon(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon: cannot find regfs's own binary: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return err
	}
	defer null.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), daemonEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The working directory stays: relative paths were made absolute, and
	// a relative --log-file is the caller's.
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("daemon: %v", err)
	}
	// The child is not waited for: it outlives this process.
	report, _ := io.ReadAll(bufio.NewReader(r))
	msg := strings.TrimSpace(string(report))
	if msg == daemonReady {
		_ = cmd.Process.Release()
		return nil
	}
	state, _ := cmd.Process.Wait()
	if msg == "" {
		return fmt.Errorf("the daemon exited (%v) before the mount came up; see its log", state)
	}
	return errors.New(msg)
}

// daemonReport is the child's end of the pipe, nil outside a daemon.
type daemonReport struct{ f *os.File }

// newDaemonReport wraps f, which may be nil.
func newDaemonReport(f *os.File) *daemonReport { return &daemonReport{f} }

// daemonChild returns the report pipe when this process is a daemon's
// child, and takes its variable out of the environment.
func daemonChild() *daemonReport {
	v, ok := os.LookupEnv(daemonEnv)
	if !ok {
		return newDaemonReport(nil)
	}
	os.Unsetenv(daemonEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return newDaemonReport(nil)
	}
	return newDaemonReport(os.NewFile(uintptr(fd), "daemon-report"))
}

// ready tells the waiting parent the mount is up.
func (d *daemonReport) ready() { d.send(daemonReady) }

// failed tells the waiting parent why the mount did not come up.
func (d *daemonReport) failed(err error) { d.send("regfs: " + err.Error()) }

func (d *daemonReport) send(msg string) {
	if d.f == nil {
		return
	}
	fmt.Fprintln(d.f, msg)
	d.f.Close()
	d.f = nil
}

// openLog opens where the log goes: the --log-file, syslog, or stderr. The
// returned close function flushes and closes it.
func openLog(s Service, stderr io.Writer) (io.Writer, func(), error) {
	switch {
	case s.LogFile == "syslog" || (s.LogFile == "" && s.Daemon):
		w, err := syslog.New(syslog.LOG_INFO|syslog.LOG_DAEMON, "regfs")
		if err != nil {
			if s.LogFile == "" {
				return nil, nil, fmt.Errorf("--daemon logs to syslog, which is not reachable (%v): give --log-file FILE", err)
			}
			return nil, nil, fmt.Errorf("--log-file syslog: %v", err)
		}
		return w, func() { w.Close() }, nil
	case s.LogFile != "":
		f, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("--log-file: %v", err)
		}
		return f, func() { f.Close() }, nil
	}
	return stderr, func() {}, nil
}

// newLogger makes the daemon's logger on w.
func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
