package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var compressions = []Compression{Gzip, Zstd, Uncompressed}

// testImage is three layers that exercise the merge rules.
func testImage(t testing.TB) [][]tf {
	long := strings.Repeat("a-long-directory-name/", 8) + strings.Repeat("x", 150)
	return [][]tf{
		{
			{name: "./", typ: tar.TypeDir, mode: 0o755},
			{name: "etc/", typ: tar.TypeDir},
			{name: "etc/passwd", body: []byte("root:x:0:0\n")},
			{name: "etc/hosts", body: []byte("127.0.0.1 localhost\n")},
			{name: "opt/", typ: tar.TypeDir},
			{name: "opt/a", body: []byte("a")},
			{name: "opt/sub/b", body: []byte("b")}, // opt/sub made implicitly
			{name: "bin/", typ: tar.TypeDir},
			{name: "bin/tool", body: []byte("#!/bin/sh\necho tool\n"), mode: 0o4755},
			{name: "bin/hl", typ: tar.TypeLink, link: "bin/tool"},
			{name: "bin/hl2", typ: tar.TypeLink, link: "./bin/tool"},
			{name: "usr/lib/rel", typ: tar.TypeSymlink, link: "../../etc/passwd"},
			{name: "usr/abs", typ: tar.TypeSymlink, link: "/etc/passwd"},
			{name: "usr/dangling", typ: tar.TypeSymlink, link: "/nowhere/at/all"},
			{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
			{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666},
			{name: "dev/sda", typ: tar.TypeBlock, major: 8, minor: 0, mode: 0o660},
			{name: "empty", body: nil},
			{name: long, body: []byte("long name")},
			{name: "really-empty", body: nil},
			{name: "gnu/" + strings.Repeat("g", 200), body: []byte("gnu long name"), gnu: true},
			{name: "attrs", body: []byte("x"), xattrs: map[string]string{"user.k": "v", "security.capability": "\x01\x00"}, uid: 1000},
			{name: "changed", body: []byte("one")},
			{name: "gone-dir/x", body: []byte("x")},
		},
		{
			{name: "etc/.wh.hosts", body: nil},
			{name: "opt/", typ: tar.TypeDir, mode: 0o700},
			{name: "opt/.wh..wh..opq", body: nil},
			{name: "opt/new", body: []byte("new")},
			{name: "changed", body: []byte("two!")},
			// A whiteout and the same name in one layer: the whiteout
			// hides the lower layer's file, this layer's shows.
			{name: ".wh.empty"},
			{name: "empty", body: []byte("not empty now")},
			{name: ".wh.gone-dir"},
		},
		{
			{name: "changed", body: []byte("three")},
			{name: "bin/.wh.tool"}, // bin/hl and bin/hl2 keep the inode
			{name: "etc/hosts", typ: tar.TypeSymlink, link: "passwd"},
			{name: "usr/lib", typ: tar.TypeDir, mode: 0o750}, // attributes change, children stay
		},
	}
}

func buildLayers(t testing.TB, ix *Indexer, blobs *memBlobs, layers [][]tf, c Compression) []*Layer {
	t.Helper()
	var out []*Layer
	for _, files := range layers {
		desc := blobs.add(compress(t, mkTar(t, files), c, 0), mediaType(c))
		l, err := ix.Layer(context.Background(), desc)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// names walks the tree and returns every path with its type and link count.
func names(tree *Tree) []string {
	var out []string
	var walk func(n *Node, p string)
	walk = func(n *Node, p string) {
		for _, d := range tree.Children(n) {
			kp := strings.TrimPrefix(p+"/"+d.Name, "/")
			out = append(out, fmt.Sprintf("%s %v %d", kp, d.Node.Mode, d.Node.Nlink))
			if d.Node.IsDir() {
				walk(d.Node, kp)
			}
		}
	}
	walk(tree.Root(), "")
	return out
}

func TestMerge(t *testing.T) {
	for _, c := range compressions {
		t.Run(c.String(), func(t *testing.T) {
			blobs := newMemBlobs()
			ix := newTestIndexer(t, t.TempDir(), blobs)
			tree, err := Merge(buildLayers(t, ix, blobs, testImage(t), c))
			if err != nil {
				t.Fatal(err)
			}
			if len(tree.Skipped) != 0 {
				t.Errorf("skipped: %v", tree.Skipped)
			}
			all := names(tree)
			for _, l := range all {
				if strings.Contains(l, ".wh.") {
					t.Errorf("whiteout shown: %s", l)
				}
			}
			must := func(p string) *Node {
				t.Helper()
				n, ok := tree.Lookup(p)
				if !ok {
					t.Fatalf("%s missing; tree:\n%s", p, strings.Join(all, "\n"))
				}
				return n
			}
			gone := func(p string) {
				t.Helper()
				if _, ok := tree.Lookup(p); ok {
					t.Errorf("%s still there", p)
				}
			}
			// Whiteouts and opaque directories.
			gone("gone-dir")
			gone("gone-dir/x")
			gone("opt/a")
			gone("opt/sub")
			gone("bin/tool")
			if got := string(readAll(t, tree, "opt/new")); got != "new" {
				t.Errorf("opt/new = %q", got)
			}
			var kids []string
			for _, d := range tree.Children(must("opt")) {
				kids = append(kids, d.Name)
			}
			if !slices.Equal(kids, []string{"new"}) {
				t.Errorf("opt has %v", kids)
			}
			if m := must("opt").Mode; m != fs.ModeDir|0o700 {
				t.Errorf("opt mode %v", m)
			}
			// A file changed in three layers.
			if got := string(readAll(t, tree, "changed")); got != "three" {
				t.Errorf("changed = %q", got)
			}
			if got := string(readAll(t, tree, "empty")); got != "not empty now" {
				t.Errorf("empty = %q", got)
			}
			if n := must("really-empty"); n.Size != 0 || !n.Mode.IsRegular() || len(readAll(t, tree, "really-empty")) != 0 {
				t.Errorf("really-empty: size %d mode %v", n.Size, n.Mode)
			}
			// Hard links: one inode, its link count, the content of the
			// removed name.
			hl, hl2 := must("bin/hl"), must("bin/hl2")
			if hl != hl2 || hl.Nlink != 2 {
				t.Errorf("hard links: same node %v, nlink %d", hl == hl2, hl.Nlink)
			}
			if hl.Mode != fs.ModeSetuid|0o755 {
				t.Errorf("bin/hl mode %v", hl.Mode)
			}
			if got := string(readAll(t, tree, "bin/hl2")); got != "#!/bin/sh\necho tool\n" {
				t.Errorf("bin/hl2 = %q", got)
			}
			// Symlinks as stored, never followed.
			for p, target := range map[string]string{"usr/lib/rel": "../../etc/passwd", "usr/abs": "/etc/passwd", "usr/dangling": "/nowhere/at/all", "etc/hosts": "passwd"} {
				n := must(p)
				if n.Mode.Type() != fs.ModeSymlink || n.Linkname != target || n.Size != int64(len(target)) {
					t.Errorf("%s: mode %v target %q size %d", p, n.Mode, n.Linkname, n.Size)
				}
				if _, err := tree.ReadAt(context.Background(), n, make([]byte, 1), 0); !errors.Is(err, ErrNotRegular) {
					t.Errorf("%s: read gives %v", p, err)
				}
			}
			if _, ok := tree.Lookup("usr/abs/x"); ok {
				t.Error("lookup went through a symlink")
			}
			if m := must("usr/lib").Mode; m != fs.ModeDir|0o750 {
				t.Errorf("usr/lib mode %v", m)
			}
			// Devices and fifos.
			if n := must("dev/null"); n.Mode != fs.ModeDevice|fs.ModeCharDevice|0o666 || n.Devmajor != 1 || n.Devminor != 3 {
				t.Errorf("dev/null: %v %d,%d", n.Mode, n.Devmajor, n.Devminor)
			}
			if n := must("dev/sda"); n.Mode != fs.ModeDevice|0o660 || n.Devmajor != 8 {
				t.Errorf("dev/sda: %v %d,%d", n.Mode, n.Devmajor, n.Devminor)
			}
			if n := must("dev/fifo"); n.Mode != fs.ModeNamedPipe|0o600 {
				t.Errorf("dev/fifo: %v", n.Mode)
			}
			// PAX long names and attributes.
			long := testImage(t)[0][18].name
			if got := string(readAll(t, tree, long)); got != "long name" {
				t.Errorf("long name = %q", got)
			}
			if got := string(readAll(t, tree, "gnu/"+strings.Repeat("g", 200))); got != "gnu long name" {
				t.Errorf("GNU long name = %q", got)
			}
			if n := must("attrs"); n.Xattrs["user.k"] != "v" || n.Xattrs["security.capability"] != "\x01\x00" || n.UID != 1000 || n.GID != 1000 {
				t.Errorf("attrs: %v uid %d gid %d", n.Xattrs, n.UID, n.GID)
			}
			if n := must("etc/passwd"); !n.ModTime.Equal(testTime) || n.Mode != 0o644 {
				t.Errorf("etc/passwd: %v %v", n.ModTime, n.Mode)
			}
			// Directory link counts: 2 + subdirectories.
			if n := must("usr"); n.Nlink != 3 {
				t.Errorf("usr nlink %d", n.Nlink)
			}
			if n := tree.Root(); n.ID != 1 || n.Nlink != 2+7 {
				t.Errorf("root id %d nlink %d; %v", n.ID, n.Nlink, tree.Children(n))
			}
			// IDs: unique, and the same for the same layers.
			ids := map[uint64]string{}
			for _, p := range all {
				p = strings.Fields(p)[0]
				n := must(p)
				if q, ok := ids[n.ID]; ok && must(q) != n {
					t.Errorf("%s and %s share id %d", p, q, n.ID)
				}
				ids[n.ID] = p
			}
			again, _ := Merge(tree.Layers())
			if must("opt/new").ID != func() uint64 { n, _ := again.Lookup("opt/new"); return n.ID }() {
				t.Error("ids differ between two merges")
			}
		})
	}
}

// bigFile returns n bytes that compress about 3:1 like real binaries.
func bigFile(seed int64, n int) []byte {
	return testData(seed, n)
}

// smallSpacing lowers the checkpoint spacing for one test, so that small
// layers (fast under the race detector) have many checkpoints.
func smallSpacing(t *testing.T) {
	old := checkpointSpacing
	checkpointSpacing = 128 << 10
	t.Cleanup(func() { checkpointSpacing = old })
}

func TestLargeFileRandomReads(t *testing.T) {
	smallSpacing(t)
	big := bigFile(3, 3<<20)
	files := []tf{
		{name: "small-before", body: []byte("before")},
		{name: "big", body: big},
		{name: "small-after", body: []byte("after")},
	}
	raw := mkTar(t, files)
	for _, tc := range []struct {
		name  string
		c     Compression
		frame int
	}{{"gzip", Gzip, 0}, {"zstd-frames", Zstd, 256 << 10}, {"zstd-one-frame", Zstd, 0}, {"tar", Uncompressed, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			blobs := newMemBlobs()
			desc := blobs.add(compress(t, raw, tc.c, tc.frame), mediaType(tc.c))
			dir := t.TempDir()
			check := func(ix *Indexer) {
				t.Helper()
				l, err := ix.Layer(context.Background(), desc)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case tc.c == Gzip && l.Checkpoints() < 10:
					t.Fatalf("%d checkpoints in a 3 MiB layer", l.Checkpoints())
				case tc.frame > 0 && l.Checkpoints() < 12:
					t.Fatalf("%d zstd frames", l.Checkpoints())
				}
				tree, err := Merge([]*Layer{l})
				if err != nil {
					t.Fatal(err)
				}
				n, _ := tree.Lookup("big")
				r := rand.New(rand.NewSource(1))
				for i := 0; i < 30; i++ {
					off := r.Int63n(int64(len(big)) + 100)
					buf := make([]byte, r.Intn(200<<10))
					k, err := tree.ReadAt(context.Background(), n, buf, off)
					end := min(off+int64(len(buf)), int64(len(big)))
					want := big[min(off, end):end]
					if k != len(want) || !bytes.Equal(buf[:k], want) {
						t.Fatalf("read %d at %d: got %d bytes (%v), want %d", len(buf), off, k, err, len(want))
					}
					if (err == io.EOF) != (k < len(buf)) || (err != nil && err != io.EOF) {
						t.Fatalf("read %d at %d: %d bytes, err %v", len(buf), off, k, err)
					}
				}
				if got := string(readAll(t, tree, "small-after")); got != "after" {
					t.Fatalf("small-after = %q", got)
				}
				// The whole stream, up to and past its end.
				if l.Size() != int64(len(raw)) {
					t.Fatalf("stream size %d, tar %d", l.Size(), len(raw))
				}
				for _, off := range []int64{0, 1, 511, 512, int64(len(raw)) - 700, int64(len(raw)) - 1} {
					buf := make([]byte, 1000)
					k, err := l.ReadAt(context.Background(), buf, off)
					want := raw[off:min(off+1000, int64(len(raw)))]
					if !bytes.Equal(buf[:k], want) || (k < len(buf)) != (err == io.EOF) {
						t.Fatalf("stream read at %d: %d bytes, %v", off, k, err)
					}
				}
				if k, err := l.ReadAt(context.Background(), make([]byte, 10), int64(len(raw))); k != 0 || err != io.EOF {
					t.Fatalf("read at the end: %d, %v", k, err)
				}
			}
			check(newTestIndexer(t, dir, blobs))
			// A fresh Indexer loads the index (windows from the file).
			ix := newTestIndexer(t, dir, blobs)
			check(ix)
			if ix.builds.Load() != 0 {
				t.Fatal("the saved index was not used")
			}
			// Without a directory, in memory.
			check(newTestIndexer(t, "", blobs))
		})
	}
}

// A sequential read in kernel-sized pieces continues one decoder instead
// of starting again from a checkpoint for every piece.
func TestSequentialReadsContinue(t *testing.T) {
	smallSpacing(t)
	big := bigFile(4, 2<<20)
	blobs := newMemBlobs()
	desc := blobs.add(compress(t, mkTar(t, []tf{{name: "big", body: big}}), Gzip, 0), MediaTypeTarGzip)
	ix := newTestIndexer(t, "", blobs)
	l, err := ix.Layer(context.Background(), desc)
	if err != nil {
		t.Fatal(err)
	}
	tree, _ := Merge([]*Layer{l})
	n, _ := tree.Lookup("big")
	before := blobs.opens.Load()
	var got []byte
	buf := make([]byte, 128<<10)
	for off := int64(0); ; {
		k, err := tree.ReadAt(context.Background(), n, buf, off)
		got = append(got, buf[:k]...)
		off += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, big) {
		t.Fatal("content differs")
	}
	if opens := blobs.opens.Load() - before; opens != 1 {
		t.Fatalf("%d decoders started for one sequential read", opens)
	}
	ix.Close()
	if len(ix.idle) != 0 {
		t.Fatal("Close left paused decoders")
	}
	if got := readAll(t, tree, "big"); !bytes.Equal(got, big) {
		t.Fatal("content differs after Close")
	}
}

func indexFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestCorruptIndexRebuilt(t *testing.T) {
	smallSpacing(t)
	big := bigFile(5, 1<<20)
	raw := mkTar(t, []tf{{name: "big", body: big}, {name: "end", body: []byte("the end")}})
	blobs := newMemBlobs()
	desc := blobs.add(compress(t, raw, Gzip, 0), MediaTypeTarGzip)
	dir := t.TempDir()
	if _, err := newTestIndexer(t, dir, blobs).Layer(context.Background(), desc); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, fileName(desc.Digest))
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	damage := map[string]func([]byte) []byte{
		"flipped meta":   func(b []byte) []byte { b[40] ^= 0x10; return b },
		"flipped window": func(b []byte) []byte { b[len(b)-100] ^= 1; return b },
		"flipped crc":    func(b []byte) []byte { b[17] ^= 1; return b },
		"truncated":      func(b []byte) []byte { return b[:len(b)/2] },
		"empty":          func(b []byte) []byte { return nil },
		"other layer":    func(b []byte) []byte { return []byte("RGFSIDX1 not an index at all") },
	}
	readEnd := func(t *testing.T, l *Layer) {
		t.Helper()
		tree, _ := Merge([]*Layer{l})
		if got := string(readAll(t, tree, "end")); got != "the end" {
			t.Fatalf("end = %q", got)
		}
	}
	for name, f := range damage {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(file, f(slices.Clone(good)), 0o600); err != nil {
				t.Fatal(err)
			}
			// The damage is found when the file is opened (meta, size)
			// or when the read needs the window; either way the read
			// gets the right bytes and the index is built once more.
			ix := newTestIndexer(t, dir, blobs)
			l, err := ix.Layer(context.Background(), desc)
			if err != nil {
				t.Fatal(err)
			}
			readEnd(t, l)
			ix2 := newTestIndexer(t, dir, blobs)
			l2, err := ix2.Layer(context.Background(), desc)
			if err != nil {
				t.Fatal(err)
			}
			readEnd(t, l2)
			if b := ix.builds.Load() + ix2.builds.Load(); b != 1 {
				t.Fatalf("%d builds, want one rebuild", b)
			}
			now, _ := os.ReadFile(file)
			if !bytes.Equal(now, good) {
				t.Fatal("the rebuilt index file differs from the first one")
			}
		})
	}
	// A window damaged after the index was loaded: the read still gets
	// the right bytes (from an earlier checkpoint) and the next access
	// rebuilds.
	t.Run("window damaged while loaded", func(t *testing.T) {
		ix := newTestIndexer(t, dir, blobs)
		l, err := ix.Layer(context.Background(), desc)
		if err != nil || ix.builds.Load() != 0 {
			t.Fatal(err, ix.builds.Load())
		}
		f, err := os.OpenFile(file, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{good[len(good)-100] ^ 1}, int64(len(good)-100))
		f.Close()
		readEnd(t, l)
		l2, err := ix.Layer(context.Background(), desc)
		if err != nil || l2 == l || ix.builds.Load() != 1 {
			t.Fatalf("after damage: err %v, same layer %v, builds %d", err, l2 == l, ix.builds.Load())
		}
		readEnd(t, l2)
		readEnd(t, l) // the old layer still reads, and removes nothing
		if now, _ := os.ReadFile(file); !bytes.Equal(now, good) {
			t.Fatal("the index file is not the rebuilt one")
		}
	})
}

