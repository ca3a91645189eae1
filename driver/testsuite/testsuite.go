// Package testsuite is the conformance suite every storage driver passes. A
// driver's _test.go is a few lines:
//
//	func TestSuite(t *testing.T) {
//		testsuite.Run(t, func(t *testing.T) driver.StorageDriver { return inmemory.New() })
//	}
//
// The suite assumes nothing a driver may not promise: directories exist only
// through the objects below them (empty directories may or may not exist, as
// on S3), and nothing is said about an object and a directory sharing a name.
//
// Every test works under its own random prefix, so tests run in parallel and
// drivers that share a backend (one S3 bucket) can run the suite. A test that
// leaves an object under its prefix fails, which keeps the tests honest about
// cleaning up and catches deletes that do nothing.
package testsuite

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/regfs/regfs/driver"
)

// env is what one test works with.
type env struct {
	t    *testing.T
	d    driver.StorageDriver
	ctx  context.Context
	root string // the test's prefix, "/suite-<random>"
}

var tests = []struct {
	name string
	fn   func(*env)
}{
	{"RoundTrip", testRoundTrip},
	{"ReplaceWithSmaller", testReplaceWithSmaller},
	{"PutContentAtomic", testPutContentAtomic},
	{"ReaderOffsets", testReaderOffsets},
	{"ReadMissingAndDirs", testReadMissingAndDirs},
	{"WriterAppend", testWriterAppend},
	{"WriterAppendMissing", testWriterAppendMissing},
	{"WriterCancel", testWriterCancel},
	{"WriterState", testWriterState},
	{"InvalidPaths", testInvalidPaths},
	{"ValidPaths", testValidPaths},
	{"List", testList},
	{"Move", testMove},
	{"Delete", testDelete},
	{"Stat", testStat},
	{"Walk", testWalk},
	{"ConcurrentReaders", testConcurrentReaders},
	{"ConcurrentWriters", testConcurrentWriters},
	{"CancelledContext", testCancelledContext},
	{"LeftoverCheck", testLeftoverCheck},
	{"NewDirectoriesAppearWhole", testNewDirectoriesAppearWhole},
	{"DeleteShowsNoOtherNames", testDeleteShowsNoOtherNames},
	{"Janitor", testJanitor},
}

// Run runs the conformance suite. newDriver is called once per test and may
// return a fresh driver or a shared one; it should register its own cleanup
// with t.Cleanup.
func Run(t *testing.T, newDriver func(t *testing.T) driver.StorageDriver) {
	RunWith(t, newDriver, Options{})
}

// Options tell the suite what the server under a driver is known to do
// that the driver cannot hide.
type Options struct {
	// EmptyDirsListed, when set, says why the server lists a directory
	// that holds no object (versitygw's posix backend makes the
	// directories of an object before the object, and lists them as
	// common prefixes meanwhile; S3 itself lists only keys): the check
	// that a new directory is listed only with its object is skipped.
	EmptyDirsListed string
}

// RunWith is Run with what opts say of the server.
func RunWith(t *testing.T, newDriver func(t *testing.T) driver.StorageDriver, opts Options) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "NewDirectoriesAppearWhole" && opts.EmptyDirsListed != "" {
				t.Skip(opts.EmptyDirsListed)
			}
			t.Parallel()
			e := newEnv(t, newDriver(t))
			tc.fn(e)
		})
	}
}

// newEnv picks a fresh prefix and fails the test if it leaves objects under
// it. The check runs before the driver's own cleanup (cleanups run last in,
// first out) and with a background context, since t.Context is done by then.
func newEnv(t *testing.T, d driver.StorageDriver) *env {
	e := &env{t: t, d: d, ctx: t.Context(), root: "/suite-" + crand.Text()}
	t.Cleanup(func() {
		ctx := context.Background()
		left, err := leftovers(ctx, d, e.root)
		if err != nil {
			t.Errorf("checking for leftovers under %s: %v", e.root, err)
		}
		if len(left) > 0 {
			t.Errorf("test left %d objects behind: %v", len(left), left)
		}
		// Empty directories are allowed to remain; remove them too.
		if err := d.Delete(ctx, e.root); err != nil && !driver.IsNotFound(err) {
			t.Errorf("removing %s: %v", e.root, err)
		}
	})
	return e
}

// leftovers returns the objects under root.
func leftovers(ctx context.Context, d driver.StorageDriver, root string) ([]string, error) {
	var left []string
	err := d.Walk(ctx, root, func(fi driver.FileInfo) error {
		if !fi.IsDir {
			left = append(left, fi.Path)
		}
		return nil
	})
	if driver.IsNotFound(err) {
		err = nil
	}
	return left, err
}

// p returns the driver path of rel under the test's prefix.
func (e *env) p(rel string) string { return e.root + "/" + rel }

func (e *env) put(path string, content []byte) {
	e.t.Helper()
	if err := e.d.PutContent(e.ctx, path, content); err != nil {
		e.t.Fatalf("PutContent(%s): %v", path, err)
	}
}

func (e *env) get(path string) []byte {
	e.t.Helper()
	data, err := e.d.GetContent(e.ctx, path)
	if err != nil {
		e.t.Fatalf("GetContent(%s): %v", path, err)
	}
	return data
}

