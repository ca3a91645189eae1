package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/regfs/regfs/internal/testenv"
)

// serviceFixture pushes an image (app:v1) into a new filesystem root
// through a mount, stops the mount and returns the root and the manifest.
func serviceFixture(t *testing.T) (root string, manifest []byte) {
	t.Helper()
	m := startMount(t, "filesystem", mountOpts{})
	manifest = pushImage(t, m, "app", "v1", 1)
	m.stop()
	return m.Root, manifest
}

// mountedPid reads the daemon's pid from its "mounted" log line.
func mountedPid(t *testing.T, logFile string) int {
	t.Helper()
	b, _ := os.ReadFile(logFile)
	m := regexp.MustCompile(`msg=mounted .*pid=(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no mounted line with a pid in the log:\n%s", b)
	}
	pid, _ := strconv.Atoi(string(m[1]))
	return pid
}

// waitExit waits for the process pid to go away; it fails the test after
// 20 seconds and SIGKILLs it.
func waitExit(t *testing.T, pid int, logFile string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
			return // a zombie: it has exited
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			b, _ := os.ReadFile(logFile)
			t.Fatalf("daemon %d still running 20s after the unmount\n%s", pid, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkLog fails on a race report or an error record in a daemon's log.
func checkLog(t *testing.T, logFile string) {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("WARNING: DATA RACE")) || bytes.Contains(b, []byte("level=ERROR")) {
		t.Errorf("daemon log has a race report or an error:\n%s", b)
	}
}

// The fstab path: `mount -t fuse.regfs SOURCE MNT -o OPTIONS` runs
// mount.fuse3, which runs `regfs SOURCE MNT -o OPTIONS` from the default
// PATH (/usr/local/sbin first) and waits; regfs returns once the mount
// answers, and `umount` ends the daemon. It runs in a mount namespace of
// its own, where the binary under test is bound over /usr/local/sbin. On
// the filesystem driver the SOURCE is the root directory, on s3
// s3://BUCKET/PREFIX.
func TestServiceFstab(t *testing.T) {
	if _, err := exec.LookPath("mount.fuse3"); err != nil {
		testenv.SkipOrFail(t, "mount.fuse3 (fuse3) is missing")
	}
	t.Run("filesystem", func(t *testing.T) {
		root, mf := serviceFixture(t)
		out, logFile := fstabMount(t, root, "", nil, fmt.Sprintf(`
# What does not come up fails mount, with regfs's message.
if mount -t fuse.regfs %[1]s/missing "$MNT" 2>&1; then echo "mounted a missing source"; exit 1; fi
if mount -t fuse.regfs %[1]s "$MNT" -o frobnicate 2>&1; then echo "mounted with an unknown option"; exit 1; fi
`, root))
		for _, want := range []string{
			strings.TrimPrefix(sha(mf), "sha256:"),
			"mount source " + root + "/missing: no such file or directory",
			`unknown mount option "frobnicate"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("fstab path: output lacks %q:\n%s", want, out)
			}
		}
		if b, _ := os.ReadFile(logFile); !bytes.Contains(b, []byte("root="+root)) {
			t.Errorf("mounted line without the root:\n%s", b)
		}
	})
	t.Run("s3", func(t *testing.T) {
		m := startMount(t, "s3", mountOpts{Prefix: "reg/istry"})
		mf := pushImage(t, m, "app", "v1", 1)
		m.stop()
		out, logFile := fstabMount(t, "s3://"+m.Bucket+"/reg/istry", fmt.Sprintf(",s3_endpoint=%s,s3_region=%s", m.S3.Endpoint, m.S3.Region), m.S3.Env(), "")
		if !strings.Contains(out, strings.TrimPrefix(sha(mf), "sha256:")) {
			t.Errorf("fstab path on s3: the manifest does not read back:\n%s", out)
		}
		if b, _ := os.ReadFile(logFile); !bytes.Contains(b, []byte("driver=s3 bucket="+m.Bucket+" prefix=reg/istry")) {
			t.Errorf("mounted line without the bucket and prefix:\n%s", b)
		}
	})
}

