package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/s3"
)

// defaultService is Service when no flag sets it.
var defaultService = Service{UID: -1, GID: -1, Umask: defaultUmask}

func TestParseMount(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/xdg")
	t.Setenv("XDG_CACHE_HOME", "/xdgcache")
	cfg, err := parseMount([]string{"/mnt"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Mountpoint: "/mnt", Storage: Storage{Driver: "filesystem", Root: "/xdg/regfs"}, CacheSize: 256 << 20, Service: defaultService, GCGrace: time.Hour,
		DirCacheTime: time.Minute, AttrTimeout: time.Second, IndexDir: "/xdgcache/regfs/index", IndexMax: 1 << 30}
	if cfg != want {
		t.Errorf("defaults: %+v, want %+v", cfg, want)
	}
	// Flags before and after the mountpoint, single or double dash.
	cfg, err = parseMount([]string{"--driver", "inmemory", "/m", "-read-only", "--allow-other", "--cache-size=1G", "--debug",
		"--dir-cache-time", "5m", "--attr-timeout=2s"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want = Config{Mountpoint: "/m", Storage: Storage{Driver: "inmemory"}, ReadOnly: true, AllowOther: true, CacheSize: 1 << 30, Debug: true, Service: defaultService, GCGrace: time.Hour,
		DirCacheTime: 5 * time.Minute, AttrTimeout: 2 * time.Second, IndexDir: "/xdgcache/regfs/index", IndexMax: 1 << 30}
	if cfg != want {
		t.Errorf("flags: %+v, want %+v", cfg, want)
	}
	cfg, err = parseMount([]string{"--allow-other", "--no-default-permissions", "/m"}, io.Discard, io.Discard)
	if err != nil || !cfg.AllowOther || !cfg.NoDefaultPermissions {
		t.Errorf("--no-default-permissions: %+v %v", cfg, err)
	}

	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	cfg, err = parseMount([]string{"/m"}, io.Discard, io.Discard)
	if err != nil || cfg.Root != filepath.Join("/home/u", ".local/share/regfs") {
		t.Errorf("root from HOME: %q %v", cfg.Root, err)
	}
	if cfg.IndexDir != "/home/u/.cache/regfs/index" {
		t.Errorf("index dir from HOME: %q", cfg.IndexDir)
	}
	cfg, err = parseMount([]string{"--index-dir", "idx", "--index-max", "64M", "/m"}, io.Discard, io.Discard)
	if abs, _ := filepath.Abs("idx"); err != nil || cfg.IndexDir != abs || cfg.IndexMax != 64<<20 {
		t.Errorf("--index-dir idx --index-max 64M: %q %d %v", cfg.IndexDir, cfg.IndexMax, err)
	}
	if _, err = parseMount([]string{"--index-max", "-1", "/m"}, io.Discard, io.Discard); err == nil {
		t.Errorf("--index-max -1 accepted")
	}
	cfg, err = parseMount([]string{"--root", "/data", "/m"}, io.Discard, io.Discard)
	if err != nil || cfg.Root != "/data" {
		t.Errorf("--root: %q %v", cfg.Root, err)
	}

	cfg, err = parseMount([]string{"--driver", "s3", "--s3-bucket", "reg", "--s3-endpoint", "http://127.0.0.1:7070", "--s3-region", "us-east-1", "--s3-prefix", "p", "/m"}, io.Discard, io.Discard)
	if err != nil || cfg.Storage != (Storage{Driver: "s3", S3Bucket: "reg", S3Endpoint: "http://127.0.0.1:7070", S3Region: "us-east-1", S3Prefix: "p"}) {
		t.Errorf("s3 flags: %+v %v", cfg.Storage, err)
	}

	for _, bad := range [][]string{
		{},
		{"/a", "/b", "/c"},
		{"--driver", "s4", "/m"},
		{"--driver", "inmemory", "--root", "/x", "/m"},
		{"--driver", "s3", "/m"},
		{"--driver", "s3", "--root", "/x", "--s3-bucket", "b", "/m"},
		{"--s3-bucket", "b", "/m"},
		{"--cache-size", "lots", "/m"},
		{"--no-such-flag", "/m"},
		{"--no-default-permissions", "/m"}, // meaningless without --allow-other
		{"--dir-cache-time", "0", "/m"},
		{"--attr-timeout", "-1s", "/m"},
		{"--dir-cache-time", "soon", "/m"},
	} {
		if _, err := parseMount(bad, io.Discard, io.Discard); err == nil || errors.Is(err, flag.ErrHelp) {
			t.Errorf("parseMount(%q): err = %v, want a usage error", bad, err)
		}
	}
	var out bytes.Buffer
	if _, err := parseMount([]string{"--help"}, &out, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	for _, want := range []string{"Usage: regfs mount [flags] [SOURCE] MOUNTPOINT", "-o OPTIONS", "--driver NAME", "--cache-size SIZE", "--read-only", "--no-default-permissions", "--dir-cache-time DURATION", "(default 1m)", "--attr-timeout DURATION", "(default 1s)", "Examples:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("mount --help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCommandLine(t *testing.T) {
	for _, c := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"version"}, 0, "regfs " + version + "\n", ""},
		{[]string{"--help"}, 0, "Usage:\n  regfs mount", ""},
		{[]string{"help", "mount"}, 0, "Usage: regfs mount [flags] [SOURCE] MOUNTPOINT", ""},
		{[]string{"mount", "--help"}, 0, "--allow-other", ""},
		{nil, 2, "", "Usage:"},
		{[]string{"frobnicate"}, 2, "", "unknown command \"frobnicate\""},
		{[]string{"mount"}, 2, "", "missing MOUNTPOINT"},
		{[]string{"mount", "/no/such/dir"}, 1, "", "regfs: mountpoint /no/such/dir does not exist"},
		{[]string{"version"}, 0, "go " + runtime.Version(), ""},
		{[]string{"version"}, 0, "fuse library bazil.org/fuse", ""},
		{[]string{"version", "/no/such/dir"}, 1, "", "/no/such/dir is not a regfs mount"},
		{[]string{"version", "--bogus"}, 2, "", "Usage: regfs version [MOUNTPOINT]"},
		// The helper form: a missing SOURCE directory is not created.
		{[]string{"/no/such/source", "/no/such/dir"}, 1, "", "regfs: mount source /no/such/source: no such file or directory"},
		{[]string{"inmemory", "/m", "-o", "bogus"}, 2, "", `unknown mount option "bogus"`},
	} {
		var out, errOut bytes.Buffer
		code := regfs(c.args, &out, &errOut)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errOut.String(), c.errOut) {
			t.Errorf("regfs %q: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				c.args, code, out.String(), errOut.String(), c.code, c.out, c.errOut)
		}
		if c.code == 1 && strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0 {
			t.Errorf("regfs %q: a failure must be one line, got %q", c.args, errOut.String())
		}
	}
}

func TestCacheOptions(t *testing.T) {
	if o := cacheOptions(Config{Storage: Storage{Driver: driverS3}, CacheSize: 1 << 30}); o.BlockSize != s3.CacheBlockSize || o.AheadLoads != s3.CacheAheadLoads || o.Budget != 1<<30 || !o.Ranged {
		t.Errorf("s3 cache options: %+v", o)
	}
	o := cacheOptions(Config{Storage: Storage{Driver: driverFilesystem}, CacheSize: 1 << 28})
	if o.BlockSize != 1<<20 || o.Retryable == nil || o.Ranged {
		t.Fatalf("filesystem cache options: %+v", o)
	}
	if o.Retryable(driver.PathNotFoundError{Path: "/x", Driver: "filesystem"}) {
		t.Error("a missing blob is retried")
	}
	if o.Retryable(fmt.Errorf("load: %w", context.Canceled)) {
		t.Error("a cancelled load is retried")
	}
	if !o.Retryable(&driver.Error{Driver: "s3", Op: "GetObject", Path: "/x", Err: errors.New("503 SlowDown")}) {
		t.Error("a backend hiccup is not retried")
	}
	// The first read's block and read-ahead are prefaulted, never more
	// than the budget holds.
	if o.Prefault != 5 {
		t.Errorf("filesystem: %d blocks prefaulted, want 5", o.Prefault)
	}
	for size, want := range map[int64]int{0: 0, 2<<20 + 1: 2, 1 << 30: 5} {
		if o := cacheOptions(Config{Storage: Storage{Driver: driverFilesystem}, CacheSize: size}); o.Prefault != want {
			t.Errorf("cache size %d: %d blocks prefaulted, want %d", size, o.Prefault, want)
		}
	}
	if o := cacheOptions(Config{Storage: Storage{Driver: driverS3}, CacheSize: 1 << 30}); o.Prefault != 0 {
		t.Errorf("s3: %d blocks prefaulted, want none", o.Prefault)
	}
}
