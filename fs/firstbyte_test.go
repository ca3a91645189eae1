package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/driver/testsuite"
)

// callsByMethod returns the store's driver calls so far, by method.
func (m *testMount) callsByMethod() map[string]int64 {
	return maps.Clone(m.fs.Stats().DriverCalls)
}

// callsSince returns the calls made since before, by method, leaving out
// methods with none.
func callsSince(before, after map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for op, n := range after {
		if d := n - before[op]; d != 0 {
			out[op] = d
		}
	}
	return out
}

// readFirstByte opens p, reads one byte, fstats and closes it, as
// head -c1 does.
func readFirstByte(p string) (byte, error) {
	b, err := readFirst(p, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// readFirst opens p, reads n bytes with one read(2), fstats and closes it.
func readFirst(p string, n int) ([]byte, error) {
	f, err := openFile(p, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	if _, err := f.Stat(); err != nil {
		return nil, err
	}
	return b, nil
}

// chainDriver makes every call it records take at least hold, as a
// request to remote storage does, so that the calls an operation makes
// one after the other can be told from those it makes at once: a call
// begun after another ended waited for it, two that overlap did not.
type chainDriver struct {
	driver.StorageDriver
	hold time.Duration
	on   atomic.Bool
	mu   sync.Mutex
	// spans are the calls recorded while on; guarded by mu.
	spans [][2]time.Time
}

func (c *chainDriver) call(fn func()) {
	if !c.on.Load() {
		fn()
		return
	}
	start := time.Now()
	time.Sleep(c.hold)
	fn()
	c.mu.Lock()
	c.spans = append(c.spans, [2]time.Time{start, time.Now()})
	c.mu.Unlock()
}

// record starts recording calls, forgetting those recorded before.
func (c *chainDriver) record() {
	c.mu.Lock()
	c.spans = nil
	c.mu.Unlock()
	c.on.Store(true)
}

// inARow stops recording and returns the most calls recorded one after
// the other: the longest chain of calls each begun after the last ended.
func (c *chainDriver) inARow() int {
	c.on.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	sort.Slice(c.spans, func(i, j int) bool { return c.spans[i][0].Before(c.spans[j][0]) })
	depth := make([]int, len(c.spans))
	most := 0
	for i, s := range c.spans {
		depth[i] = 1
		for j := range i {
			if !c.spans[j][1].After(s[0]) {
				depth[i] = max(depth[i], depth[j]+1)
			}
		}
		most = max(most, depth[i])
	}
	return most
}

func (c *chainDriver) Stat(ctx context.Context, p string) (fi driver.FileInfo, err error) {
	c.call(func() { fi, err = c.StorageDriver.Stat(ctx, p) })
	return fi, err
}

func (c *chainDriver) List(ctx context.Context, p string) (l []string, err error) {
	c.call(func() { l, err = c.StorageDriver.List(ctx, p) })
	return l, err
}

func (c *chainDriver) Reader(ctx context.Context, p string, off int64) (rc io.ReadCloser, err error) {
	c.call(func() { rc, err = c.StorageDriver.Reader(ctx, p, off) })
	return rc, err
}

func (c *chainDriver) GetContent(ctx context.Context, p string) (b []byte, err error) {
	c.call(func() { b, err = c.StorageDriver.GetContent(ctx, p) })
	return b, err
}

func (c *chainDriver) Walk(ctx context.Context, p string, fn driver.WalkFn) (err error) {
	c.call(func() { err = c.StorageDriver.Walk(ctx, p, fn) })
	return err
}

// TestFirstByteDriverCalls pins what head -c1 (or a first read(2) of 16
// KiB) of a layer through a fresh mount asks storage (issue 15, row S5), on a driver that tells an
// object's size with its first bytes as S3 does: one List per namespace
// directory of the path, then for the layer at once one Stat of its link
// and one Reader of its data's first bytes, which tells the data's size
// and which the first read is served from. So a repository's layer is two
// requests in a row (it was three: the read's block load came after the
// lookup), and nothing else is asked. The link is not read (its name is
// its content) and the open that follows the lookup asks nothing more. An
// open the kernel sends without a lookup (the name cached) states the link
// and the data again, so that a layer another writer deleted is not
// opened.
func TestFirstByteDriverCalls(t *testing.T) {
	cd := &chainDriver{StorageDriver: testsuite.SizeReporting{StorageDriver: inmemory.New()}, hold: 50 * time.Millisecond}
	m := newMount(t, mountConfig{entryTTL: time.Hour, drv: cd})
	for _, c := range []struct {
		repo  string
		lists int64
		read  int // bytes of the first read(2)
	}{{"app", 1, 1}, {"team/app", 2, 1}, {"other", 1, 16 << 10}} {
		content := randomBytes(t, 300<<10)
		d := m.pushBlob(c.repo, content)
		p := m.path(c.repo, "_layers", d.String())
		before := m.callsByMethod()
		cd.record()
		var b []byte
		m.must("head -c1 "+p, func() (err error) { b, err = readFirst(p, c.read); return err })
		if !bytes.Equal(b, content[:c.read]) {
			t.Fatalf("%s: the first %d bytes differ", c.repo, c.read)
		}
		inARow := cd.inARow()
		got := callsSince(before, m.callsByMethod())
		want := map[string]int64{"List": c.lists, "Stat": 1, "Reader": 1}
		if !maps.Equal(got, want) {
			t.Errorf("%s: head -c1 on a fresh path made the driver calls %v, want %v", c.repo, got, want)
		}
		if want := int(c.lists) + 1; inARow != want {
			t.Errorf("%s: head -c1 on a fresh path made %d driver calls in a row, want %d", c.repo, inARow, want)
		}

		before = m.callsByMethod()
		m.must("head -c1 again "+p, func() (err error) { _, err = readFirstByte(p); return err })
		got = callsSince(before, m.callsByMethod())
		delete(got, "Reader") // the read may load a block
		if want := map[string]int64{"Stat": 2}; !maps.Equal(got, want) {
			t.Errorf("%s: a second open, its name cached, made the driver calls %v, want %v", c.repo, got, want)
		}
	}
}

// TestLayerListedLookupReadsNothing: a lookup of a layer whose directory
// listing the kernel holds (ls -l, find) states the data instead of
// fetching its first bytes, which nobody would read.
func TestLayerListedLookupReadsNothing(t *testing.T) {
	m := newMount(t, mountConfig{drv: testsuite.SizeReporting{StorageDriver: inmemory.New()}})
	var ds []digest.Digest
	for range 3 {
		ds = append(ds, m.pushBlob("app", randomBytes(t, 4<<10)))
	}
	m.readDir(m.path("app", "_layers"))
	before := m.callsByMethod()
	for _, d := range ds {
		if _, err := m.stat(m.path("app", "_layers", d.String())); err != nil {
			t.Fatal(err)
		}
	}
	got := callsSince(before, m.callsByMethod())
	if want := map[string]int64{"Stat": 6}; !maps.Equal(got, want) {
		t.Errorf("ls -l of _layers made the driver calls %v, want %v", got, want)
	}
}

// TestOpenLongAfterLookupChecksAgain: a lookup vouches only for the open
// that follows it at once in the same thread. Here the thread that looked
// the layer up opens it later, after another writer unlinked it, with the
// name still cached by the kernel (so no lookup comes first): the open
// states the link again and fails.
func TestOpenLongAfterLookupChecksAgain(t *testing.T) {
	m := newMount(t, mountConfig{entryTTL: time.Hour})
	d := m.pushBlob("app", randomBytes(t, 4<<10))
	p := m.path("app", "_layers", d.String())
	err := m.do(func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if _, err := os.Stat(p); err != nil {
			return err
		}
		if err := m.repo("app").Layers().Unlink(context.Background(), d); err != nil {
			t.Error(err)
		}
		time.Sleep(foundFresh + 50*time.Millisecond)
		f, err := openFile(p, os.O_RDONLY)
		if err == nil {
			f.Close()
		}
		return err
	})
	wantErrno(t, "open of an unlinked layer, long after its lookup", err, syscall.ENOENT)
}

// TestFirstBytesLookupErrors: fetching the first bytes changes no answer
// of a lookup. On a driver that tells sizes, as on one that does not, a
// missing repository and a layer not linked are ENOENT, and a layer whose
// blob's data is gone gets the same error from stat and open.
func TestFirstBytesLookupErrors(t *testing.T) {
	errsOf := func(drv driver.StorageDriver) []error {
		m := newMount(t, mountConfig{drv: drv})
		d := m.pushBlob("app", randomBytes(t, 4<<10))
		gone := m.pushBlob("app", randomBytes(t, 4<<10))
		if err := drv.Delete(context.Background(), "/docker/registry/v2/blobs/sha256/"+gone.Encoded()[:2]+"/"+gone.Encoded()); err != nil {
			t.Fatal(err)
		}
		var out []error
		for _, p := range []string{
			m.path("nope", "_layers", d.String()),
			m.path("app", "_layers", digest.FromString("not linked").String()),
			m.path("app", "_layers", gone.String()),
		} {
			_, err := m.stat(p)
			out = append(out, err)
			_, err = readFirst(p, 1)
			out = append(out, err)
		}
		return out
	}
	reporting, plain := errsOf(testsuite.SizeReporting{StorageDriver: inmemory.New()}), errsOf(inmemory.New())
	for i := range reporting {
		var e1, e2 syscall.Errno
		if !errors.As(reporting[i], &e1) || !errors.As(plain[i], &e2) || e1 != e2 || (i < 4 && e1 != syscall.ENOENT) {
			t.Errorf("case %d: %v with first bytes, %v without; want the same errno (ENOENT for the first four)", i, reporting[i], plain[i])
		}
	}
}