func TestTruncatedBlob(t *testing.T) {
	big := bigFile(6, 1<<20)
	raw := mkTar(t, []tf{{name: "big", body: big}, {name: "end", body: []byte("the end")}})
	for _, c := range compressions {
		t.Run(c.String(), func(t *testing.T) {
			blob := compress(t, raw, c, 256<<10)
			blobs := newMemBlobs()
			dir := t.TempDir()
			// Truncated from the start: no index, no file.
			desc := blobs.add(blob, mediaType(c))
			blobs.set(desc.Digest, blob[:len(blob)*2/3])
			ix := newTestIndexer(t, dir, blobs)
			_, err := ix.Layer(context.Background(), desc)
			var le *LayerError
			if !errors.As(err, &le) || le.Digest != desc.Digest {
				t.Fatalf("truncated layer: %v", err)
			}
			if files := indexFiles(t, dir); len(files) != 0 {
				t.Fatalf("left in the index directory: %v", files)
			}
			// Truncated after the index was built: reads fail, with no
			// byte returned.
			blobs.set(desc.Digest, blob)
			l, err := ix.Layer(context.Background(), desc)
			if err != nil {
				t.Fatal(err)
			}
			blobs.set(desc.Digest, blob[:len(blob)-len(blob)/10])
			tree, _ := Merge([]*Layer{l})
			n, _ := tree.Lookup("end")
			buf := make([]byte, 100)
			k, err := tree.ReadAt(context.Background(), n, buf, 0)
			if err == nil || err == io.EOF || k != 0 {
				t.Fatalf("read of a truncated blob: %d bytes %q, err %v", k, buf[:k], err)
			}
		})
	}
}

