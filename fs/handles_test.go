package fs

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"syscall"
	"testing"

	"bazil.org/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
)

// Handle methods called directly with bazil's request values, as the
// kernel would send them, so that commit-on-close is covered where
// /dev/fuse is missing. Pid 0 is a close whose process is unknown, which
// commits; the test's own pid is the opener.

// newDirectFS returns an FS on a fresh in-memory store, and a testMount
// without a mount for the store helpers.
func newDirectFS(t *testing.T) (*FS, *testMount) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(inmemory.New(), store.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	f := New(st, Options{Logger: logger})
	t.Cleanup(f.closeUploads)
	return f, &testMount{t: t, st: st}
}

func createUpload(t *testing.T, f *FS, repo, name string, pid uint32) *uploadHandle {
	t.Helper()
	resp := &fuse.CreateResponse{}
	_, h, err := newUploadsDir(f, repo).Create(context.Background(),
		&fuse.CreateRequest{Header: fuse.Header{Pid: pid}, Name: name, Flags: fuse.OpenWriteOnly | fuse.OpenCreate}, resp)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if resp.Flags&fuse.OpenDirectIO == 0 || resp.EntryValid != 0 {
		t.Errorf("create response: flags %v, entry valid %v", resp.Flags, resp.EntryValid)
	}
	return h.(*uploadHandle)
}

func write(h fsWriter, off int64, b []byte) error {
	resp := &fuse.WriteResponse{}
	err := h.Write(context.Background(), &fuse.WriteRequest{Offset: off, Data: b}, resp)
	if err == nil && resp.Size != len(b) {
		return io.ErrShortWrite
	}
	return err
}

type fsWriter interface {
	Write(context.Context, *fuse.WriteRequest, *fuse.WriteResponse) error
}

func flush(h interface {
	Flush(context.Context, *fuse.FlushRequest) error
}, pid uint32) error {
	return h.Flush(context.Background(), &fuse.FlushRequest{Header: fuse.Header{Pid: pid}})
}

func release(t *testing.T, h interface {
	Release(context.Context, *fuse.ReleaseRequest) error
}) {
	t.Helper()
	if err := h.Release(context.Background(), &fuse.ReleaseRequest{}); err != nil {
		t.Fatalf("release: %v", err)
	}
}

func linked(t *testing.T, m *testMount, repo string, d digest.Digest) bool {
	t.Helper()
	_, err := m.repo(repo).Layers().Stat(context.Background(), d)
	return err == nil
}

func TestUploadHandleCommitsOnClose(t *testing.T) {
	f, m := newDirectFS(t)
	content := bytes.Repeat([]byte("layer "), 1000)
	d := digest.FromBytes(content)
	h := createUpload(t, f, "app", d.String(), 0)
	if err := write(h, 0, content[:100]); err != nil {
		t.Fatal(err)
	}
	if err := write(h, 50, content[50:60]); classify(err) != syscall.EINVAL {
		t.Errorf("write before the end: %v, want EINVAL", err)
	}
	if err := write(h, 100, content[100:]); err != nil {
		t.Fatal(err)
	}
	if linked(t, m, "app", d) {
		t.Fatal("linked before close")
	}
	if err := flush(h, 0); err != nil {
		t.Fatalf("close: %v", err)
	}
	if !linked(t, m, "app", d) {
		t.Fatal("not linked after close")
	}
	// The upload is done: a write through the same descriptor is stale,
	// a second close commits nothing.
	if err := write(h, int64(len(content)), []byte("x")); classify(err) != syscall.ESTALE {
		t.Errorf("write after the commit: %v, want ESTALE", err)
	}
	if err := flush(h, 0); err != nil {
		t.Errorf("second close: %v", err)
	}
	release(t, h)
	if s := f.Stats(); s.UploadsCommitted != 1 || s.UploadsInFlight != 0 || f.uploadKeys.held() != 0 {
		t.Errorf("committed %d, in flight %d, keys held %d", s.UploadsCommitted, s.UploadsInFlight, f.uploadKeys.held())
	}
	if infos, _ := m.repo("app").Uploads().List(context.Background()); len(infos) != 0 {
		t.Errorf("uploads left: %v", infos)
	}
}

// A close after part of the bytes fails with EBADMSG and keeps the upload
// for the rest; a close of a descriptor that wrote nothing (a shell's
// redirection) commits nothing and fails nothing.
func TestUploadHandleMismatchKeepsTheUpload(t *testing.T) {
	f, m := newDirectFS(t)
	content := bytes.Repeat([]byte("0123456789"), 300)
	d := digest.FromBytes(content)

	quiet := createUpload(t, f, "app", d.String(), 0)
	if err := flush(quiet, 0); err != nil {
		t.Errorf("close of an unwritten upload: %v", err)
	}

	h := createUpload(t, f, "app", d.String(), 0)
	if quiet.st != h.st {
		t.Error("two descriptors of one upload do not share it")
	}
	release(t, quiet)
	if err := write(h, 0, content[:1000]); err != nil {
		t.Fatal(err)
	}
	if err := flush(h, 0); classify(err) != syscall.EBADMSG {
		t.Fatalf("close of a partial upload: %v, want EBADMSG", err)
	}
	if s := f.Stats(); s.UploadsRejected != 1 || len(f.errLog.render()) == 0 {
		t.Errorf("rejection not recorded: %d", s.UploadsRejected)
	}
	if err := write(h, 1000, content[1000:]); err != nil {
		t.Fatalf("append the rest: %v", err)
	}
	if err := flush(h, 0); err != nil {
		t.Fatalf("close after the rest: %v", err)
	}
	release(t, h)
	if !linked(t, m, "app", d) {
		t.Error("not linked")
	}
}