func (e *env) del(path string) {
	e.t.Helper()
	if err := e.d.Delete(e.ctx, path); err != nil {
		e.t.Fatalf("Delete(%s): %v", path, err)
	}
}

func (e *env) readAll(path string, offset int64) []byte {
	e.t.Helper()
	r, err := e.d.Reader(e.ctx, path, offset)
	if err != nil {
		e.t.Fatalf("Reader(%s, %d): %v", path, offset, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		e.t.Fatalf("reading %s from %d: %v", path, offset, err)
	}
	return data
}

// write writes content through a new writer in odd-sized chunks, then
// commits and closes it.
func (e *env) write(path string, append bool, content []byte) {
	e.t.Helper()
	w, err := e.d.Writer(e.ctx, path, append)
	if err != nil {
		e.t.Fatalf("Writer(%s, %v): %v", path, append, err)
	}
	start := w.Size()
	if !append && start != 0 {
		e.t.Errorf("Size() of a new writer = %d, want 0", start)
	}
	for rest := content; len(rest) > 0; {
		n := min(len(rest), 64<<10+3)
		if m, err := w.Write(rest[:n]); err != nil || m != n {
			e.t.Fatalf("Write to %s = %d, %v; want %d", path, m, err, n)
		}
		rest = rest[n:]
	}
	if got, want := w.Size(), start+int64(len(content)); got != want {
		e.t.Errorf("Size() after writing = %d, want %d", got, want)
	}
	if err := w.Commit(e.ctx); err != nil {
		e.t.Fatalf("Commit(%s): %v", path, err)
	}
	if err := w.Close(); err != nil {
		e.t.Fatalf("Close(%s): %v", path, err)
	}
}

func (e *env) wantContent(path string, want []byte) {
	e.t.Helper()
	if got := e.get(path); !bytes.Equal(got, want) {
		e.t.Errorf("GetContent(%s): %d bytes differ from the %d expected", path, len(got), len(want))
	}
}

func (e *env) wantNotFound(err error, path string) {
	e.t.Helper()
	var nf driver.PathNotFoundError
	switch {
	case !errors.As(err, &nf):
		e.t.Errorf("error for %s = %v, want PathNotFoundError", path, err)
	case nf.Path != path:
		e.t.Errorf("PathNotFoundError.Path = %q, want %q", nf.Path, path)
	case nf.Driver != e.d.Name() || nf.Driver == "":
		e.t.Errorf("PathNotFoundError.Driver = %q, want %q", nf.Driver, e.d.Name())
	}
}

func (e *env) wantGone(path string) {
	e.t.Helper()
	_, err := e.d.Stat(e.ctx, path)
	e.wantNotFound(err, path)
}

func (e *env) wantOffsetError(err error, path string, offset int64) {
	e.t.Helper()
	var oe driver.InvalidOffsetError
	switch {
	case !errors.As(err, &oe):
		e.t.Errorf("Reader(%s, %d) error = %v, want InvalidOffsetError", path, offset, err)
	case oe.Path != path || oe.Offset != offset:
		e.t.Errorf("InvalidOffsetError{Path: %q, Offset: %d}, want %q, %d", oe.Path, oe.Offset, path, offset)
	case oe.Driver != e.d.Name() || oe.Driver == "":
		e.t.Errorf("InvalidOffsetError.Driver = %q, want %q", oe.Driver, e.d.Name())
	}
}

// randomBytes returns n reproducible bytes, most of them not valid UTF-8.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

var contents = []struct {
	name string
	data []byte
}{
	{"empty", []byte{}},
	{"one-byte", []byte{'x'}},
	{"non-UTF-8", []byte{0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, '\n', 0xed, 0xa0, 0x80}},
	{"3MiB", randomBytes(3<<20+17, 1)},
}

func testRoundTrip(e *env) {
	for _, c := range contents {
		e.t.Run(c.name, func(t *testing.T) {
			e := &env{t: t, d: e.d, ctx: e.ctx, root: e.root}
			path := e.p(c.name)

			e.put(path, c.data)
			e.wantContent(path, c.data)
			if got := e.readAll(path, 0); !bytes.Equal(got, c.data) {
				t.Errorf("Reader after PutContent: %d bytes differ from the %d put", len(got), len(c.data))
			}
			fi, err := e.d.Stat(e.ctx, path)
			if err != nil || fi.Size != int64(len(c.data)) || fi.IsDir || fi.Path != path {
				t.Errorf("Stat = %+v, %v; want object %s of size %d", fi, err, path, len(c.data))
			}
			e.del(path)
			e.wantGone(path)

			e.write(path, false, c.data)
			e.wantContent(path, c.data)
			if got := e.readAll(path, 0); !bytes.Equal(got, c.data) {
				t.Errorf("Reader after Writer: %d bytes differ from the %d written", len(got), len(c.data))
			}
			e.del(path)
		})
	}
}

func testReplaceWithSmaller(e *env) {
	path := e.p("obj")
	large, small := randomBytes(100_000, 2), []byte("small")

	e.put(path, large)
	e.put(path, small)
	e.wantContent(path, small)
	if fi, err := e.d.Stat(e.ctx, path); err != nil || fi.Size != int64(len(small)) {
		e.t.Errorf("Stat after replace = %+v, %v; want size %d", fi, err, len(small))
	}

	// A writer without append starts the object empty.
	e.put(path, large)
	e.write(path, false, small)
	e.wantContent(path, small)
	e.del(path)
}

// testPutContentAtomic replaces an object over and over while others read
// it: every read must see one whole version.
func testPutContentAtomic(e *env) {
	path := e.p("obj")
	a, b := bytes.Repeat([]byte{'a'}, 128<<10), bytes.Repeat([]byte{'b'}, 32<<10)
	e.put(path, a)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := e.d.GetContent(e.ctx, path)
				if err != nil {
					e.t.Errorf("GetContent during replace: %v", err)
					return
				}
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					e.t.Errorf("GetContent during replace saw %d bytes, neither version", len(got))
					return
				}
			}
		})
	}
	for i := range 30 {
		if err := e.d.PutContent(e.ctx, path, [][]byte{a, b}[i%2]); err != nil {
			e.t.Errorf("PutContent: %v", err)
			break
		}
	}
	close(stop)
	wg.Wait()
	e.del(path)
}