func TestCorruptGzipLayer(t *testing.T) {
	raw := mkTar(t, []tf{{name: "f", body: bigFile(8, 1<<20)}})
	blob := compress(t, raw, Gzip, 0)
	blob[len(blob)/2] ^= 0x55
	blobs := newMemBlobs()
	desc := blobs.add(blob, MediaTypeTarGzip)
	_, err := newTestIndexer(t, t.TempDir(), blobs).Layer(context.Background(), desc)
	var le *LayerError
	if !errors.As(err, &le) {
		t.Fatalf("corrupt layer: %v", err)
	}
}

func TestUnknownMediaType(t *testing.T) {
	blobs := newMemBlobs()
	desc := blobs.add([]byte("whatever"), "application/vnd.example.layer.v1.squashfs")
	_, err := newTestIndexer(t, t.TempDir(), blobs).Layer(context.Background(), desc)
	var ue *UnsupportedMediaTypeError
	if !errors.As(err, &ue) || ue.MediaType != desc.MediaType {
		t.Fatalf("got %v", err)
	}
	if blobs.opens.Load() != 0 {
		t.Fatal("the blob was read")
	}
	for _, mt := range []string{MediaTypeDockerGzip, MediaTypeDockerForeign, MediaTypeForeignGzip, MediaTypeForeignTar, MediaTypeForeignZstd, MediaTypeTar, MediaTypeTarGzip, MediaTypeTarZstd} {
		if _, err := CompressionOf(mt); err != nil {
			t.Errorf("%s: %v", mt, err)
		}
	}
}

