package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
	"github.com/regfs/regfs/driver/filesystem"
)

// storedBlob returns the bytes stored for blob d, read from the driver.
func storedBlob(t *testing.T, d driver.StorageDriver, dgst digest.Digest) []byte {
	t.Helper()
	b, err := d.GetContent(context.Background(), mustPath(blobDataPathSpec{digest: dgst}))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUploadHealsDamagedBlob: a stored blob that is truncated, or the
// right size with the wrong bytes, is replaced by the verified bytes of a
// re-upload, which is what the registry's refusal of the same PUT asks
// the user to do.
func TestUploadHealsDamagedBlob(t *testing.T) {
	damages := map[string]func([]byte) []byte{
		"truncated": func(b []byte) []byte { return b[:len(b)/2] },
		"empty":     func(b []byte) []byte { return nil },
		"flipped":   func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/3] ^= 0xff; return c },
	}
	for _, dc := range drivers {
		for name, damage := range damages {
			t.Run(dc.name+"/"+name, func(t *testing.T) {
				ctx := context.Background()
				td := dc.new(t, "")
				s := newStore(t, td)
				content := randomBytes(3, 300_000)
				dgst := pushBlob(t, repo(t, s, "a"), content)
				blobPath := mustPath(blobDataPathSpec{digest: dgst})
				if err := td.PutContent(ctx, blobPath, damage(content)); err != nil {
					t.Fatal(err)
				}
				// Reading the damaged copy fills the cache with its blocks.
				if br, err := repo(t, s, "a").Layers().Open(ctx, dgst); err == nil {
					_, _ = io.Copy(io.Discard, br)
					br.Close()
				}
				// A second repository pushes the same (right) bytes.
				pushBlob(t, repo(t, s, "b"), content)
				if got := storedBlob(t, td, dgst); !bytes.Equal(got, content) {
					t.Fatalf("after the re-push the blob has %d bytes, want the %d verified ones", len(got), len(content))
				}
				// Served right through the same store (no block of the
				// damaged copy), to both repositories.
				for _, name := range []string{"a", "b"} {
					br, err := repo(t, s, name).Layers().Open(ctx, dgst)
					if err != nil {
						t.Fatal(err)
					}
					got, err := io.ReadAll(br)
					br.Close()
					if err != nil || !bytes.Equal(got, content) {
						t.Errorf("%s: read %d bytes, %v; want the %d pushed", name, len(got), err, len(content))
					}
				}
			})
		}
	}
}

// TestUploadKeepsSoundBlob: a re-upload of a blob stored right moves
// nothing: the blob's file is the one that was there.
func TestUploadKeepsSoundBlob(t *testing.T) {
	ctx := context.Background()
	td := drivers[0].new(t, "")
	var moves int
	hook := &moveHook{StorageDriver: td, before: func() { moves++ }}
	s := newStore(t, hook)
	content := randomBytes(4, 10_000)
	pushBlob(t, repo(t, s, "a"), content)
	if moves != 1 {
		t.Fatalf("first push made %d moves, want 1", moves)
	}
	pushBlob(t, repo(t, s, "b"), content)
	if moves != 1 {
		t.Errorf("a re-push of a sound blob made %d more moves, want none", moves-1)
	}
	if _, err := repo(t, s, "b").Layers().Stat(ctx, digest.FromBytes(content)); err != nil {
		t.Error(err)
	}
}

// TestManifestPutHealsDamagedBlob: pushing a manifest again replaces its
// stored blob when that was damaged; a damaged one is never served.
func TestManifestPutHealsDamagedBlob(t *testing.T) {
	ctx := context.Background()
	d, s, r, cfg, layers := setup(t)
	content := schema2(cfg, layers...)
	dgst, err := r.Manifests().Put(ctx, content, "v1", "")
	if err != nil {
		t.Fatal(err)
	}
	blobPath := mustPath(blobDataPathSpec{digest: dgst})
	if err := d.PutContent(ctx, blobPath, content[:len(content)-10]); err != nil {
		t.Fatal(err)
	}
	var corrupt *CorruptBlobError
	if _, _, err := r.Manifests().Get(ctx, dgst); !errors.As(err, &corrupt) {
		t.Errorf("Get of a truncated manifest blob = %v, want a *CorruptBlobError", err)
	}
	if _, err := r.Manifests().Put(ctx, content, "v1", ""); err != nil {
		t.Fatal(err)
	}
	if got := storedBlob(t, d, dgst); !bytes.Equal(got, content) {
		t.Errorf("after the re-push the manifest blob is %q, want %q", got, content)
	}
	got, _, err := repo(t, s, "r").Manifests().Get(ctx, dgst)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("Get after the re-push = %q, %v", got, err)
	}
}