func testReaderOffsets(e *env) {
	path := e.p("obj")
	content := randomBytes(4096, 3)
	e.put(path, content)

	for _, off := range []int64{0, 1, 2048, 4095} {
		if got := e.readAll(path, off); !bytes.Equal(got, content[off:]) {
			e.t.Errorf("Reader at %d: %d bytes differ from the %d expected", off, len(got), len(content)-int(off))
		}
	}

	r, err := e.d.Reader(e.ctx, path, 0)
	if err != nil {
		e.t.Fatalf("Reader: %v", err)
	}
	if err := iotest.TestReader(r, content); err != nil {
		e.t.Errorf("Reader breaks the io contract: %v", err)
	}
	r.Close()

	// At the size: a reader at EOF.
	r, err = e.d.Reader(e.ctx, path, int64(len(content)))
	if err != nil {
		e.t.Fatalf("Reader at size: %v", err)
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		e.t.Errorf("Read at size = %d, %v; want 0, EOF", n, err)
	}
	r.Close()

	for _, off := range []int64{-1, int64(len(content)) + 1, 1 << 40} {
		r, err := e.d.Reader(e.ctx, path, off)
		if err == nil {
			r.Close()
		}
		e.wantOffsetError(err, path, off)
	}

	// Offsets on an empty object.
	empty := e.p("empty")
	e.put(empty, nil)
	if got := e.readAll(empty, 0); len(got) != 0 {
		e.t.Errorf("Reader of empty object gave %d bytes", len(got))
	}
	_, err = e.d.Reader(e.ctx, empty, 1)
	e.wantOffsetError(err, empty, 1)

	e.del(path)
	e.del(empty)
}

// testReadMissingAndDirs: reading a missing object or a directory is
// PathNotFoundError (a directory is not an object, as on S3).
func testReadMissingAndDirs(e *env) {
	missing, dir := e.p("missing"), e.p("dir")
	e.put(e.p("dir/child"), []byte("x"))

	for _, path := range []string{missing, dir, e.p("dir/child/below")} {
		_, err := e.d.GetContent(e.ctx, path)
		e.wantNotFound(err, path)
		r, err := e.d.Reader(e.ctx, path, 0)
		if err == nil {
			r.Close()
		}
		e.wantNotFound(err, path)
	}
	_, err := e.d.Stat(e.ctx, missing)
	e.wantNotFound(err, missing)
	e.del(dir)
}

func testWriterAppend(e *env) {
	path := e.p("upload/data")
	parts := [][]byte{randomBytes(100_003, 4), []byte("second"), randomBytes(300_000, 5)}

	w, err := e.d.Writer(e.ctx, path, false)
	if err != nil {
		e.t.Fatalf("Writer: %v", err)
	}
	if w.Size() != 0 {
		e.t.Errorf("new writer Size() = %d, want 0", w.Size())
	}
	w.Write(parts[0])
	if got := w.Size(); got != int64(len(parts[0])) {
		e.t.Errorf("Size() = %d, want %d", got, len(parts[0]))
	}
	if err := w.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.wantContent(path, parts[0])

	// Reopened with append, a writer starts at the size so far; write
	// checks that Size() counts the earlier bytes.
	e.write(path, true, parts[1])
	e.write(path, true, parts[2])
	want := slices.Concat(parts...)
	e.wantContent(path, want)
	if fi, err := e.d.Stat(e.ctx, path); err != nil || fi.Size != int64(len(want)) {
		e.t.Errorf("Stat = %+v, %v; want size %d", fi, err, len(want))
	}
	w, err = e.d.Writer(e.ctx, path, true)
	if err != nil {
		e.t.Fatalf("Writer append: %v", err)
	}
	if w.Size() != int64(len(want)) {
		e.t.Errorf("append writer Size() = %d, want %d", w.Size(), len(want))
	}
	w.Close()
	e.wantContent(path, want)
	e.del(e.p("upload"))
}

