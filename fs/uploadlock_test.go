package fs

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"bazil.org/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
)

// gateDriver delays the listings of the paths below one prefix: the first
// one signals entered and waits for release, the way a slow backend stalls
// one repository's upload resolution (a List plus a Stat per upload, and a
// resume that may re-hash the whole upload).
type gateDriver struct {
	driver.StorageDriver
	prefix  string
	once    sync.Once
	entered chan struct{}
	release chan struct{}
	armed   chan struct{} // closed to arm the gate
}

func (g *gateDriver) List(ctx context.Context, p string) ([]string, error) {
	select {
	case <-g.armed:
		if strings.Contains(p, g.prefix) {
			g.once.Do(func() { close(g.entered) })
			<-g.release
		}
	default:
	}
	return g.StorageDriver.List(ctx, p)
}

// safetyTimeout only keeps a broken build from hanging the test binary;
// the test asserts the order of events, not their timing.
const safetyTimeout = 30 * time.Second

// A resume stalled in one repository does not hold up the create, write
// and commit of an upload in another: upload names are locked per key.
func TestUploadLocksArePerKey(t *testing.T) {
	ctx := context.Background()
	g := &gateDriver{
		StorageDriver: inmemory.New(),
		prefix:        "/repositories/slow/_uploads",
		entered:       make(chan struct{}),
		release:       make(chan struct{}),
		armed:         make(chan struct{}),
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(g, store.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	f := New(st, Options{Logger: logger})
	defer f.closeUploads()

	// An upload left half-done in "slow", to be resumed.
	slowContent := []byte("slow upload content")
	slowName := digest.FromBytes(slowContent).String()
	slowRepo, err := st.Repository("slow")
	if err != nil {
		t.Fatal(err)
	}
	up, err := slowRepo.Uploads().Create(ctx, digest.Digest(slowName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(slowContent[:4]); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}

	close(g.armed)
	resumed := make(chan error, 1)
	go func() {
		st, err := f.acquireUpload(ctx, fileKey{"slow", slowName}, false)
		if err == nil {
			f.releaseUpload(st)
		}
		resumed <- err
	}()
	select {
	case <-g.entered:
	case <-time.After(safetyTimeout):
		t.Fatal("the resume never reached storage")
	}

	// Meanwhile a whole push in "fast": create, write, close.
	fastContent := []byte("fast upload content")
	fastName := digest.FromBytes(fastContent).String()
	pushed := make(chan error, 1)
	go func() {
		dir := newUploadsDir(f, "fast")
		_, h, err := dir.Create(ctx, &fuse.CreateRequest{Name: fastName, Flags: fuse.OpenWriteOnly}, &fuse.CreateResponse{})
		if err != nil {
			pushed <- err
			return
		}
		uh := h.(*uploadHandle)
		if err := uh.Write(ctx, &fuse.WriteRequest{Data: fastContent}, &fuse.WriteResponse{}); err != nil {
			pushed <- err
			return
		}
		if err := uh.Flush(ctx, &fuse.FlushRequest{}); err != nil {
			pushed <- err
			return
		}
		pushed <- uh.Release(ctx, &fuse.ReleaseRequest{})
	}()
	select {
	case err := <-pushed:
		if err != nil {
			t.Fatalf("push in another repository: %v", err)
		}
	case <-time.After(safetyTimeout):
		close(g.release)
		t.Fatal("a push in another repository waited for the stalled resume")
	}
	select {
	case <-resumed:
		t.Fatal("the resume finished before it was released")
	default:
	}
	fastRepo, err := st.Repository("fast")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fastRepo.Layers().Stat(ctx, digest.Digest(fastName)); err != nil {
		t.Errorf("the pushed layer is not linked: %v", err)
	}

	close(g.release)
	if err := <-resumed; err != nil {
		t.Errorf("resume: %v", err)
	}
	if n := f.uploadKeys.held(); n != 0 {
		t.Errorf("%d upload keys still locked", n)
	}
}

// The same key is exclusive; a key nobody holds leaves nothing behind.
func TestKeyLocks(t *testing.T) {
	var l keyLocks
	k := fileKey{"r", "a"}
	unlock := l.lock(k)
	other := l.lock(fileKey{"r", "b"}) // another key: does not wait
	acquired := make(chan func())
	go func() { acquired <- l.lock(k) }()
	for waiting := false; !waiting; {
		l.mu.Lock()
		waiting = l.m[k].refs == 2
		l.mu.Unlock()
		if !waiting {
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case <-acquired:
		t.Fatal("a held key was locked twice")
	default:
	}
	unlock()
	(<-acquired)()
	other()
	if n := l.held(); n != 0 {
		t.Errorf("%d keys left in the map", n)
	}
}