// Schema1 layers have no media type: the blob's first bytes decide.
func TestNoMediaTypeSniffed(t *testing.T) {
	raw := mkTar(t, []tf{{name: "f", body: []byte("content")}})
	for _, c := range compressions {
		blobs := newMemBlobs()
		desc := blobs.add(compress(t, raw, c, 0), "")
		l, err := newTestIndexer(t, "", blobs).Layer(context.Background(), desc)
		if err != nil {
			t.Fatal(err)
		}
		if l.Compression() != c {
			t.Errorf("sniffed %v, want %v", l.Compression(), c)
		}
		tree, _ := Merge([]*Layer{l})
		if got := string(readAll(t, tree, "f")); got != "content" {
			t.Errorf("%v: f = %q", c, got)
		}
	}
}

func TestMissingBlob(t *testing.T) {
	blobs := newMemBlobs()
	desc := ocispec.Descriptor{MediaType: MediaTypeForeignGzip, Digest: digest.Digest("sha256:" + strings.Repeat("ab", 32))}
	_, err := newTestIndexer(t, "", blobs).Layer(context.Background(), desc)
	if !errors.Is(err, errMissing) {
		t.Fatalf("got %v", err)
	}
}

func TestConcurrentFirstAccessBuildsOnce(t *testing.T) {
	blobs := newMemBlobs()
	desc := blobs.add(compress(t, mkTar(t, []tf{{name: "f", body: bigFile(9, 1<<20)}}), Gzip, 0), MediaTypeTarGzip)
	blobs.gate = make(chan struct{})
	ix := newTestIndexer(t, t.TempDir(), blobs)
	const callers = 16
	layers := make([]*Layer, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			layers[i], errs[i] = ix.Layer(context.Background(), desc)
		}()
	}
	// Let every caller arrive before the one build may read.
	for {
		ix.mu.Lock()
		c := ix.building[desc.Digest]
		w := 0
		if c != nil {
			w = c.waiters
		}
		ix.mu.Unlock()
		if w == callers {
			break
		}
		runtime.Gosched()
	}
	close(blobs.gate)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || layers[i] != layers[0] {
			t.Fatalf("caller %d: %v (same layer: %v)", i, errs[i], layers[i] == layers[0])
		}
	}
	if o, b := blobs.opens.Load(), ix.builds.Load(); o != 1 || b != 1 {
		t.Fatalf("%d opens and %d builds for %d concurrent callers", o, b, callers)
	}
}