func testWriterAppendMissing(e *env) {
	path := e.p("missing")
	w, err := e.d.Writer(e.ctx, path, true)
	if err == nil {
		w.Cancel(e.ctx)
		w.Close()
	}
	e.wantNotFound(err, path)
	e.wantGone(path)

	// A directory is not an object to append to.
	e.put(e.p("dir/child"), nil)
	w, err = e.d.Writer(e.ctx, e.p("dir"), true)
	if err == nil {
		w.Close()
	}
	e.wantNotFound(err, e.p("dir"))
	e.del(e.p("dir"))
}

func testWriterCancel(e *env) {
	path := e.p("obj")
	w, err := e.d.Writer(e.ctx, path, false)
	if err != nil {
		e.t.Fatalf("Writer: %v", err)
	}
	w.Write(randomBytes(10_000, 6))
	if err := w.Cancel(e.ctx); err != nil {
		e.t.Errorf("Cancel: %v", err)
	}
	if err := w.Close(); err != nil {
		e.t.Errorf("Close after Cancel: %v", err)
	}
	e.wantGone(path)

	// Cancel of an appending writer discards the earlier bytes too.
	e.put(path, []byte("earlier"))
	w, err = e.d.Writer(e.ctx, path, true)
	if err != nil {
		e.t.Fatalf("Writer append: %v", err)
	}
	w.Write([]byte("later"))
	if err := w.Cancel(e.ctx); err != nil {
		e.t.Errorf("Cancel: %v", err)
	}
	w.Close()
	e.wantGone(path)
}