// fstabMount mounts source with mount -t fuse.regfs, read-only with the
// options of an fstab line and extra, reads app/_manifests/v1 through it,
// checks that writes are refused, unmounts with umount, runs more (a
// script with $MNT set) and returns the output and the daemon's log file,
// once the daemon has exited.
func fstabMount(t *testing.T, source, extra string, env []string, more string) (string, string) {
	t.Helper()
	bin := t.TempDir()
	if out, err := exec.Command("cp", regfsBin, filepath.Join(bin, "regfs")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	mnt := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "regfs.log")
	script := fmt.Sprintf(`
set -e
MNT=%[2]s
trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
mount --bind %[1]s /usr/local/sbin
# As an fstab line would have it.
mount -t fuse.regfs %[3]s "$MNT" -o ro,allow_other,cache_size=64M,noauto,_netdev,nofail,x-systemd.automount,log_file=%[4]s%[5]s
# Usable as soon as mount returns, read-only as asked.
grep " $MNT " /proc/self/mountinfo
cat "$MNT"/app/_manifests/v1 | sha256sum
if touch "$MNT"/app/_manifests/x 2>/dev/null; then echo "write allowed"; exit 1; fi
umount "$MNT"
echo unmounted
%[6]s`, bin, mnt, source, logFile, extra, more)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "bash", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	b, _ := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("fstab path: %v\n%s\nlog:\n%s", err, out, b)
	}
	for _, want := range []string{"fuse.regfs", "ro,", "unmounted"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("fstab path: output lacks %q:\n%s", want, out)
		}
	}
	waitExit(t, mountedPid(t, logFile), logFile)
	if b, _ := os.ReadFile(logFile); !bytes.Contains(b, []byte("unmounted from outside")) {
		t.Errorf("the daemon did not see the umount:\n%s", b)
	}
	checkLog(t, logFile)
	return string(out), logFile
}

// regfs mount --daemon returns once the mount answers, with the mount
// usable at once; a mount that cannot come up makes it exit 1 with the
// error.
func TestServiceDaemon(t *testing.T) {
	root, mf := serviceFixture(t)
	mnt := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "regfs.log")
	t.Cleanup(func() {
		if isMounted(mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
		}
	})
	// Relative paths, from the directory above the mountpoint.
	cmd := exec.Command(regfsBin, "mount", "--daemon", "--log-file", logFile, "--root", root, filepath.Base(mnt))
	cmd.Dir = filepath.Dir(mnt)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b, _ := os.ReadFile(logFile)
		t.Fatalf("regfs mount --daemon: %v\n%s\nlog:\n%s", err, out, b)
	}
	// No wait: the mount is up when the command returns.
	got, err := os.ReadFile(filepath.Join(mnt, "app/_manifests/v1"))
	if err != nil || !bytes.Equal(got, mf) {
		t.Fatalf("reading through the daemon's mount: %v", err)
	}
	pid := mountedPid(t, logFile)
	// The daemon does not hold the directory it was started in.
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != "/" {
		t.Errorf("daemon's working directory %q, %v; want /", cwd, err)
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	waitExit(t, pid, logFile)
	checkLog(t, logFile)

	// A mountpoint that is not empty: the daemon cannot mount, and the
	// command says why.
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(regfsBin, "mount", "--daemon", "--log-file", logFile, "--root", root, full).CombinedOutput()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "is not empty") {
		t.Errorf("daemon on a non-empty mountpoint: %v\n%s", err, out)
	}
}