// TestUploadWrongHashStateRecovers: a well-formed hash state copied from
// another upload of the same size (what a careless copy of a storage tree
// does) would make every commit a mismatch. The stored bytes are re-hashed
// once, the commit succeeds, and the state saved is theirs.
func TestUploadWrongHashStateRecovers(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			ctx := context.Background()
			td := dc.new(t, "")
			s := newStore(t, td)
			r := repo(t, s, "r")
			first, second := randomBytes(5, 70_000), randomBytes(6, 70_000)
			var ids []string
			for _, content := range [][]byte{first, second} {
				up, err := r.Uploads().Create(ctx, digest.FromBytes(content))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := up.Write(content); err != nil {
					t.Fatal(err)
				}
				if err := up.Close(); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, up.ID())
			}
			state := func(id string) string {
				return mustPath(uploadHashStatePathSpec{name: "r", id: id, offset: int64(len(first))})
			}
			wrong, err := td.GetContent(ctx, state(ids[0]))
			if err != nil {
				t.Fatal(err)
			}
			if err := td.PutContent(ctx, state(ids[1]), wrong); err != nil {
				t.Fatal(err)
			}

			up, err := repo(t, newStore(t, td), "r").Uploads().Resume(ctx, ids[1])
			if err != nil {
				t.Fatal(err)
			}
			desc, err := up.Commit(ctx)
			if err != nil {
				t.Fatalf("Commit with a hash state from another upload: %v", err)
			}
			if desc.Digest != digest.FromBytes(second) {
				t.Errorf("committed %s, want %s", desc.Digest, digest.FromBytes(second))
			}
			if got := storedBlob(t, td, desc.Digest); !bytes.Equal(got, second) {
				t.Errorf("stored blob differs from the upload's bytes")
			}
		})
	}
}

// TestUploadWrongHashStateThenAppend: the re-hash also covers bytes
// appended after the resume from a wrong state.
func TestUploadWrongHashStateThenAppend(t *testing.T) {
	ctx := context.Background()
	td := drivers[0].new(t, "")
	s := newStore(t, td)
	r := repo(t, s, "r")
	other, head, tail := randomBytes(7, 40_000), randomBytes(8, 40_000), randomBytes(9, 1_000)
	whole := append(bytes.Clone(head), tail...)
	var ids []string
	for _, c := range []struct{ content, whole []byte }{{other, other}, {head, whole}} {
		up, err := r.Uploads().Create(ctx, digest.FromBytes(c.whole))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(c.content); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, up.ID())
	}
	wrong, err := td.GetContent(ctx, mustPath(uploadHashStatePathSpec{name: "r", id: ids[0], offset: 40_000}))
	if err != nil {
		t.Fatal(err)
	}
	if err := td.PutContent(ctx, mustPath(uploadHashStatePathSpec{name: "r", id: ids[1], offset: 40_000}), wrong); err != nil {
		t.Fatal(err)
	}
	up, err := r.Uploads().Resume(ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(tail); err != nil {
		t.Fatal(err)
	}
	if desc, err := up.Commit(ctx); err != nil || desc.Digest != digest.FromBytes(whole) {
		t.Fatalf("Commit = %v, %v; want %s", desc, err, digest.FromBytes(whole))
	}
}

// fullDisk is a driver whose writers fail with ENOSPC, the way the
// filesystem driver reports a full disk, once free bytes are written.
type fullDisk struct {
	driver.StorageDriver
	mu sync.Mutex
	// free is the bytes writers may still write; guarded by mu.
	free int64
}

func (d *fullDisk) setFree(n int64) {
	d.mu.Lock()
	d.free = n
	d.mu.Unlock()
}

func (d *fullDisk) Writer(ctx context.Context, p string, append bool) (driver.FileWriter, error) {
	w, err := d.StorageDriver.Writer(ctx, p, append)
	if err != nil {
		return nil, err
	}
	return &fullDiskWriter{FileWriter: w, d: d, path: p}, nil
}

type fullDiskWriter struct {
	driver.FileWriter
	d    *fullDisk
	path string
}

func (w *fullDiskWriter) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	n := int(min(int64(len(p)), w.d.free))
	w.d.free -= int64(n)
	w.d.mu.Unlock()
	if _, err := w.FileWriter.Write(p[:n]); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, &driver.Error{Driver: "test", Op: "Write", Path: w.path,
			Err: &os.PathError{Op: "write", Path: w.path, Err: syscall.ENOSPC}}
	}
	return n, nil
}