// testWriterState: a writer refuses to be used once closed, committed or
// cancelled, and a second Close is harmless (deferred Close is common).
func testWriterState(e *env) {
	path := e.p("obj")
	w, err := e.d.Writer(e.ctx, path, false)
	if err != nil {
		e.t.Fatalf("Writer: %v", err)
	}
	w.Write([]byte("abc"))
	if err := w.Commit(e.ctx); err != nil {
		e.t.Fatalf("Commit: %v", err)
	}
	if _, err := w.Write([]byte("more")); !errors.Is(err, fs.ErrClosed) {
		e.t.Errorf("Write after Commit = %v, want fs.ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		e.t.Errorf("Close after Commit: %v", err)
	}
	if err := w.Close(); err != nil {
		e.t.Errorf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("more")); !errors.Is(err, fs.ErrClosed) {
		e.t.Errorf("Write after Close = %v, want fs.ErrClosed", err)
	}
	if err := w.Commit(e.ctx); !errors.Is(err, fs.ErrClosed) {
		e.t.Errorf("Commit after Close = %v, want fs.ErrClosed", err)
	}
	if err := w.Cancel(e.ctx); !errors.Is(err, fs.ErrClosed) {
		e.t.Errorf("Cancel after Close = %v, want fs.ErrClosed", err)
	}
	e.wantContent(path, []byte("abc"))
	e.del(path)
}

// call is one driver method called with a path under test.
type call struct {
	name   string
	rootOK bool
	fn     func(e *env, path string) error
}

func calls(existing string) []call {
	return []call{
		{"GetContent", false, func(e *env, p string) error { _, err := e.d.GetContent(e.ctx, p); return err }},
		{"PutContent", false, func(e *env, p string) error { return e.d.PutContent(e.ctx, p, []byte("x")) }},
		{"Reader", false, func(e *env, p string) error {
			r, err := e.d.Reader(e.ctx, p, 0)
			if err == nil {
				r.Close()
			}
			return err
		}},
		{"Writer", false, func(e *env, p string) error { return closeWriter(e.d.Writer(e.ctx, p, false)) }},
		{"Writer(append)", false, func(e *env, p string) error { return closeWriter(e.d.Writer(e.ctx, p, true)) }},
		{"Stat", true, func(e *env, p string) error { _, err := e.d.Stat(e.ctx, p); return err }},
		{"List", true, func(e *env, p string) error { _, err := e.d.List(e.ctx, p); return err }},
		{"Move(src)", false, func(e *env, p string) error { return e.d.Move(e.ctx, p, existing+"-moved") }},
		{"Move(dst)", false, func(e *env, p string) error { return e.d.Move(e.ctx, existing, p) }},
		{"Delete", true, func(e *env, p string) error {
			if p == "/" {
				return nil // valid, but would empty a shared backend
			}
			return e.d.Delete(e.ctx, p)
		}},
		{"Walk", true, func(e *env, p string) error {
			return e.d.Walk(e.ctx, p, func(driver.FileInfo) error { return driver.ErrSkipDir })
		}},
	}
}

func closeWriter(w driver.FileWriter, err error) error {
	if err == nil {
		w.Cancel(context.Background())
		w.Close()
	}
	return err
}

func testInvalidPaths(e *env) {
	existing := e.p("existing")
	e.put(existing, []byte("keep"))
	bad := []string{
		"", "a", "a/b", "obj", "//", "//a", "/a/", "/a//b", "/.", "/..", "/./a",
		"/a/.", "/a/..", "/a/../b", "/a b", "/a\x00b", "/a\nb", "/a:b", "/a\\b",
		"/caf\u00e9", "/a*", "/a?b", "/~a",
		e.root + "/", e.root + "//x", e.root + "/../x", e.root + "/./x", e.root + "/x y",
	}
	for _, c := range calls(existing) {
		paths := bad
		if !c.rootOK {
			paths = append(slices.Clip(bad), "/")
		}
		for _, p := range paths {
			err := c.fn(e, p)
			var ip driver.InvalidPathError
			switch {
			case !errors.As(err, &ip):
				e.t.Errorf("%s(%q) = %v, want InvalidPathError", c.name, p, err)
			case ip.Path != p:
				e.t.Errorf("%s(%q): InvalidPathError.Path = %q", c.name, p, ip.Path)
			case ip.Driver != e.d.Name() || ip.Driver == "":
				e.t.Errorf("%s(%q): InvalidPathError.Driver = %q, want %q", c.name, p, ip.Driver, e.d.Name())
			}
		}
	}
	// A negative offset is checked as strictly as a path.
	_, err := e.d.Reader(e.ctx, existing, -5)
	e.wantOffsetError(err, existing, -5)

	e.wantContent(existing, []byte("keep"))
	e.del(existing)
}

func testValidPaths(e *env) {
	rels := []string{
		"a", "A.b_c-1", "_layers", "-", "_", "...", "..a", "a..", ".hidden",
		"sha256/ab/abcdef0123456789", "tags/v1.0.0-rc_1/current/link",
		"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._-",
	}
	for _, rel := range rels {
		p := e.p(rel)
		e.put(p, []byte(rel))
		e.wantContent(p, []byte(rel))
	}
	// "/" is valid where a directory is.
	fi, err := e.d.Stat(e.ctx, "/")
	if err != nil || !fi.IsDir {
		e.t.Errorf(`Stat("/") = %+v, %v; want a directory`, fi, err)
	}
	names, err := e.d.List(e.ctx, "/")
	if err != nil || !slices.Contains(names, e.root) {
		e.t.Errorf(`List("/") = %d names, %v; want them to include %s`, len(names), err, e.root)
	}
	if !slices.IsSorted(names) {
		e.t.Errorf(`List("/") is not sorted`)
	}
	var top []string
	err = e.d.Walk(e.ctx, "/", func(fi driver.FileInfo) error {
		top = append(top, fi.Path)
		return driver.ErrSkipDir
	})
	if err != nil || !slices.Contains(top, e.root) {
		e.t.Errorf(`Walk("/") = %v; visited %d top entries, want %s among them`, err, len(top), e.root)
	}
	for _, rel := range rels {
		e.del(e.p(rel))
	}
}

func testList(e *env) {
	dir := e.p("list")
	for _, rel := range []string{"b", "a/x", "a/y/z", "a-b", "c.d", "A", "_u"} {
		e.put(dir+"/"+rel, []byte(rel))
	}
	check := func(path string, names ...string) {
		e.t.Helper()
		want := make([]string, len(names))
		for i, name := range names {
			want[i] = path + "/" + name
		}
		got, err := e.d.List(e.ctx, path)
		if err != nil || !slices.Equal(got, want) {
			e.t.Errorf("List(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	check(dir, "A", "_u", "a", "a-b", "b", "c.d")
	check(dir+"/a", "x", "y")
	check(dir+"/a/y", "z")
	check(e.root, "list")

	for _, p := range []string{e.p("missing"), dir + "/missing/below", dir + "/b"} {
		_, err := e.d.List(e.ctx, p)
		e.wantNotFound(err, p)
	}
	e.del(dir)
}

func testMove(e *env) {
	src, dst := e.p("src"), e.p("dst")
	content := randomBytes(1<<20, 7)

	e.put(src, content)
	e.put(dst, []byte("an older and different object"))
	if err := e.d.Move(e.ctx, src, dst); err != nil {
		e.t.Fatalf("Move onto an existing object: %v", err)
	}
	e.wantContent(dst, content)
	e.wantGone(src)

	deep := e.p("new/parents/for/dst")
	if err := e.d.Move(e.ctx, dst, deep); err != nil {
		e.t.Fatalf("Move to new parents: %v", err)
	}
	e.wantContent(deep, content)
	e.wantGone(dst)

	err := e.d.Move(e.ctx, src, deep)
	e.wantNotFound(err, src)
	e.wantContent(deep, content)

	e.del(e.p("new"))
}

func testDelete(e *env) {
	// A file; its sibling stays.
	e.put(e.p("d/x"), []byte("x"))
	e.put(e.p("d/y"), []byte("y"))
	e.del(e.p("d/x"))
	e.wantGone(e.p("d/x"))
	e.wantContent(e.p("d/y"), []byte("y"))

	// A folder, recursively.
	for _, rel := range []string{"dir/1", "dir/sub/2", "dir/sub/deeper/3"} {
		e.put(e.p(rel), []byte(rel))
	}
	e.del(e.p("dir"))
	for _, rel := range []string{"dir", "dir/1", "dir/sub", "dir/sub/2", "dir/sub/deeper/3"} {
		e.wantGone(e.p(rel))
	}

	// Prefix safety, for a directory and for an object.
	survivors := []string{"p/ab", "p/a-b", "p/a.b"}
	e.put(e.p("p/a/x"), []byte("x"))
	e.put(e.p("p/ab"), []byte("ab"))
	e.put(e.p("p/a-b"), []byte("a-b"))
	e.put(e.p("p/a.b"), []byte("a.b"))
	e.put(e.p("q/a"), []byte("a"))
	e.put(e.p("q/ab"), []byte("ab"))
	e.del(e.p("p/a"))
	e.del(e.p("q/a"))
	e.wantGone(e.p("p/a"))
	e.wantGone(e.p("q/a"))
	for _, rel := range survivors {
		e.wantContent(e.p(rel), []byte(rel[2:]))
	}
	e.wantContent(e.p("q/ab"), []byte("ab"))

	err := e.d.Delete(e.ctx, e.p("missing"))
	e.wantNotFound(err, e.p("missing"))

	e.del(e.p("d"))
	e.del(e.p("p"))
	e.del(e.p("q"))
}

func testStat(e *env) {
	path := e.p("dir/obj")
	// Backends store modification times with a granularity of up to a
	// second, so allow that much either way.
	before := time.Now().Add(-2 * time.Second)
	e.put(path, randomBytes(1234, 8))
	after := time.Now().Add(2 * time.Second)

	fi, err := e.d.Stat(e.ctx, path)
	if err != nil {
		e.t.Fatalf("Stat: %v", err)
	}
	if fi.Path != path || fi.Size != 1234 || fi.IsDir {
		e.t.Errorf("Stat = %+v; want object %s of 1234 bytes", fi, path)
	}
	if fi.ModTime.Before(before) || fi.ModTime.After(after) {
		e.t.Errorf("Stat ModTime = %v, want between %v and %v", fi.ModTime, before, after)
	}

	fi, err = e.d.Stat(e.ctx, e.p("dir"))
	if err != nil || !fi.IsDir || fi.Path != e.p("dir") {
		e.t.Errorf("Stat of a directory = %+v, %v; want IsDir", fi, err)
	}
	e.del(e.p("dir"))
}

type visit struct {
	path  string
	isDir bool
	size  int64
}

func testWalk(e *env) {
	w := e.p("w")
	for rel, size := range map[string]int{"a/1": 1, "a/2/x": 2, "b": 3, "c/d/e": 4, "c/f": 5} {
		e.put(w+"/"+rel, randomBytes(size, 9))
	}
	walk := func(skip, stop string) ([]visit, error) {
		var got []visit
		err := e.d.Walk(e.ctx, w, func(fi driver.FileInfo) error {
			v := visit{fi.Path, fi.IsDir, 0}
			if !fi.IsDir {
				v.size = fi.Size
			}
			got = append(got, v)
			switch fi.Path {
			case skip:
				return driver.ErrSkipDir
			case stop:
				return errStop
			}
			return nil
		})
		return got, err
	}
	dir := func(rel string) visit { return visit{w + "/" + rel, true, 0} }
	obj := func(rel string, size int64) visit { return visit{w + "/" + rel, false, size} }
	all := []visit{
		dir("a"), obj("a/1", 1), dir("a/2"), obj("a/2/x", 2), obj("b", 3),
		dir("c"), dir("c/d"), obj("c/d/e", 4), obj("c/f", 5),
	}

	got, err := walk("", "")
	if err != nil || !slices.Equal(got, all) {
		e.t.Errorf("Walk = %v, %v;\nwant %v", got, err, all)
	}
	got, err = walk(w+"/a", "")
	if want := slices.Concat(all[:1], all[4:]); err != nil || !slices.Equal(got, want) {
		e.t.Errorf("Walk skipping a = %v, %v;\nwant %v", got, err, want)
	}
	got, err = walk(w+"/b", "") // ErrSkipDir on an object is ignored
	if err != nil || !slices.Equal(got, all) {
		e.t.Errorf("Walk skipping object b = %v, %v;\nwant %v", got, err, all)
	}
	got, err = walk("", w+"/a/2")
	if err != errStop || !slices.Equal(got, all[:3]) {
		e.t.Errorf("Walk stopped at a/2 = %v, %v;\nwant %v, %v", got, err, all[:3], errStop)
	}

	for _, p := range []string{e.p("missing"), w + "/b"} {
		err := e.d.Walk(e.ctx, p, func(driver.FileInfo) error { return nil })
		e.wantNotFound(err, p)
	}
	e.del(w)
}

var errStop = errors.New("stop the walk")

func testConcurrentReaders(e *env) {
	path := e.p("obj")
	content := randomBytes(2<<20+13, 10)
	e.put(path, content)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			for range 25 {
				off := rng.Int64N(int64(len(content)) + 1)
				n := min(rng.Int64N(256<<10), int64(len(content))-off)
				r, err := e.d.Reader(e.ctx, path, off)
				if err != nil {
					e.t.Errorf("Reader(%d): %v", off, err)
					return
				}
				buf := make([]byte, n)
				_, err = io.ReadFull(r, buf)
				r.Close()
				if err != nil {
					e.t.Errorf("reading %d bytes at %d: %v", n, off, err)
					return
				}
				if !bytes.Equal(buf, content[off:off+n]) {
					e.t.Errorf("%d bytes at %d differ", n, off)
					return
				}
			}
		})
	}
	wg.Wait()
	e.del(path)
}

func testConcurrentWriters(e *env) {
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			path := e.p(fmt.Sprintf("w/%d", i))
			w, err := e.d.Writer(e.ctx, path, false)
			if err != nil {
				e.t.Errorf("Writer(%s): %v", path, err)
				return
			}
			defer w.Close()
			content := randomBytes(256<<10+i, byte(20+i))
			for rest := content; len(rest) > 0; rest = rest[min(len(rest), 4096):] {
				if _, err := w.Write(rest[:min(len(rest), 4096)]); err != nil {
					e.t.Errorf("Write(%s): %v", path, err)
					return
				}
			}
			if err := w.Commit(e.ctx); err != nil {
				e.t.Errorf("Commit(%s): %v", path, err)
			}
		})
	}
	wg.Wait()
	for i := range n {
		e.wantContent(e.p(fmt.Sprintf("w/%d", i)), randomBytes(256<<10+i, byte(20+i)))
	}
	e.del(e.p("w"))
}