// Under systemd (Type=notify) readiness goes to NOTIFY_SOCKET: READY=1
// only once the mount answers, STOPPING=1 on SIGTERM, then a clean exit.
func TestServiceNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "regfs-notify-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	m := &mount{t: t, Driver: "inmemory", Dir: t.TempDir(), bin: regfsBin,
		args: []string{"mount", "--driver", "inmemory"}, env: []string{"NOTIFY_SOCKET=" + sock}}
	m.args = append(m.args, m.Dir)
	m.log = &bytes.Buffer{}
	w := lockedWriter{&m.logMu, m.log}
	m.cmd = exec.Command(m.bin, m.args...)
	m.cmd.Env = append(os.Environ(), m.env...)
	m.cmd.Stdout, m.cmd.Stderr = w, w
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.done = make(chan error, 1)
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(m.stop)

	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\n%s", err, m.logText())
		}
		return string(buf[:n])
	}
	msg := read()
	if !strings.Contains(msg, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	// Checked as soon as READY=1 arrives, with no retry.
	if !isMounted(m.Dir) {
		t.Fatal("READY=1 before the mount is in the mount table")
	}
	if _, err := os.ReadFile(filepath.Join(m.Dir, ".regfs/stats")); err != nil {
		t.Fatalf("READY=1 before the mount answers: %v", err)
	}
	// regfs version asks the mount which FUSE protocol it negotiated.
	out, err := exec.Command(regfsBin, "version", m.Dir).CombinedOutput()
	if err != nil || !regexp.MustCompile(`mount \S+: regfs dev, go go1\.\S+, FUSE protocol 7\.\d+`).Match(out) {
		t.Errorf("regfs version MOUNTPOINT: %v\n%s", err, out)
	}
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := read(); !strings.Contains(msg, "STOPPING=1") {
		t.Errorf("notification on SIGTERM %q, want STOPPING=1", msg)
	}
	select {
	case err := <-m.done:
		m.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, m.logText())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit 20s after SIGTERM\n%s", m.logText())
	}
	if isMounted(m.Dir) {
		t.Error("still mounted after SIGTERM")
	}
	if strings.Contains(m.logText(), "DATA RACE") {
		t.Errorf("race report:\n%s", m.logText())
	}
}