// Only the opener's close commits: a child that inherited the descriptor
// closes first, and what was written is committed at release if the
// opener never closed after writing.
func TestUploadHandleCommitsAtRelease(t *testing.T) {
	f, m := newDirectFS(t)
	content := []byte("written by a child of the opener")
	d := digest.FromBytes(content)
	h := createUpload(t, f, "app", d.String(), uint32(os.Getpid()))
	if h.opener != os.Getpid() {
		t.Fatalf("opener %d, want %d", h.opener, os.Getpid())
	}
	if err := write(h, 0, content); err != nil {
		t.Fatal(err)
	}
	if err := flush(h, 1); err != nil { // pid 1 is not the opener
		t.Fatalf("close by another process: %v", err)
	}
	if linked(t, m, "app", d) {
		t.Fatal("another process's close committed")
	}
	release(t, h)
	if !linked(t, m, "app", d) {
		t.Fatal("release did not commit what was written")
	}
}

// The empty blob's upload is complete when created: touch pushes it.
func TestUploadHandleEmptyBlob(t *testing.T) {
	f, m := newDirectFS(t)
	h := createUpload(t, f, "app", emptyDigest.String(), 0)
	if err := flush(h, 0); err != nil {
		t.Fatal(err)
	}
	release(t, h)
	if !linked(t, m, "app", emptyDigest) {
		t.Error("the empty blob is not linked")
	}
}

// A manifest written to a new tag is stored, verified, at close; a write
// that makes it malformed JSON fails at once; reading the tag back gives
// the bytes through a manifestHandle, whatever the offset.
func TestManifestHandlesDirect(t *testing.T) {
	ctx := context.Background()
	f, m := newDirectFS(t)
	mf, _, _ := m.pushImage("app", "v1", 1)
	dir := newManifestsDir(f, "app")

	_, h, err := dir.Create(ctx, &fuse.CreateRequest{Name: "v2", Flags: fuse.OpenWriteOnly | fuse.OpenCreate}, &fuse.CreateResponse{})
	if err != nil {
		t.Fatal(err)
	}
	w := h.(*manifestWriter)
	if f.pendingManifest(fileKey{"app", "v2"}) != w {
		t.Error("the new name is not pending")
	}
	if err := write(w, 0, mf[:10]); err != nil {
		t.Fatal(err)
	}
	if err := write(w, 10, mf[10:]); err != nil {
		t.Fatal(err)
	}
	if err := flush(w, 0); err != nil {
		t.Fatalf("close: %v", err)
	}
	release(t, w)
	if d, err := m.repo("app").Tags().Get(ctx, "v2"); err != nil || d != digest.FromBytes(mf) {
		t.Errorf("v2 -> %s, %v", d, err)
	}
	if f.pendingManifest(fileKey{"app", "v2"}) != nil {
		t.Error("still pending after release")
	}

	_, h, err = dir.Create(ctx, &fuse.CreateRequest{Name: "bad", Flags: fuse.OpenWriteOnly | fuse.OpenCreate}, &fuse.CreateResponse{})
	if err != nil {
		t.Fatal(err)
	}
	if err := write(h.(*manifestWriter), 0, []byte("{]")); classify(err) != syscall.EBADMSG {
		t.Errorf("malformed write: %v, want EBADMSG", err)
	}
	if err := flush(h.(*manifestWriter), 0); classify(err) != syscall.EBADMSG {
		t.Errorf("close of a malformed manifest: %v, want EBADMSG", err)
	}
	release(t, h.(*manifestWriter))
	if _, err := m.repo("app").Tags().Get(ctx, "bad"); err == nil {
		t.Error("a malformed manifest was tagged")
	}

	oh, err := (tagFile{f: f, repo: "app", name: "v2"}).Open(ctx, &fuse.OpenRequest{Flags: fuse.OpenReadOnly}, &fuse.OpenResponse{})
	if err != nil {
		t.Fatal(err)
	}
	rh := oh.(*manifestHandle)
	for _, c := range []struct {
		off  int64
		size int
		want []byte
	}{
		{0, 7, mf[:7]},
		{7, len(mf), mf[7:]},
		{int64(len(mf)), 100, nil},
		{int64(len(mf)) + 100, 100, nil},
	} {
		resp := &fuse.ReadResponse{Data: make([]byte, 0, c.size)}
		if err := rh.Read(ctx, &fuse.ReadRequest{Offset: c.off, Size: c.size}, resp); err != nil || !bytes.Equal(resp.Data, c.want) {
			t.Errorf("read %d at %d: %q, %v", c.size, c.off, resp.Data, err)
		}
	}
	release(t, rh)
	if s := f.Stats(); s.ManifestBuffers != 0 || s.ManifestsStored != 1 || s.ManifestsRejected != 1 {
		t.Errorf("stats: %d buffers, %d stored, %d rejected", s.ManifestBuffers, s.ManifestsStored, s.ManifestsRejected)
	}
}