func testCancelledContext(e *env) {
	existing := e.p("existing")
	e.put(existing, []byte("keep"))

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()

	for _, ctx := range []context.Context{cancelled, expired} {
		ce := &env{t: e.t, d: e.d, ctx: ctx, root: e.root}
		for _, c := range calls(existing) {
			for _, p := range []string{existing, e.p("new")} {
				if err := c.fn(ce, p); !errors.Is(err, ctx.Err()) {
					e.t.Errorf("%s(%s) with a done context = %v, want %v", c.name, p, err, ctx.Err())
				}
			}
		}
		e.wantContent(existing, []byte("keep"))
		e.wantGone(e.p("new"))
		e.wantGone(existing + "-moved")
	}

	// A commit with a done context fails; the writer can still be cancelled.
	w, err := e.d.Writer(e.ctx, e.p("w"), false)
	if err != nil {
		e.t.Fatalf("Writer: %v", err)
	}
	w.Write([]byte("data"))
	if err := w.Commit(cancelled); !errors.Is(err, context.Canceled) {
		e.t.Errorf("Commit with a cancelled context = %v, want context.Canceled", err)
	}
	if err := w.Cancel(e.ctx); err != nil {
		e.t.Errorf("Cancel: %v", err)
	}
	w.Close()

	// A walk stops once its context is cancelled.
	ctx, cancel3 := context.WithCancel(e.ctx)
	defer cancel3()
	e.put(e.p("walk/a"), nil)
	e.put(e.p("walk/b"), nil)
	visited := 0
	err = e.d.Walk(ctx, e.p("walk"), func(driver.FileInfo) error {
		visited++
		cancel3()
		return nil
	})
	if !errors.Is(err, context.Canceled) || visited != 1 {
		e.t.Errorf("Walk cancelled in the first call = %v after %d calls, want context.Canceled after 1", err, visited)
	}

	e.del(existing)
	e.del(e.p("walk"))
}