// asUser runs a shell script as uid and gid 65534 with the supplementary
// groups given (none when empty) and returns its combined output and error.
func asUser(t *testing.T, groups, script string) (string, error) {
	t.Helper()
	args := []string{"--reuid=" + nobody, "--regid=" + nobody}
	if groups == "" {
		args = append(args, "--clear-groups")
	} else {
		args = append(args, "--groups="+groups)
	}
	cmd := exec.Command("setpriv", append(args, "sh", "-c", script)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// --uid, --gid and --umask: a root mount with --allow-other serves a group
// of operators, the modes showing a write bit only where the kernel
// (default_permissions) lets a write through and regfs then does it.
func TestServiceOwnership(t *testing.T) {
	const ops = "4242"
	root, mf := serviceFixture(t)
	mfd := sha(mf)
	statAs := func(m *mount, rel string) string {
		t.Helper()
		out, err := asUser(t, ops, fmt.Sprintf("stat -c '%%A %%u:%%g' %q", m.path(rel)))
		if err != nil {
			t.Fatalf("stat %s as a group member: %v\n%s", rel, err, out)
		}
		return strings.TrimSpace(out)
	}
	t.Run("group reads", func(t *testing.T) {
		m, _ := ownershipMount(t, root, "--allow-other", "--gid", ops, "--umask", "027")
		for rel, want := range map[string]string{
			"":                      "drwxr-x--- 0:" + ops,
			"app/_manifests":        "drwxr-x--- 0:" + ops,
			"app/_manifests/v1":     "-rw-r----- 0:" + ops,
			"app/_manifests/" + mfd: "-r--r----- 0:" + ops,
			".regfs":                "dr-xr-x--- 0:" + ops,
		} {
			if got := statAs(m, rel); got != want {
				t.Errorf("%s: %s, want %s", rel, got, want)
			}
		}
		out, err := asUser(t, ops, fmt.Sprintf("cat %q | sha256sum", m.path("app/_manifests/v1")))
		if err != nil || !strings.Contains(out, strings.TrimPrefix(mfd, "sha256:")) {
			t.Errorf("a group member reads a manifest: %v\n%s", err, out)
		}
		// No group write bit: the kernel refuses, storage is unchanged.
		out, err = asUser(t, ops, fmt.Sprintf("mkdir %q", m.path("newrepo")))
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("mkdir by a group member without w: %v\n%s", err, out)
		}
		// Not in the group: nothing.
		out, err = asUser(t, "", fmt.Sprintf("ls %q", m.Dir))
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("ls by another user: %v\n%s", err, out)
		}
	})
	t.Run("group writes", func(t *testing.T) {
		m, _ := ownershipMount(t, root, "--allow-other", "--gid", ops, "--umask", "007")
		if got, want := statAs(m, "app/_uploads"), "drwxrwx--- 0:"+ops; got != want {
			t.Errorf("_uploads: %s, want %s", got, want)
		}
		if got, want := statAs(m, "app/_manifests/"+mfd), "-r--r----- 0:"+ops; got != want {
			t.Errorf("a revision: %s, want %s", got, want)
		}
		content := []byte("a layer pushed by an operator\n")
		src := filepath.Join(t.TempDir(), "layer")
		if err := os.WriteFile(src, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Dir(src), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := asUser(t, ops, fmt.Sprintf("cp %q %q", src, m.path("app/_uploads", sha(content))))
		if err != nil {
			t.Fatalf("push by a group member with w: %v\n%s", err, out)
		}
		if got := readFile(t, m.path("app/_layers", sha(content))); !bytes.Equal(got, content) {
			t.Errorf("pushed layer reads back %q", got)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		m, _ := ownershipMount(t, root, "--allow-other", "--read-only", "--uid", nobody, "--gid", ops, "--umask", "002")
		for rel, want := range map[string]string{
			"":                  "dr-xr-xr-x " + nobody + ":" + ops,
			"app/_uploads":      "dr-xr-xr-x " + nobody + ":" + ops,
			"app/_manifests/v1": "-r--r--r-- " + nobody + ":" + ops,
		} {
			if got := statAs(m, rel); got != want {
				t.Errorf("%s: %s, want %s", rel, got, want)
			}
		}
		// The owner cannot write either.
		out, err := asUser(t, "", fmt.Sprintf("mkdir %q", m.path("x")))
		if err == nil {
			t.Errorf("mkdir by the owner of a read-only mount succeeded\n%s", out)
		}
	})
}

// ownershipMount mounts root as root with flags and lets everyone reach
// the mountpoint's parent.
func ownershipMount(t *testing.T, root string, extra ...string) (*mount, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "the ownership tests mount as root and act as another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		testenv.SkipOrFail(t, "setpriv is missing")
	}
	m := startMount(t, "filesystem", mountOpts{Root: root, Extra: extra})
	if err := os.Chmod(filepath.Dir(m.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	return m, m.Dir
}

// --metrics-addr serves Prometheus text at /metrics, read while the mount
// is in use and parsed with Prometheus's own parser; its counters are
// those of .regfs/stats.
func TestServiceMetrics(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "regfs.log")
	m := startMount(t, "filesystem", mountOpts{Extra: []string{"--metrics-addr", "127.0.0.1:0", "--log-file", logFile}})
	mf := pushImage(t, m, "app", "v1", 1)
	if got := readFile(t, m.path("app/_manifests/v1")); !bytes.Equal(got, mf) {
		t.Fatal("manifest reads back wrong")
	}
	_, _ = os.Stat(m.path("app/_manifests/nope"))

	log, _ := os.ReadFile(logFile)
	addr := regexp.MustCompile(`msg="serving metrics" addr=(http://\S+/metrics)`).FindSubmatch(log)
	if addr == nil {
		t.Fatalf("no metrics address in the log:\n%s", log)
	}
	resp, err := http.Get(string(addr[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	var stats struct {
		UploadsCommitted int64            `json:"uploads_committed"`
		ManifestsStored  int64            `json:"manifests_stored"`
		ErrorsByErrno    map[string]int64 `json:"errors_by_errno"`
	}
	if err := json.Unmarshal(readFile(t, m.path(".regfs/stats")), &stats); err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Errorf("no %s in /metrics", name)
			return -1
		}
	next:
		for _, mt := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range mt.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				return float64(mt.GetHistogram().GetSampleCount())
			case dto.MetricType_COUNTER:
				return mt.GetCounter().GetValue()
			default:
				return mt.GetGauge().GetValue()
			}
		}
		t.Errorf("no %s%v in /metrics", name, labels)
		return -1
	}
	// Nothing was written between the scrape and the stats read.
	if got := value("regfs_uploads_committed_total", nil); got != float64(stats.UploadsCommitted) || got < 2 {
		t.Errorf("regfs_uploads_committed_total %v, stats %d", got, stats.UploadsCommitted)
	}
	if got := value("regfs_manifests_stored_total", nil); got != float64(stats.ManifestsStored) || got != 1 {
		t.Errorf("regfs_manifests_stored_total %v, stats %d", got, stats.ManifestsStored)
	}
	if got := value("regfs_errors_total", map[string]string{"errno": "ENOENT"}); got < 1 || got != float64(stats.ErrorsByErrno["ENOENT"]) {
		t.Errorf("regfs_errors_total{errno=ENOENT} %v, stats %v", got, stats.ErrorsByErrno)
	}
	for _, op := range []string{"Lookup", "Read", "Write", "Create"} {
		if got := value("regfs_fuse_request_duration_seconds", map[string]string{"op": op}); got < 1 {
			t.Errorf("%s requests: %v", op, got)
		}
	}
	if got := value("regfs_fuse_bytes_total", map[string]string{"op": "write"}); got < float64(len(mf)) {
		t.Errorf("bytes written: %v", got)
	}
	if got := value("regfs_driver_calls_total", map[string]string{"driver": "filesystem", "method": "Writer"}); got < 1 {
		t.Errorf("driver Writer calls: %v", got)
	}
	// Driver calls are timed by driver and method: a sample per call ended.
	for _, method := range []string{"Writer", "Stat", "GetContent"} {
		labels := map[string]string{"driver": "filesystem", "method": method}
		if calls, got := value("regfs_driver_calls_total", labels), value("regfs_driver_call_duration_seconds", labels); got < 1 || got > calls {
			t.Errorf("driver %s calls: %v, %v timed", method, calls, got)
		}
	}
	for _, name := range []string{"regfs_cache_misses_total", "regfs_cache_hits_total", "regfs_cache_evictions_total",
		"regfs_cache_bytes", "regfs_uploads_in_flight", "regfs_uploads_rejected_total", "regfs_manifests_rejected_total",
		"regfs_cache_loads_total", "regfs_cache_read_aheads_total", "regfs_cache_budget_bytes",
		"regfs_fuse_request_errors_total", "regfs_manifest_buffers", "regfs_manifest_buffer_bytes",
		"regfs_manifest_opens_refused_total", "regfs_bad_links_total", "regfs_start_time_seconds",
		"go_goroutines", "process_resident_memory_bytes"} {
		if families[name] == nil {
			t.Errorf("no %s in /metrics", name)
		}
	}
	if got := value("regfs_info", map[string]string{"driver": "filesystem"}); got != 1 {
		t.Errorf("regfs_info: %v", got)
	}
}

// Without --metrics-addr nothing listens.
func TestServiceMetricsOff(t *testing.T) {
	m := startMount(t, "inmemory", mountOpts{})
	pid := m.cmd.Process.Pid
	defer func() {
		m.stop()
		if strings.Contains(m.logText(), "serving metrics") {
			t.Errorf("metrics served without --metrics-addr:\n%s", m.logText())
		}
	}()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	// The daemon's sockets: none of them a TCP listener.
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		inode, ok := strings.CutPrefix(target, "socket:[")
		if !ok {
			continue
		}
		inode = strings.TrimSuffix(inode, "]")
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && f[9] == inode && f[3] == "0A" {
				t.Errorf("the daemon listens on TCP: %s", line)
			}
		}
	}
}
