package fs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
)

// noSpace is a driver whose writers fail as the filesystem driver does on
// a full disk: a *driver.Error around an *os.PathError around ENOSPC.
type noSpace struct {
	driver.StorageDriver
	// free is the bytes writers may still write.
	free atomic.Int64
}

func (d *noSpace) Writer(ctx context.Context, p string, append bool) (driver.FileWriter, error) {
	w, err := d.StorageDriver.Writer(ctx, p, append)
	if err != nil {
		return nil, err
	}
	return noSpaceWriter{FileWriter: w, d: d, path: p}, nil
}

type noSpaceWriter struct {
	driver.FileWriter
	d    *noSpace
	path string
}

func (w noSpaceWriter) Write(p []byte) (int, error) {
	n := len(p)
	if left := w.d.free.Add(-int64(len(p))); left < 0 {
		n = int(max(int64(len(p))+left, 0)) // what fitted
	}
	if _, err := w.FileWriter.Write(p[:n]); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, &driver.Error{Driver: "test", Op: "Write", Path: w.path,
			Err: &os.PathError{Op: "write", Path: w.path, Err: syscall.ENOSPC}}
	}
	return n, nil
}

// TestFullDiskIsENOSPC: a full disk under an upload reaches the writer as
// ENOSPC, at the write and at the close after it (where the commit used to
// report a digest mismatch, EBADMSG), through the store's own errors.
func TestFullDiskIsENOSPC(t *testing.T) {
	ctx := context.Background()
	d := &noSpace{StorageDriver: inmemory.New()}
	d.free.Store(30_000)
	st, err := store.New(d, store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := st.Repository("r")
	if err != nil {
		t.Fatal(err)
	}
	content := make([]byte, 100_000)
	up, err := repo.Uploads().Create(ctx, digest.FromBytes(content))
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for off := 0; off < len(content) && werr == nil; off += 10_000 {
		_, werr = up.Write(content[off : off+10_000])
	}
	if werr == nil {
		werr = up.Flush(ctx)
	}
	if got := classify(werr); got != syscall.ENOSPC {
		t.Errorf("write on a full disk: %v -> %s, want ENOSPC", werr, errnoName(got))
	}
	_, cerr := up.Commit(ctx)
	if got := classify(cerr); got != syscall.ENOSPC {
		t.Errorf("close after a full disk: %v -> %s, want ENOSPC", cerr, errnoName(got))
	}
	var mismatch *store.DigestMismatchError
	if errors.As(cerr, &mismatch) {
		t.Errorf("close after a full disk reports a digest mismatch: %v", cerr)
	}
}

// TestCorruptLinkIsEIO: a tag whose link stays empty is EIO when read,
// never EINVAL or ENOENT, and hides no other tag.
func TestCorruptLinkIsEIO(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	st, err := store.New(d, store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := st.Repository("r")
	if err != nil {
		t.Fatal(err)
	}
	up, err := repo.Uploads().Create(ctx, digest.FromString("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write([]byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"` + digest.FromString("{}").String() + `"},"layers":[]}`)
	for _, tag := range []string{"good", "crashed"} {
		if _, err := repo.Manifests().Put(ctx, manifest, tag, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Where the registry keeps a tag's link (docs/design: the layout).
	link := "/docker/registry/v2/repositories/r/_manifests/tags/crashed/current/link"
	if err := d.PutContent(ctx, link, nil); err != nil {
		t.Fatal(err)
	}
	_, err = repo.Tags().Get(ctx, "crashed")
	if got := classify(err); got != syscall.EIO {
		t.Errorf("reading an empty tag link: %v -> %s, want EIO", err, errnoName(got))
	}
	tags, err := repo.Tags().List(ctx)
	if err != nil || len(tags) != 1 || tags[0] != "good" {
		t.Errorf("tags beside an empty link = %v, %v; want [good]", tags, err)
	}
	if n := st.(store.StatsReporter).Stats().BadLinks; n != 2 {
		t.Errorf("BadLinks = %d, want 2 (the read and the listing)", n)
	}
}

// TestCrashedTagLinkThroughMount: the zero-byte tag link a crash of the
// registry leaves does not make `ls _manifests` fail; the other tags and
// the revisions are listed, and reading the broken tag is EIO.
func TestCrashedTagLinkThroughMount(t *testing.T) {
	m := newMount(t, mountConfig{})
	m.pushImage("app", "v1", 1)
	_, d2, _ := m.pushImage("app", "v2", 2)
	link := "/docker/registry/v2/repositories/app/_manifests/tags/v2/current/link"
	if err := m.drv.PutContent(context.Background(), link, nil); err != nil {
		t.Fatal(err)
	}
	names := m.readDir(m.path("app/_manifests"))
	if !contains(names, "v1") || contains(names, "v2") || !contains(names, d2.String()) {
		t.Errorf("ls _manifests beside an empty tag link = %v, want v1 and the revisions, not v2", names)
	}
	_, err := readFile(m.path("app/_manifests/v2"))
	wantErrno(t, "cat of the tag with an empty link", err, syscall.EIO)
}

// TestGarbageTagLinkThroughMount: a tag link of a digest's length that is
// not a digest (71 bytes of garbage) is skipped by ls _manifests, which
// lists the other tags, and by rm of a revision, which deletes it and its
// good tags; reading the bad tag is EIO.
func TestGarbageTagLinkThroughMount(t *testing.T) {
	m := newMount(t, mountConfig{})
	m.pushImage("app", "v1", 1)
	_, d2, _ := m.pushImage("app", "v2", 2)
	if err := os.Link(m.path("app/_manifests", d2.String()), m.path("app/_manifests/v3")); err != nil {
		t.Fatal(err)
	}
	link := "/docker/registry/v2/repositories/app/_manifests/tags/v2/current/link"
	garbage := []byte("sha256:" + strings.Repeat("zz", 32))
	if len(garbage) != 71 {
		t.Fatalf("garbage is %d bytes", len(garbage))
	}
	if err := m.drv.PutContent(context.Background(), link, garbage); err != nil {
		t.Fatal(err)
	}
	names := m.readDir(m.path("app/_manifests"))
	if !contains(names, "v1") || !contains(names, "v3") || contains(names, "v2") || !contains(names, d2.String()) {
		t.Errorf("ls _manifests beside a garbage tag link = %v, want v1, v3 and the revisions, not v2", names)
	}
	_, err := readFile(m.path("app/_manifests/v2"))
	wantErrno(t, "cat of the tag with a garbage link", err, syscall.EIO)
	if err := m.do(func() error { return os.Remove(m.path("app/_manifests", d2.String())) }); err != nil {
		t.Fatalf("rm of a revision beside a garbage tag link: %v", err)
	}
	if names := m.readDir(m.path("app/_manifests")); contains(names, "v3") || contains(names, d2.String()) {
		t.Errorf("ls _manifests after rm of the revision = %v", names)
	}
}