// testLeftoverCheck makes sure the check that fails untidy tests can fail.
func testLeftoverCheck(e *env) {
	e.put(e.p("a/b/left"), []byte("x"))
	left, err := leftovers(e.ctx, e.d, e.root)
	if err != nil || !slices.Equal(left, []string{e.p("a/b/left")}) {
		e.t.Errorf("leftovers = %q, %v; want the one object", left, err)
	}
	e.del(e.p("a"))
	left, err = leftovers(e.ctx, e.d, e.root)
	if err != nil || len(left) != 0 {
		e.t.Errorf("leftovers after delete = %q, %v; want none", left, err)
	}
}

// testNewDirectoriesAppearWhole: a write into directories that do not exist
// yet (a new tag, a new upload, a blob committed by Move) makes them appear
// with the object in them: a reader that lists a new directory finds its
// object there, never an empty directory (the registry would list it as a
// tag or repository without content).
func testNewDirectoriesAppearWhole(e *env) {
	dir := e.p("tags")
	link := []byte("sha256:0123456789abcdef")
	const n = 60
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			names, err := e.d.List(e.ctx, dir)
			if driver.IsNotFound(err) {
				continue
			}
			if err != nil {
				e.t.Errorf("List(%s): %v", dir, err)
				return
			}
			for _, name := range names {
				if _, err := e.d.Stat(e.ctx, name+"/current/link"); err != nil {
					e.t.Errorf("%s is listed but %s/current/link: %v", name, name, err)
					return
				}
			}
		}
	})
	for i := range n {
		tag := fmt.Sprintf("%s/t%d/current/link", dir, i)
		switch i % 3 {
		case 0:
			if err := e.d.PutContent(e.ctx, tag, link); err != nil {
				e.t.Errorf("PutContent(%s): %v", tag, err)
			}
		case 1:
			src := e.p(fmt.Sprintf("src/%d", i))
			e.put(src, link)
			if err := e.d.Move(e.ctx, src, tag); err != nil {
				e.t.Errorf("Move(%s, %s): %v", src, tag, err)
			}
		case 2:
			w, err := e.d.Writer(e.ctx, tag, false)
			if err != nil {
				e.t.Errorf("Writer(%s): %v", tag, err)
				continue
			}
			w.Write(link)
			w.Close()
		}
	}
	close(stop)
	wg.Wait()
	for i := range n {
		e.wantContent(fmt.Sprintf("%s/t%d/current/link", dir, i), link)
	}
	e.del(dir)
	if _, err := e.d.Stat(e.ctx, e.p("src")); err == nil {
		e.del(e.p("src"))
	}
}

