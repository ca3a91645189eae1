package fs

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/internal/testenv"
	"github.com/regfs/regfs/store"
)

// syscallTimeout bounds every file operation a test does on the mount, so
// a bug in the FS fails the test instead of hanging the test binary.
const syscallTimeout = 30 * time.Second

// testMount is an FS mounted in-process on the in-memory driver with the
// real store and cache.
type testMount struct {
	t     *testing.T
	dir   string
	fs    *FS
	st    store.Store
	drv   driver.StorageDriver
	cache *cache.Cache
	// connID names the connection in /sys/fs/fuse/connections, to abort
	// it when a bug leaves requests unanswered.
	connID string
}

type mountConfig struct {
	readOnly bool
	mountRO  bool // mount with the kernel's ro option as well
	drv      driver.StorageDriver
	// dirCacheTTL is Options.DirCacheTTL; zero: the default.
	dirCacheTTL time.Duration
	// entryTTL is Options.EntryTTL; zero: the default.
	entryTTL time.Duration
}

// newMount mounts a fresh FS; cleanup unmounts it and waits for Serve.
func newMount(t *testing.T, mc mountConfig) *testMount {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.SkipOrFail(t, "/dev/fuse is missing: FUSE tests need a FUSE device (run on a machine or container with /dev/fuse)")
	}
	if mc.drv == nil {
		mc.drv = inmemory.New()
	}
	c := cache.New(16<<20, 256<<10)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(mc.drv, store.Options{Cache: c, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{ReadOnly: mc.readOnly, Logger: logger, Cache: c, DirCacheTTL: mc.dirCacheTTL, EntryTTL: mc.entryTTL}
	if os.Getenv("REGFS_FUSE_DEBUG") != "" {
		// Per-request tracing to stderr, for debugging a failing test.
		opts.Debug = true
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f := New(st, opts)
	dir := t.TempDir()
	conn, err := fuse.Mount(dir, MountOptions(MountConfig{ReadOnly: mc.mountRO})...)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Serve(conn) }()
	m := &testMount{t: t, dir: dir, fs: f, st: st, drv: mc.drv, cache: c, connID: connectionID(dir)}
	t.Cleanup(func() {
		unmount(t, dir)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after unmount: aborting the connection")
			m.abort()
			<-done
		}
		conn.Close()
	})
	// The mount is usable once the kernel gets an answer for the root.
	m.do(func() error { _, err := os.Stat(dir); return err })
	return m
}

