package fs

import (
	"context"
	"io"
	"maps"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
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
	f, err := openFile(p, os.O_RDONLY)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := io.ReadFull(f, b); err != nil {
		return 0, err
	}
	if _, err := f.Stat(); err != nil {
		return 0, err
	}
	return b[0], nil
}

// TestFirstByteDriverCalls pins what head -c1 of a layer through a fresh
// mount asks storage (issue 15, row S5): one List per namespace directory
// of the path, and for the layer one Stat of its link and one of its
// data, made at once. The link is not read (its name is its content), the
// open that follows the lookup asks nothing more, the attributes come
// from the lookup, and the read loads a block. An open the kernel sends
// without a lookup (the name cached) states the link and the data again,
// so that a layer another writer deleted is not opened.
func TestFirstByteDriverCalls(t *testing.T) {
	m := newMount(t, mountConfig{entryTTL: time.Hour})
	for _, c := range []struct {
		repo  string
		lists int64
	}{{"app", 1}, {"team/app", 2}} {
		content := randomBytes(t, 300<<10)
		d := m.pushBlob(c.repo, content)
		p := m.path(c.repo, "_layers", d.String())
		before := m.callsByMethod()
		var b byte
		m.must("head -c1 "+p, func() (err error) { b, err = readFirstByte(p); return err })
		if b != content[0] {
			t.Fatalf("%s: first byte %x, want %x", c.repo, b, content[0])
		}
		got := callsSince(before, m.callsByMethod())
		if got["Reader"] < 1 {
			t.Errorf("%s: the first byte made no Reader call: %v", c.repo, got)
		}
		delete(got, "Reader")
		want := map[string]int64{"List": c.lists, "Stat": 2}
		if !maps.Equal(got, want) {
			t.Errorf("%s: head -c1 on a fresh path made the driver calls %v besides Reader, want %v", c.repo, got, want)
		}

		before = m.callsByMethod()
		m.must("head -c1 again "+p, func() (err error) { _, err = readFirstByte(p); return err })
		got = callsSince(before, m.callsByMethod())
		delete(got, "Reader") // the first read's read-ahead may still be loading
		if want := map[string]int64{"Stat": 2}; !maps.Equal(got, want) {
			t.Errorf("%s: a second open, its name cached, made the driver calls %v, want %v", c.repo, got, want)
		}
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