// blockingBlob serves its first bytes, then blocks until its context ends.
type blockingBlob struct {
	memBlob
	after int64
	ctx   context.Context
}

func (b blockingBlob) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > b.after {
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	return b.memBlob.ReadAt(p, off)
}

func TestInterruptedBuildLeavesNothing(t *testing.T) {
	blob := compress(t, mkTar(t, []tf{{name: "f", body: bigFile(10, 1<<20)}}), Gzip, 0)
	blobs := newMemBlobs()
	desc := blobs.add(blob, MediaTypeTarGzip)
	stop, cancelStop := context.WithCancel(context.Background())
	defer cancelStop()
	var mu sync.Mutex
	blocking := true
	dir := t.TempDir()
	ix := newTestIndexer(t, dir, BlobsFunc(func(ctx context.Context, d digest.Digest) (Blob, error) {
		b, err := blobs.Open(ctx, d)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || !blocking {
			return b, err
		}
		return blockingBlob{b.(memBlob), int64(len(blob) / 2), stop}, nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := ix.Layer(ctx, desc)
		done <- err
	}()
	for blobs.opens.Load() == 0 {
		runtime.Gosched()
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v", err)
	}
	cancelStop() // the build itself was cancelled too; its read returns
	mu.Lock()
	blocking = false
	mu.Unlock()
	for {
		ix.mu.Lock()
		n := len(ix.building)
		ix.mu.Unlock()
		if n == 0 {
			break
		}
		runtime.Gosched()
	}
	if files := indexFiles(t, dir); len(files) != 0 {
		t.Fatalf("left in the index directory: %v", files)
	}
	if _, err := ix.Layer(context.Background(), desc); err != nil {
		t.Fatal(err)
	}
	if files := indexFiles(t, dir); len(files) != 1 {
		t.Fatalf("index directory: %v", files)
	}
}

func TestIndexDirBounded(t *testing.T) {
	smallSpacing(t)
	blobs := newMemBlobs()
	var descs []ocispec.Descriptor
	for i := range 4 {
		descs = append(descs, blobs.add(compress(t, mkTar(t, []tf{{name: "f", body: bigFile(int64(20+i), 1<<20)}}), Gzip, 0), MediaTypeTarGzip))
	}
	dir := t.TempDir()
	ix := newTestIndexer(t, dir, blobs)
	if _, err := ix.Layer(context.Background(), descs[0]); err != nil {
		t.Fatal(err)
	}
	one := indexFiles(t, dir)
	st, _ := os.Stat(filepath.Join(dir, one[0]))
	// Room for two and a half index files.
	max := st.Size()*5/2 + 10
	ix, err := NewIndexer(Options{Dir: dir, MaxBytes: max, Blobs: blobs})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range descs[1:] {
		if _, err := ix.Layer(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, n := range indexFiles(t, dir) {
			st, _ := os.Stat(filepath.Join(dir, n))
			total += st.Size()
		}
		if total > max {
			t.Fatalf("index directory holds %d bytes, bound %d", total, max)
		}
	}
	files := indexFiles(t, dir)
	if len(files) != 2 || slices.Contains(files, fileName(descs[0].Digest)) || slices.Contains(files, fileName(descs[1].Digest)) {
		t.Fatalf("kept %v; want the two most recent", files)
	}
}

// Concurrent reads of one layer (FUSE reads arrive concurrently) each get
// their own decoder and the right bytes.
func TestConcurrentReads(t *testing.T) {
	smallSpacing(t)
	big := bigFile(13, 2<<20)
	for _, c := range []Compression{Gzip, Zstd} {
		t.Run(c.String(), func(t *testing.T) {
			blobs := newMemBlobs()
			desc := blobs.add(compress(t, mkTar(t, []tf{{name: "big", body: big}}), c, 256<<10), mediaType(c))
			ix := newTestIndexer(t, t.TempDir(), blobs)
			l, err := ix.Layer(context.Background(), desc)
			if err != nil {
				t.Fatal(err)
			}
			tree, _ := Merge([]*Layer{l})
			n, _ := tree.Lookup("big")
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewSource(int64(g)))
					for i := 0; i < 10; i++ {
						off := r.Int63n(int64(len(big)))
						buf := make([]byte, 64<<10)
						k, err := tree.ReadAt(context.Background(), n, buf, off)
						if err != nil && err != io.EOF {
							errs <- err
							return
						}
						if !bytes.Equal(buf[:k], big[off:min(off+int64(len(buf)), int64(len(big)))]) {
							errs <- fmt.Errorf("wrong bytes at %d", off)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
