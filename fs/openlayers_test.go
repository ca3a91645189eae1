package fs

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/store/gc"
)

// TestDeletedBlobNotReadThroughAnOpenDescriptor: another process deletes
// a blob's data (a registry's gc leaves the link). A descriptor opened
// before goes on reading the kernel's pages until regfs learns the blob is
// gone, here from a new open, which fails; from then on reads through
// the old descriptor fail too, never returning the deleted bytes.
func TestDeletedBlobNotReadThroughAnOpenDescriptor(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 600<<10)
	d := m.pushBlob("a", content)
	p := m.path("a", "_layers", d.String())
	var f *os.File
	m.must("open", func() (err error) { f, err = openFile(p, os.O_RDONLY); return err })
	defer f.Close()
	buf := make([]byte, len(content))
	m.must("read", func() error { _, err := io.ReadFull(f, buf); return err })
	if !bytes.Equal(buf, content) {
		t.Fatal("read differs")
	}
	if err := m.drv.Delete(context.Background(), "/docker/registry/v2/blobs/sha256/"+d.Encoded()[:2]+"/"+d.Encoded()); err != nil {
		t.Fatal(err)
	}
	_, err := openFile(p, os.O_RDONLY)
	wantErrno(t, "open of a blob whose data is gone", err, syscall.ENOENT)
	m.eventually("reads through the old descriptor fail", func() bool {
		var n int
		err := m.do(func() (err error) { n, err = f.ReadAt(buf, 0); return err })
		if err == nil && !bytes.Equal(buf[:n], content[:n]) {
			t.Fatalf("read %d bytes that are not the blob's", n)
		}
		return err != nil
	})
}

// TestCollectedBlobNotReadThroughAnOpenDescriptor: the same for a blob a
// collection in the mount deleted after its last link was removed (rm
// keeps an open descriptor reading, as on any file system, until gc).
func TestCollectedBlobNotReadThroughAnOpenDescriptor(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 600<<10)
	d := m.pushBlob("a", content)
	p := m.path("a", "_layers", d.String())
	var f *os.File
	m.must("open", func() (err error) { f, err = openFile(p, os.O_RDONLY); return err })
	defer f.Close()
	buf := make([]byte, len(content))
	m.must("read", func() error { _, err := io.ReadFull(f, buf); return err })
	m.must("rm", func() error { return os.Remove(p) })
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatalf("read after rm, before gc: %v", err)
	}
	rep, err := gc.Run(context.Background(), m.st, m.drv, gc.Options{
		Now:    func() time.Time { return time.Now().Add(2 * time.Hour) },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil || !rep.OK() || len(rep.Blobs) != 1 {
		t.Fatalf("gc: %v %+v", err, rep)
	}
	m.fs.Collected(rep)
	m.eventually("reads through the old descriptor fail", func() bool {
		err := m.do(func() error { _, err := f.ReadAt(buf, 0); return err })
		return err != nil
	})
}