// unmount unmounts dir, retrying while it is busy (a Release still in
// flight), lazily as the last resort.
func unmount(t *testing.T, dir string) {
	var err error
	for i := 0; i < 50; i++ {
		if err = fuse.Unmount(dir); err == nil || !isMounted(dir) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("unmount %s: %v; unmounting lazily", dir, err)
	_ = exec.Command("fusermount3", "-u", "-z", dir).Run()
}

func isMounted(dir string) bool {
	_, ok, _ := MountAt(dir)
	return ok
}

// openFile opens p with blocking I/O. os.OpenFile would register the
// descriptor with the runtime's poller (FUSE files accept epoll) and set
// O_NONBLOCK; a test that both serves and reads a mount must keep its reads
// out of the poller (golang/go#21014), so the descriptor is made with
// syscall.Open and os.NewFile, which leaves a blocking one alone.
func openFile(p string, flag int) (*os.File, error) {
	fd, err := syscall.Open(p, flag|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// readFile is os.ReadFile with blocking I/O (see openFile).
func readFile(p string) ([]byte, error) {
	f, err := openFile(p, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// do runs fn, which does syscalls on the mount, under syscallTimeout.
func (m *testMount) do(fn func() error) error {
	m.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- fn() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(syscallTimeout):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		m.abort()
		m.t.Fatalf("file operation on the mount did not return within %v; goroutines:\n%s", syscallTimeout, buf)
		return nil
	}
}

// connectionID returns the minor device number of the FUSE mount at dir,
// which names its directory in /sys/fs/fuse/connections.
func connectionID(dir string) string {
	m, _, _ := MountAt(dir)
	_, minor, _ := strings.Cut(m.Dev, ":")
	return minor
}

// abort aborts the FUSE connection, failing every request in flight, so
// that syscalls blocked on a buggy FS return and the process can exit
// (closing /dev/fuse does not: the close waits for the reader blocked on
// it).
func (m *testMount) abort() {
	if m.connID == "" {
		return
	}
	ctl := "/sys/fs/fuse/connections"
	if _, err := os.Stat(ctl + "/" + m.connID); err != nil {
		_ = exec.Command("mount", "-t", "fusectl", "none", ctl).Run()
	}
	if err := os.WriteFile(ctl+"/"+m.connID+"/abort", []byte("1"), 0o200); err != nil {
		m.t.Logf("aborting FUSE connection %s: %v", m.connID, err)
	}
	_ = exec.Command("fusermount3", "-u", "-z", m.dir).Run()
}

// must runs fn under the timeout and fails the test on an error.
func (m *testMount) must(what string, fn func() error) {
	m.t.Helper()
	if err := m.do(fn); err != nil {
		m.t.Fatalf("%s: %v", what, err)
	}
}

func (m *testMount) path(elem ...string) string {
	return filepath.Join(append([]string{m.dir}, elem...)...)
}

func (m *testMount) readFile(p string) []byte {
	m.t.Helper()
	var b []byte
	m.must("read "+p, func() (err error) { b, err = readFile(p); return err })
	return b
}

func (m *testMount) readDir(p string) []string {
	m.t.Helper()
	var names []string
	m.must("readdir "+p, func() error {
		es, err := os.ReadDir(p)
		for _, e := range es {
			names = append(names, e.Name())
		}
		return err
	})
	return names
}

func (m *testMount) stat(p string) (os.FileInfo, error) {
	m.t.Helper()
	var fi os.FileInfo
	err := m.do(func() (err error) { fi, err = os.Stat(p); return err })
	return fi, err
}

// writeClose creates (or opens with flag) p, writes b and closes it; it
// returns the write error, else the close error.
func (m *testMount) writeClose(p string, flag int, b []byte) error {
	m.t.Helper()
	return m.do(func() error {
		f, err := openFile(p, flag)
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
}

// eventually retries cond for up to 3 s: kernel invalidations are sent
// asynchronously.
func (m *testMount) eventually(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			m.t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: err = %v, want %v (%s)", what, err, want, errnoName(want))
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// repo returns the store repository name.
func (m *testMount) repo(name string) store.Repository {
	m.t.Helper()
	r, err := m.st.Repository(name)
	if err != nil {
		m.t.Fatal(err)
	}
	return r
}

// pushBlob stores content as a layer of repo through the store, not the
// mount.
func (m *testMount) pushBlob(repo string, content []byte) digest.Digest {
	m.t.Helper()
	ctx := context.Background()
	d := digest.FromBytes(content)
	up, err := m.repo(repo).Uploads().Create(ctx, d)
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := up.Write(content); err != nil {
		m.t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		m.t.Fatal(err)
	}
	return d
}

type desc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int    `json:"size"`
}

// imageManifest returns an OCI image manifest over config and layers.
func imageManifest(t *testing.T, config []byte, layers ...[]byte) []byte {
	t.Helper()
	mf := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, store.MediaTypeOCIManifest,
		desc{"application/vnd.oci.image.config.v1+json", digest.FromBytes(config).String(), len(config)}, []desc{}}
	for _, l := range layers {
		mf.Layers = append(mf.Layers, desc{"application/vnd.oci.image.layer.v1.tar+gzip", digest.FromBytes(l).String(), len(l)})
	}
	b, err := json.MarshalIndent(mf, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushImage stores a config, n layers and a manifest tagged tag through
// the store; it returns the manifest, its digest and the layers.
func (m *testMount) pushImage(repo, tag string, n int) ([]byte, digest.Digest, [][]byte) {
	m.t.Helper()
	config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","tag":%q}`, tag))
	m.pushBlob(repo, config)
	var layers [][]byte
	for i := 0; i < n; i++ {
		l := randomBytes(m.t, 1000+i*70000)
		m.pushBlob(repo, l)
		layers = append(layers, l)
	}
	mf := imageManifest(m.t, config, layers...)
	d, err := m.repo(repo).Manifests().Put(context.Background(), mf, tag, "")
	if err != nil {
		m.t.Fatal(err)
	}
	return mf, d, layers
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
