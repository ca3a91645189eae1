package store

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func blobData(t *testing.T, s Store, d digest.Digest) ([]byte, bool) {
	t.Helper()
	b, err := s.(*storage).driver.GetContent(context.Background(), mustPath(blobDataPathSpec{digest: d}))
	if isNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

// TestUploadResumeAfterRestart drops the store mid-upload (after a flush)
// and finishes on a new store over the same driver, from the saved hash
// state: the data is not read again.
func TestUploadResumeAfterRestart(t *testing.T) {
	ctx := context.Background()
	content := randomBytes(1, 300_000)
	dgst := digest.FromBytes(content)
	cd := &countingDriver{StorageDriver: inmemory.New()}

	s1 := newStore(t, cd)
	up, err := repo(t, s1, "a/b").Uploads().Create(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	id := up.ID()
	if _, err := up.Write(content[:100_000]); err != nil {
		t.Fatal(err)
	}
	if err := up.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// s1 and up are dropped here, as in a crash after the flush.

	s2 := newStore(t, cd)
	r := repo(t, s2, "a/b")
	infos, err := r.Uploads().List(ctx)
	if err != nil || len(infos) != 1 || infos[0].ID != id || infos[0].Size != 100_000 || infos[0].Expected != dgst {
		t.Fatalf("List = %+v, %v", infos, err)
	}
	reads := cd.blobReads.Load()
	up2, err := r.Uploads().Resume(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if cd.blobReads.Load() != reads {
		t.Fatal("Resume read the upload's data despite a matching hash state")
	}
	if up2.Size() != 100_000 || up2.Expected() != dgst {
		t.Fatalf("resumed at %d for %s", up2.Size(), up2.Expected())
	}
	if _, err := up2.WriteAt(content[100_000:], 100_000); err != nil {
		t.Fatal(err)
	}
	desc, err := up2.Commit(ctx)
	if err != nil || desc.Digest != dgst || desc.Size != int64(len(content)) {
		t.Fatalf("Commit = %+v, %v", desc, err)
	}
	if b, ok := blobData(t, s2, dgst); !ok || !bytes.Equal(b, content) {
		t.Fatal("blob data wrong after resumed commit")
	}
	if infos, _ := r.Uploads().List(ctx); len(infos) != 0 {
		t.Fatalf("upload left behind: %+v", infos)
	}
}

// TestUploadResumeRehashes resumes where no hash state matches the data's
// size (the data grew after the last flush): the data is hashed once.
func TestUploadResumeRehashes(t *testing.T) {
	ctx := context.Background()
	content := randomBytes(2, 50_000)
	dgst := digest.FromBytes(content)
	cd := &countingDriver{StorageDriver: inmemory.New()}
	s1 := newStore(t, cd)
	up, err := repo(t, s1, "r").Uploads().Create(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(content[:10_000]); err != nil {
		t.Fatal(err)
	}
	if err := up.Flush(ctx); err != nil { // state saved at 10000
		t.Fatal(err)
	}
	if _, err := up.Write(content[10_000:30_000]); err != nil { // no flush: no state at 30000
		t.Fatal(err)
	}
	// The bytes reach storage behind the write; wait for them, as a
	// crash after they were stored but before the next flush would leave.
	if err := up.(*upload).settle(); err != nil {
		t.Fatal(err)
	}

	s2 := newStore(t, cd)
	reads := cd.blobReads.Load()
	up2, err := repo(t, s2, "r").Uploads().Resume(ctx, up.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got := cd.blobReads.Load() - reads; got != 1 {
		t.Fatalf("Resume read the data %d times, want once", got)
	}
	if up2.Size() != 30_000 {
		t.Fatalf("resumed at %d", up2.Size())
	}
	if _, err := up2.Write(content[30_000:]); err != nil {
		t.Fatal(err)
	}
	if desc, err := up2.Commit(ctx); err != nil || desc.Digest != dgst {
		t.Fatalf("Commit = %+v, %v", desc, err)
	}
}

// TestUploadMismatchThenRest: a commit of an incomplete or wrong upload fails
// with the digests and links nothing; appending the rest then commits, on
// the same value and after a resume.
func TestUploadMismatchThenRest(t *testing.T) {
	ctx := context.Background()
	content := randomBytes(3, 20_000)
	dgst := digest.FromBytes(content)
	for _, tc := range []struct {
		dc     driverCase
		resume bool
	}{{drivers[0], false}, {drivers[0], true}, {drivers[1], false}, {drivers[1], true}} {
		resume := tc.resume
		s := newStore(t, tc.dc.new(t, ""))
		r := repo(t, s, "r")
		up, err := r.Uploads().Create(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(content[:8000]); err != nil {
			t.Fatal(err)
		}
		_, err = up.Commit(ctx)
		var mm *DigestMismatchError
		if !errors.As(err, &mm) || mm.Expected != dgst || mm.Actual != digest.FromBytes(content[:8000]) || mm.Size != 8000 {
			t.Fatalf("Commit of a partial upload = %v", err)
		}
		if l, _ := r.Layers().List(ctx); len(l) != 0 {
			t.Fatalf("mismatch linked %v", l)
		}
		if _, ok := blobData(t, s, dgst); ok {
			t.Fatal("mismatch stored the blob")
		}
		if info, err := r.Uploads().Stat(ctx, up.ID()); err != nil || info.Size != 8000 {
			t.Fatalf("upload after mismatch: %+v, %v", info, err)
		}
		if resume {
			if err := up.Close(); err != nil {
				t.Fatal(err)
			}
			r2 := repo(t, newStore(t, s.(*storage).driver), "r")
			if up, err = r2.Uploads().Resume(ctx, up.ID()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := up.WriteAt(content[8000:], 8000); err != nil {
			t.Fatal(err)
		}
		if desc, err := up.Commit(ctx); err != nil || desc.Digest != dgst {
			t.Fatalf("Commit after the rest (resume=%v) = %+v, %v", resume, desc, err)
		}
		if _, err := r.Layers().Stat(ctx, dgst); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUploadSameContentConcurrently: two uploads of one blob both succeed,
// and the blob is stored once.
func TestUploadSameContentConcurrently(t *testing.T) {
	content := randomBytes(4, 100_000)
	dgst := digest.FromBytes(content)
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			testSameContentConcurrently(t, dc.new(t, ""), content, dgst)
		})
	}
}

func testSameContentConcurrently(t *testing.T, d driver.StorageDriver, content []byte, dgst digest.Digest) {
	ctx := context.Background()
	s := newStore(t, d)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			r, _ := s.Repository("r")
			up, err := r.Uploads().Create(ctx, dgst)
			if err != nil {
				errs[i] = err
				return
			}
			for off := 0; off < len(content); off += 7000 {
				if _, err := up.Write(content[off:min(off+7000, len(content))]); err != nil {
					errs[i] = err
					return
				}
			}
			_, errs[i] = up.Commit(ctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
	}
	var blobs int
	for p, c := range files(snapshot(t, d)) {
		if strings.HasPrefix(p, storageRoot+"/blobs/") {
			blobs++
			if c != string(content) {
				t.Fatalf("blob %s has wrong content", p)
			}
		}
	}
	if blobs != 1 {
		t.Fatalf("%d blobs stored, want 1", blobs)
	}
	r, _ := s.Repository("r")
	if ups, _ := r.Uploads().List(ctx); len(ups) != 0 {
		t.Fatalf("uploads left: %+v", ups)
	}
}

func TestUploadZeroLength(t *testing.T) {
	ctx := context.Background()
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			s := newStore(t, dc.new(t, ""))
			r := repo(t, s, "empty/blob")
			dgst := digest.FromBytes(nil)
			up, err := r.Uploads().Create(ctx, dgst)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := up.Commit(ctx)
			if err != nil || desc.Size != 0 || desc.Digest != dgst {
				t.Fatalf("Commit = %+v, %v", desc, err)
			}
			br, err := r.Layers().Open(ctx, dgst)
			if err != nil {
				t.Fatal(err)
			}
			defer br.Close()
			if br.Size() != 0 {
				t.Fatalf("size %d", br.Size())
			}
			if n, err := br.ReadAt(make([]byte, 1), 0); n != 0 || err == nil {
				t.Fatalf("ReadAt of empty blob = %d, %v", n, err)
			}
		})
	}
}

func TestUploadWriteAtWrongOffset(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, inmemory.New())
	r := repo(t, s, "r")
	up, err := r.Uploads().Create(ctx, digest.FromString("abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Cancel(ctx)
	if _, err := up.WriteAt([]byte("abc"), 0); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 2, 4, -1} {
		if n, err := up.WriteAt([]byte("def"), off); !errors.Is(err, ErrInvalidOffset) || n != 0 {
			t.Fatalf("WriteAt at %d = %d, %v; want ErrInvalidOffset", off, n, err)
		}
	}
	if up.Size() != 3 {
		t.Fatalf("size %d after refused writes", up.Size())
	}
	if _, err := up.WriteAt([]byte("def"), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUploadBadIDs: IDs that are not canonical UUIDs are unknown uploads and
// never reach the driver as paths.
func TestUploadBadIDs(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	loadTree(t, d, testdataRoot)
	s := newStore(t, d)
	r := repo(t, s, "hello")
	before := snapshot(t, d)
	for _, id := range []string{
		"", "..", "../../library/ubuntu", "x/../" + tdUploadID, tdUploadID + "/data",
		"0B7E6A9C-3F1D-4C2E-9A55-6D3C1F2E8B40", "{" + tdUploadID + "}", "urn:uuid:" + tdUploadID,
		"0b7e6a9c3f1d4c2e9a556d3c1f2e8b40", "_uploads", "sha256:" + tdManHello.Encoded(),
	} {
		if _, err := r.Uploads().Resume(ctx, id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("Resume(%q) = %v", id, err)
		}
		if _, err := r.Uploads().Stat(ctx, id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("Stat(%q) = %v", id, err)
		}
		if err := r.Uploads().Cancel(ctx, id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("Cancel(%q) = %v", id, err)
		}
	}
	if diff := diffSnapshots(before, snapshot(t, d)); diff != "" {
		t.Fatalf("bad IDs changed storage:\n%s", diff)
	}
	if _, err := r.Uploads().Create(ctx, "sha256:abc"); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("Create with a bad digest: %v", err)
	}
	if _, err := r.Uploads().Create(ctx, digest.SHA512.FromString("x")); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("Create with sha512: %v", err)
	}
	if diff := diffSnapshots(before, snapshot(t, d)); diff != "" {
		t.Fatalf("refused creates changed storage:\n%s", diff)
	}
}

func TestUploadCancel(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	s := newStore(t, d)
	r := repo(t, s, "r")
	up, err := r.Uploads().Create(ctx, digest.FromString("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Uploads().Cancel(ctx, up.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Uploads().Stat(ctx, up.ID()); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("Stat after Cancel: %v", err)
	}
	if err := r.Uploads().Cancel(ctx, up.ID()); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("second Cancel: %v", err)
	}
	if snap := files(snapshot(t, d)); len(snap) != 0 {
		t.Fatalf("cancel left %v", snap)
	}
}

// TestUploadResumeBadHashState: an unreadable state at the data's size is
// ignored and the data re-hashed.
func TestUploadResumeBadHashState(t *testing.T) {
	ctx := context.Background()
	content := randomBytes(6, 40_000)
	dgst := digest.FromBytes(content)
	d := inmemory.New()
	up, err := repo(t, newStore(t, d), "r").Uploads().Create(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(content[:25_000]); err != nil {
		t.Fatal(err)
	}
	if err := up.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	state := mustPath(uploadHashStatePathSpec{name: "r", id: up.ID(), offset: 25_000})
	if err := d.PutContent(ctx, state, []byte("sha\x03 not a state")); err != nil {
		t.Fatal(err)
	}
	up2, err := repo(t, newStore(t, d), "r").Uploads().Resume(ctx, up.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up2.Write(content[25_000:]); err != nil {
		t.Fatal(err)
	}
	if desc, err := up2.Commit(ctx); err != nil || desc.Digest != dgst {
		t.Fatalf("Commit = %+v, %v", desc, err)
	}
}

// TestUploadCommittedByAnotherStore: two stores over one storage (two
// mounts of one bucket) hold the same upload open, one having resumed what
// the other started, and both commit it. Whichever moves the data into the
// blob store first, the other finds the data gone but the blob there with
// the digest and size it hashed, so it links the blob and succeeds: before
// its commit starts, or between its check for the blob and its move. Data
// that vanished without a blob (the other cancelled) still fails.
func TestUploadCommittedByAnotherStore(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name+"/after", func(t *testing.T) { testCommittedByAnother(t, dc.new(t, ""), false) })
		t.Run(dc.name+"/during", func(t *testing.T) { testCommittedByAnother(t, dc.new(t, ""), true) })
	}
}

// moveHook runs before before every Move.
type moveHook struct {
	driver.StorageDriver
	before func()
}

func (m *moveHook) Move(ctx context.Context, src, dst string) error {
	m.before()
	return m.StorageDriver.Move(ctx, src, dst)
}

// StageWriter forwards driver.Stager (the S3 driver's).
func (m *moveHook) StageWriter(ctx context.Context, dst, state string, appending bool) (driver.FileWriter, error) {
	st, ok := m.StorageDriver.(driver.Stager)
	if !ok {
		return nil, driver.UnsupportedMethodError{Method: "StageWriter", Driver: m.Name()}
	}
	return st.StageWriter(ctx, dst, state, appending)
}

func testCommittedByAnother(t *testing.T, d driver.StorageDriver, during bool) {
	ctx := context.Background()
	content := randomBytes(9, 50_000)
	dgst := digest.FromBytes(content)
	var up1 Upload
	commit1 := func() {
		if _, err := up1.Commit(ctx); err != nil {
			t.Errorf("first commit: %v", err)
		}
	}
	hook := &moveHook{StorageDriver: d, before: func() {}}
	s1, s2 := newStore(t, d), newStore(t, hook)
	start := func(content []byte) Upload {
		var err error
		up1, err = repo(t, s1, "r").Uploads().Create(ctx, digest.FromBytes(content))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up1.Write(content); err != nil {
			t.Fatal(err)
		}
		if err := up1.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		up2, err := repo(t, s2, "r").Uploads().Resume(ctx, up1.ID())
		if err != nil {
			t.Fatal(err)
		}
		return up2
	}

	up2 := start(content)
	if during {
		hook.before = func() { hook.before = func() {}; commit1() }
	} else {
		commit1()
	}
	desc, err := up2.Commit(ctx)
	if err != nil || desc.Digest != dgst || desc.Size != int64(len(content)) {
		t.Fatalf("second commit = %+v, %v; want %s", desc, err, dgst)
	}
	if got, ok := blobData(t, s2, dgst); !ok || !bytes.Equal(got, content) {
		t.Error("blob missing or wrong after both commits")
	}
	if _, err := repo(t, s2, "r").Layers().Stat(ctx, dgst); err != nil {
		t.Errorf("layer not linked after both commits: %v", err)
	}
	if ups, err := repo(t, s2, "r").Uploads().List(ctx); err != nil || len(ups) != 0 {
		t.Errorf("uploads left: %+v, %v", ups, err)
	}

	// Cancelled through the first store: no blob, so no success.
	other := randomBytes(10, 1000)
	up2 = start(other)
	if err := up1.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := up2.Commit(ctx); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("commit of an upload cancelled elsewhere = %v, want ErrUploadUnknown", err)
	}
	if _, ok := blobData(t, s2, digest.FromBytes(other)); ok {
		t.Error("a cancelled upload's blob was stored")
	}
}
