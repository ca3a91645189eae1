package store

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
)

// TestBlobDeletedElsewhereLeavesTheCache: another process (a registry's
// gc) deletes a blob's data behind the store's back. Once the store sees
// it gone (a Stat, an open, a block load), readers still open on it get
// ErrBlobUnknown or a not-found error, never its cached bytes.
func TestBlobDeletedElsewhereLeavesTheCache(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	s := newStore(t, d)
	r := repo(t, s, "a")
	content := []byte("cached, then deleted by another process")
	dgst := pushBlob(t, r, content)
	br, err := r.Layers().Open(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	buf := make([]byte, len(content))
	if _, err := br.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := deletedElsewhere(t, d, r, dgst, br, buf); !isNotFound(err) {
		t.Fatalf("read of a deleted blob: %v, want not found", err)
	}
}

// deletedElsewhere deletes dgst's data as another process would (not the
// link), checks that r then stats the blob as unknown and that a read of
// buf through br, opened before, fails, and returns the read's error.
func deletedElsewhere(t *testing.T, d driver.StorageDriver, r Repository, dgst digest.Digest, br io.ReaderAt, buf []byte) error {
	t.Helper()
	ctx := context.Background()
	if err := d.Delete(ctx, mustPath(blobDataPathSpec{digest: dgst})); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Layers().Stat(ctx, dgst); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("stat of a deleted blob: %v, want ErrBlobUnknown", err)
	}
	n, err := br.ReadAt(buf, 0)
	if err == nil {
		t.Fatalf("read %d bytes %q of a deleted blob", n, buf[:n])
	}
	return err
}

// TestBlobFoundGoneByALoadLeavesTheCache: the store learns a blob is gone
// from a block load that finds no data; the blocks cached before are
// dropped with it.
func TestBlobFoundGoneByALoadLeavesTheCache(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	s := newStore(t, d)
	r := repo(t, s, "a")
	content := make([]byte, 40<<10) // ten 4 KiB blocks
	for i := range content {
		content[i] = byte(i * 7)
	}
	dgst := pushBlob(t, r, content)
	br, err := r.Layers().Open(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	buf := make([]byte, 4096)
	if _, err := br.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, mustPath(blobDataPathSpec{digest: dgst})); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadAt(buf, int64(len(content))-4096); !isNotFound(err) {
		t.Fatalf("read of an uncached block of a deleted blob: %v, want not found", err)
	}
	if n, err := br.ReadAt(buf, 0); err == nil {
		t.Fatalf("read %d cached bytes of a blob found deleted", n)
	}
}