// TestUploadFullDisk: a full disk is a storage failure with its errno, at
// the write that finds it and at the commit after it, never a digest
// mismatch; the upload keeps what was stored, and appending the rest once
// there is room commits it.
func TestUploadFullDisk(t *testing.T) {
	ctx := context.Background()
	disk := &fullDisk{StorageDriver: drivers[0].new(t, ""), free: 1 << 40}
	s := newStore(t, disk)
	r := repo(t, s, "r")
	content := randomBytes(10, 200_000)
	up, err := r.Uploads().Create(ctx, digest.FromBytes(content))
	if err != nil {
		t.Fatal(err)
	}
	disk.setFree(50_000)
	var werr error
	for off := 0; off < len(content) && werr == nil; off += 10_000 {
		_, werr = up.Write(content[off : off+10_000])
	}
	if werr == nil {
		werr = up.Flush(ctx)
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing past a full disk = %v, want ENOSPC", werr)
	}
	var se *StorageError
	if !errors.As(werr, &se) {
		t.Errorf("the failure %v (%T) is not a *StorageError", werr, werr)
	}
	if up.Size() != 50_000 {
		t.Errorf("Size after the failure = %d, want the 50000 stored", up.Size())
	}
	_, err = up.Commit(ctx)
	var mismatch *DigestMismatchError
	if errors.As(err, &mismatch) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Commit after a full disk = %v, want the ENOSPC, not a mismatch", err)
	}
	info, err := r.Uploads().Stat(ctx, up.ID())
	if err != nil || info.Size != 50_000 {
		t.Fatalf("upload after the failed commit: %+v, %v; want 50000 bytes kept", info, err)
	}

	disk.setFree(1 << 40)
	if _, err := up.WriteAt(content[50_000:], 50_000); err != nil {
		t.Fatal(err)
	}
	if desc, err := up.Commit(ctx); err != nil || desc.Size != int64(len(content)) {
		t.Fatalf("Commit once there is room = %v, %v", desc, err)
	}
}

// TestDriverErrorsAreTranslated: what the driver says comes out as the
// store's own errors, with the cause kept.
func TestDriverErrorsAreTranslated(t *testing.T) {
	ctx := context.Background()
	td := drivers[0].new(t, "")
	s := newStore(t, td)
	r := repo(t, s, "r")
	dgst := pushBlob(t, r, []byte("blob"))
	br, err := r.Layers().Open(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	if err := td.Delete(ctx, mustPath(blobDataPathSpec{digest: dgst})); err != nil {
		t.Fatal(err)
	}
	_, err = br.ReadAt(make([]byte, 4), 0)
	var se *StorageError
	if !errors.As(err, &se) || !errors.Is(err, ErrNotFound) || !driver.IsNotFound(err) {
		t.Errorf("reading a blob deleted under the reader = %v (%T), want a *StorageError of Kind ErrNotFound keeping its cause", err, err)
	}
}

// BenchmarkCommitExistingBlob is the cost of committing an upload whose
// blob is stored already, on the filesystem driver: up to healHashLimit the
// stored copy is hashed, beyond it only its size is checked.
func BenchmarkCommitExistingBlob(b *testing.B) {
	for _, size := range []int{64 << 10, healHashLimit, healHashLimit + 1} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			d, err := filesystem.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			s, err := New(d, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			r, _ := s.Repository("r")
			content := randomBytes(1, size)
			dgst := digest.FromBytes(content)
			ctx := context.Background()
			b.SetBytes(int64(size))
			for i := 0; i <= b.N; i++ {
				if i == 1 {
					b.ResetTimer() // the first commit stores the blob
				}
				up, err := r.Uploads().Create(ctx, dgst)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := up.Write(content); err != nil {
					b.Fatal(err)
				}
				if _, err := up.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestUploadWriterBoundByItsContext: the writer an upload reopens for the
// writes after a Flush runs under the context the upload was created with,
// so that ending it (an unmount) stops the upload's storage calls.
func TestUploadWriterBoundByItsContext(t *testing.T) {
	s := newStore(t, base.New(drivers[0].new(t, "")))
	content := randomBytes(11, 2_000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up, err := repo(t, s, "r").Uploads().Create(ctx, digest.FromBytes(content))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(content[:1_000]); err != nil {
		t.Fatal(err)
	}
	if err := up.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, err = up.WriteAt(content[1_000:], 1_000)
	if err == nil {
		err = up.Flush(context.Background())
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("a write after the upload's context ended = %v, want context.Canceled", err)
	}
}
