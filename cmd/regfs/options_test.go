package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The mount helper form, as mount.fuse3 runs it for an fstab line: the
// source names the storage, -o sets flags by their option spelling, and
// the standard options are accepted.
func TestMountOptions(t *testing.T) {
	opts := "ro,allow_other,cache_size=2G,noauto,_netdev,x-systemd.automount,nofail,user,users,nodev,nosuid,noexec,relatime,defaults,default_permissions,comment=x,uid=5,gid=6,umask=027,metrics_addr=127.0.0.1:9,log_file=/var/log/regfs.log,debug"
	t.Setenv("XDG_CACHE_HOME", "/xdgcache")
	cfg, err := parseMount([]string{"--daemon", "/var/lib/docker-registry", "/srv/registry", "-o", opts}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Mountpoint: "/srv/registry",
		Storage:    Storage{Driver: driverFilesystem, Root: "/var/lib/docker-registry"},
		ReadOnly:   true, AllowOther: true, CacheSize: 2 << 30, Debug: true, GCGrace: time.Hour,
		DirCacheTime: time.Minute, AttrTimeout: time.Second, IndexDir: "/xdgcache/regfs/index", IndexMax: 1 << 30,
		Service: Service{Source: "/var/lib/docker-registry", Daemon: true, LogFile: "/var/log/regfs.log",
			UID: 5, GID: 6, Umask: 0o027, MetricsAddr: "127.0.0.1:9"},
	}
	if cfg != want {
		t.Errorf("fstab options:\n got %+v\nwant %+v", cfg, want)
	}

	for _, c := range []struct {
		args []string
		want Storage
	}{
		{[]string{"s3://reg/a/b/", "/m", "-o", "s3_endpoint=http://127.0.0.1:7070,s3_region=us-east-1"},
			Storage{Driver: driverS3, S3Bucket: "reg", S3Prefix: "a/b", S3Endpoint: "http://127.0.0.1:7070", S3Region: "us-east-1"}},
		{[]string{"s3://reg", "/m"}, Storage{Driver: driverS3, S3Bucket: "reg"}},
		{[]string{"inmemory", "/m"}, Storage{Driver: driverInmemory}},
		{[]string{"memory", "/m"}, Storage{Driver: driverInmemory}},
		{[]string{"./memory", "/m"}, Storage{Driver: driverFilesystem, Root: "./memory"}},
		// -o on the one-argument form, and rw after ro.
		{[]string{"-o", "driver=inmemory,ro,rw", "/m"}, Storage{Driver: driverInmemory}},
	} {
		cfg, err := parseMount(c.args, io.Discard, io.Discard)
		if err != nil || cfg.Storage != c.want || cfg.ReadOnly {
			t.Errorf("%q: %+v read-only %v, %v; want %+v", c.args, cfg.Storage, cfg.ReadOnly, err, c.want)
		}
	}
	// Owners by name.
	cfg, err = parseMount([]string{"--uid", "root", "-o", "gid=root", "inmemory", "/m"}, io.Discard, io.Discard)
	if err != nil || cfg.UID != 0 || cfg.GID != 0 {
		t.Errorf("uid and gid by name: %d:%d, %v", cfg.UID, cfg.GID, err)
	}
	cfg, err = parseMount([]string{"--daemon", "inmemory", "/m", "-o", "daemon=false"}, io.Discard, io.Discard)
	if err != nil || cfg.Daemon {
		t.Errorf("-o daemon=false: daemon %v, %v", cfg.Daemon, err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"inmemory", "/m", "-o", "ro,frobnicate"}, `unknown mount option "frobnicate"`},
		{[]string{"inmemory", "/m", "-o", "cache-size=1G"}, `unknown mount option "cache-size"`},
		{[]string{"inmemory", "/m", "-o", "o=ro"}, `unknown mount option "o"`},
		{[]string{"inmemory", "/m", "-o", "cache_size"}, "needs a value: cache_size=SIZE"},
		{[]string{"inmemory", "/m", "-o", "cache_size=lots"}, "cache_size=lots"},
		{[]string{"inmemory", "/m", "-o", "ro=1"}, `"ro" takes no value`},
		{[]string{"inmemory", "/m", "-o", "umask=8"}, "invalid umask"},
		{[]string{"inmemory", "/m", "-o", "uid=-1"}, "invalid id"},
		{[]string{"inmemory", "/m", "-o", "gid=no-such-group-here"}, `unknown group "no-such-group-here"`},
		{[]string{"--root", "/x", "/y", "/m"}, "--root (root) and a SOURCE"},
		{[]string{"/y", "/m", "-o", "driver=s3"}, "--driver (driver) and a SOURCE"},
		{[]string{"ftp://h/x", "/m"}, "unknown scheme"},
		{[]string{"s3:///p", "/m"}, "names no bucket"},
	} {
		_, err := parseMount(c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}

// Every regfs mount flag has an option spelling.
func TestEveryFlagIsAnOption(t *testing.T) {
	fs := newMountFlags(&Config{})
	fs.VisitAll(func(f *flag.Flag) {
		if notOptions[f.Name] {
			return
		}
		opt := strings.ReplaceAll(f.Name, "-", "_") + "=" + f.DefValue
		if err := applyOption(fs, opt); err != nil && strings.Contains(err.Error(), "unknown") {
			t.Errorf("--%s has no option spelling: %v", f.Name, err)
		}
	})
}

// The helper form is told from a mistyped command.
func TestIsHelperForm(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"/var/lib/r", "/mnt", "-o", "ro"}, true},
		{[]string{"s3://b/p", "/mnt"}, true},
		{[]string{"mout"}, false},
		{[]string{"/r", "--debug"}, false},
	} {
		if got := isHelperForm(c.args); got != c.want {
			t.Errorf("isHelperForm(%q) = %v", c.args, got)
		}
	}
}

// A daemon logs to syslog when no --log-file is given, and refuses to
// start when syslog is not reachable rather than log nowhere.
func TestDaemonLog(t *testing.T) {
	_, closeLog, err := openLog(Service{Daemon: true}, io.Discard)
	if _, statErr := os.Stat("/dev/log"); statErr != nil {
		if err == nil || !strings.Contains(err.Error(), "give --log-file FILE") {
			t.Errorf("no syslog: %v, want a refusal naming --log-file", err)
		}
	} else if err != nil {
		t.Errorf("syslog at /dev/log: %v", err)
	} else {
		closeLog()
	}
	p := filepath.Join(t.TempDir(), "log")
	w, closeLog, err := openLog(Service{Daemon: true, LogFile: p}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	newLogger(w, false).Info("hello")
	closeLog()
	if b, _ := os.ReadFile(p); !strings.Contains(string(b), "msg=hello") {
		t.Errorf("log file holds %q", b)
	}
}
