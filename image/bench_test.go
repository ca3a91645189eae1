package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fileBlob is a blob in a local file (what the filesystem driver serves
// through the page cache).
type fileBlob struct {
	*os.File
	size int64
}

func (f fileBlob) Size() int64 { return f.size }

type fileBlobs struct{ path string }

func (f fileBlobs) Open(ctx context.Context, d digest.Digest) (Blob, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	return fileBlob{fh, st.Size()}, nil
}

// benchLayer writes a gzip layer of about mb MiB of tar (files of sizes
// from 100 bytes to 8 MiB, compressing about 2:1, like binaries and text)
// with a 4 KiB file last, once per process, and returns its path.
func benchLayer(b *testing.B, dir string) (string, digest.Digest, int64) {
	mb := 256
	if v := os.Getenv("REGFS_BENCH_LAYER_MB"); v != "" {
		mb, _ = strconv.Atoi(v)
	}
	path := filepath.Join(dir, fmt.Sprintf("layer-%d.tar.gz", mb))
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f) // the default level, as docker and skopeo push
	cw := &countWriter{w: zw}
	tw := tar.NewWriter(cw)
	r := rand.New(rand.NewSource(1))
	pool := testData(100, 64<<20)
	for i := 0; cw.n < int64(mb)<<20; i++ {
		size := int(100 * math.Pow(8<<20/100, r.Float64()))
		start := r.Intn(len(pool) - size)
		hdr := &tar.Header{Name: fmt.Sprintf("usr/share/d%03d/f%06d", i%500, i), Mode: 0o644, Size: int64(size), ModTime: testTime, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		tw.Write(pool[start : start+size])
	}
	last := pool[:4096]
	tw.WriteHeader(&tar.Header{Name: "zz/last", Mode: 0o644, Size: int64(len(last)), ModTime: testTime, Typeflag: tar.TypeReg})
	tw.Write(last)
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	fh, _ := os.Open(path)
	defer fh.Close()
	h := digest.Canonical.Digester()
	io.Copy(h.Hash(), fh)
	return path, h.Digest(), cw.n
}

func descOf(d digest.Digest) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: MediaTypeTarGzip, Digest: d}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// BenchmarkF1 is row F1 without FUSE: building a gzip layer's index (every
// entry and a checkpoint every 2 MiB, in one pass) against decompressing
// the layer alone with compress/gzip. It reports both times and their ratio
// (target <= 1.3). REGFS_BENCH_LAYER_MB sets the layer's tar size (256).
func BenchmarkF1(b *testing.B) {
	dir := b.TempDir()
	path, dgst, tarSize := benchLayer(b, dir)
	blobs := fileBlobs{path}
	var gunzip, index time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		blob, _ := blobs.Open(context.Background(), dgst)
		// A large buffer, as the index build reads (gzip.NewReader's own
		// is 4 KiB: a syscall per 4 KiB).
		zr, err := gzip.NewReader(bufio.NewReaderSize(io.NewSectionReader(blob, 0, blob.Size()), inBufSize))
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, zr); err != nil || n != tarSize {
			b.Fatal(n, err)
		}
		blob.Close()
		gunzip += time.Since(start)

		start = time.Now()
		ix, err := NewIndexer(Options{Dir: filepath.Join(dir, "index", strconv.Itoa(i)), Blobs: blobs})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ix.Layer(context.Background(), descOf(dgst)); err != nil {
			b.Fatal(err)
		}
		index += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(gunzip.Seconds()/float64(b.N), "gunzip-s")
	b.ReportMetric(index.Seconds()/float64(b.N), "index-s")
	b.ReportMetric(float64(index)/float64(gunzip), "ratio")
	b.ReportMetric(float64(tarSize)/(1<<20), "tar-MiB")
}

// BenchmarkF2 is row F2 without FUSE: with the index on disk, a fresh
// Indexer (a fresh mount) loads it, merges the layer and reads the small
// file at the end of the layer. Target <= 20 ms per op.
func BenchmarkF2(b *testing.B) {
	dir := b.TempDir()
	path, dgst, _ := benchLayer(b, dir)
	blobs := fileBlobs{path}
	idir := filepath.Join(dir, "index")
	ix, err := NewIndexer(Options{Dir: idir, Blobs: blobs})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ix.Layer(context.Background(), descOf(dgst)); err != nil {
		b.Fatal(err)
	}
	want := testData(100, 64<<20)[:4096]
	buf := make([]byte, 8192)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ix, err := NewIndexer(Options{Dir: idir, Blobs: blobs})
		if err != nil {
			b.Fatal(err)
		}
		l, err := ix.Layer(context.Background(), descOf(dgst))
		if err != nil {
			b.Fatal(err)
		}
		if ix.builds.Load() != 0 {
			b.Fatal("the index was rebuilt")
		}
		tree, err := Merge([]*Layer{l})
		if err != nil {
			b.Fatal(err)
		}
		n, ok := tree.Lookup("zz/last")
		if !ok {
			b.Fatal("zz/last missing")
		}
		k, err := tree.ReadAt(context.Background(), n, buf, 0)
		if err != io.EOF || string(buf[:k]) != string(want) {
			b.Fatalf("read %d bytes: %v", k, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
}

// BenchmarkMerge merges one layer of 50,000 entries (500 directories of
// 100 files, names like a real /usr); what a fresh mount does per image
// before its first lookup.
func BenchmarkMerge(b *testing.B) {
	var files []tf
	for d := 0; d < 500; d++ {
		dir := fmt.Sprintf("usr/lib/python3/dist-packages/pkg%03d/sub", d)
		files = append(files, tf{name: dir + "/", typ: tar.TypeDir})
		for f := 0; f < 99; f++ {
			files = append(files, tf{name: fmt.Sprintf("%s/module_%03d.py", dir, f), body: []byte("x")})
		}
	}
	blobs := newMemBlobs()
	desc := blobs.add(mkTar(b, files), MediaTypeTar)
	dir := b.TempDir()
	ix := newTestIndexer(b, dir, blobs)
	if _, err := ix.Layer(context.Background(), desc); err != nil {
		b.Fatal(err)
	}
	b.Run("load", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			ix := newTestIndexer(b, dir, blobs)
			if _, err := ix.Layer(context.Background(), desc); err != nil {
				b.Fatal(err)
			}
		}
	})
	l, _ := ix.Layer(context.Background(), desc)
	b.Run("merge", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := Merge([]*Layer{l}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