// testDeleteShowsNoOtherNames: while objects and directories are deleted
// and written again, a listing shows only names the test made.
func testDeleteShowsNoOtherNames(e *env) {
	dir := e.p("tags")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range []string{dir, dir + "/t0", dir + "/t1"} {
				names, err := e.d.List(e.ctx, p)
				if driver.IsNotFound(err) {
					continue
				}
				if err != nil {
					e.t.Errorf("List(%s): %v", p, err)
					return
				}
				for _, name := range names {
					switch name {
					case dir + "/t0", dir + "/t1", dir + "/t0/current", dir + "/t1/current":
					default:
						e.t.Errorf("List(%s) shows %s, which the test never made", p, name)
						return
					}
				}
			}
		}
	})
	for i := range 40 {
		tag := fmt.Sprintf("%s/t%d", dir, i%2)
		e.put(tag+"/current/link", []byte("x"))
		e.del(tag)
	}
	close(stop)
	wg.Wait()
	if _, err := e.d.Stat(e.ctx, dir); err == nil {
		e.del(dir)
	}
}

// testJanitor: every driver can be asked for its leftovers (base.Base
// forwards to the implementation or answers none), and ordinary calls
// leave none once they returned. Other tests share the driver and run in
// parallel, so only the calls are checked here, not the emptiness.
func testJanitor(e *env) {
	j, ok := e.d.(driver.Janitor)
	if !ok {
		e.t.Fatalf("%T does not implement driver.Janitor", e.d)
	}
	if _, err := j.Leftovers(e.ctx); err != nil {
		e.t.Errorf("Leftovers: %v", err)
	}
	e.put(e.p("a/b"), []byte("x"))
	e.del(e.p("a"))
	cancelled, cancel := context.WithCancel(e.ctx)
	cancel()
	if _, err := j.Leftovers(cancelled); !errors.Is(err, context.Canceled) {
		e.t.Errorf("Leftovers with a cancelled context = %v", err)
	}
}

// Bench measures the calls on the read path (GetContent of a link, Stat,
// Reader of a large blob) and the two ways of writing. A driver's _test.go
// runs it from a BenchmarkSuite function, like Run.
func Bench(b *testing.B, newDriver func(b *testing.B) driver.StorageDriver) {
	d := newDriver(b)
	ctx := context.Background()
	root := "/bench-" + crand.Text()
	b.Cleanup(func() {
		if err := d.Delete(ctx, root); err != nil && !driver.IsNotFound(err) {
			b.Errorf("removing %s: %v", root, err)
		}
	})
	link := []byte("sha256:" + string(bytes.Repeat([]byte{'a'}, 64)))
	blob := randomBytes(1<<20, 30)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(d.PutContent(ctx, root+"/link", link))
	must(d.PutContent(ctx, root+"/blob", blob))

	b.Run("GetContent-link", func(b *testing.B) {
		for b.Loop() {
			_, err := d.GetContent(ctx, root+"/link")
			must(err)
		}
	})
	b.Run("Stat", func(b *testing.B) {
		for b.Loop() {
			_, err := d.Stat(ctx, root+"/blob")
			must(err)
		}
	})
	b.Run("Reader-1MiB", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			r, err := d.Reader(ctx, root+"/blob", 0)
			must(err)
			_, err = io.Copy(io.Discard, r)
			must(err)
			r.Close()
		}
	})
	b.Run("PutContent-link", func(b *testing.B) {
		for b.Loop() {
			must(d.PutContent(ctx, root+"/put", link))
		}
	})
	b.Run("Writer-1MiB", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			w, err := d.Writer(ctx, root+"/written", false)
			must(err)
			for rest := blob; len(rest) > 0; rest = rest[64<<10:] {
				_, err := w.Write(rest[:64<<10])
				must(err)
			}
			must(w.Close())
		}
	})
}

// SizeReporting wraps a driver so that its Reader tells the object's size
// (driver.ReportSize), as the S3 driver's ranged GET does, for tests of the
// layers that use it on any driver. The Stat that learns the size goes to
// the wrapped driver: a counter around the wrapper does not see it.
type SizeReporting struct{ driver.StorageDriver }

func (d SizeReporting) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	rc, err := d.StorageDriver.Reader(ctx, p, offset)
	if err != nil {
		return nil, err
	}
	fi, err := d.StorageDriver.Stat(ctx, p)
	if err != nil {
		rc.Close()
		return nil, err
	}
	driver.ReportSize(ctx, fi.Size)
	return rc, nil
}
