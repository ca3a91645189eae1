package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tf is one tar entry of a test layer.
type tf struct {
	name   string
	typ    byte // 0: regular file
	body   []byte
	link   string
	mode   int64
	uid    int
	major  int64
	minor  int64
	xattrs map[string]string
	gnu    bool // GNU format (long names in 'L' records) instead of PAX
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func mkTar(t testing.TB, files []tf) []byte {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, f := range files {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := f.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{
			Name: f.name, Typeflag: typ, Linkname: f.link, Mode: mode,
			Uid: f.uid, Gid: f.uid, ModTime: testTime,
			Devmajor: f.major, Devminor: f.minor,
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if f.gnu {
			h.Format = tar.FormatGNU
		}
		if len(f.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range f.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// compress returns the tar in the given compression; zstd is written as
// frames of zstdFrame bytes of input each when zstdFrame > 0.
func compress(t testing.TB, raw []byte, c Compression, zstdFrame int) []byte {
	switch c {
	case Uncompressed:
		return raw
	case Gzip:
		return gzipBytes(t, raw, gzip.BestSpeed)
	case Zstd:
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		if zstdFrame <= 0 {
			return enc.EncodeAll(raw, nil)
		}
		var out []byte
		for len(raw) > 0 {
			n := min(zstdFrame, len(raw))
			out = enc.EncodeAll(raw[:n], out)
			raw = raw[n:]
		}
		return out
	}
	t.Fatalf("compression %v", c)
	return nil
}

func mediaType(c Compression) string {
	switch c {
	case Uncompressed:
		return MediaTypeTar
	case Gzip:
		return MediaTypeTarGzip
	}
	return MediaTypeTarZstd
}

var errMissing = errors.New("blob not in storage")

type memBlob struct{ *bytes.Reader }

func (memBlob) Close() error { return nil }

// memBlobs holds blobs in memory and counts opens. With gate set, every
// Open waits until it is closed.
type memBlobs struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	opens atomic.Int64
	gate  chan struct{}
}

func newMemBlobs() *memBlobs { return &memBlobs{blobs: map[digest.Digest][]byte{}} }

func (m *memBlobs) Open(ctx context.Context, d digest.Digest) (Blob, error) {
	m.opens.Add(1)
	if m.gate != nil {
		<-m.gate
	}
	m.mu.Lock()
	b, ok := m.blobs[d]
	m.mu.Unlock()
	if !ok {
		return nil, errMissing
	}
	return memBlob{bytes.NewReader(b)}, nil
}

func (m *memBlobs) add(blob []byte, mt string) ocispec.Descriptor {
	d := digest.FromBytes(blob)
	m.mu.Lock()
	m.blobs[d] = blob
	m.mu.Unlock()
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(blob))}
}

// set replaces a blob's bytes under the same digest (a damaged store).
func (m *memBlobs) set(d digest.Digest, blob []byte) {
	m.mu.Lock()
	m.blobs[d] = blob
	m.mu.Unlock()
}

func newTestIndexer(t testing.TB, dir string, blobs Blobs) *Indexer {
	t.Helper()
	ix, err := NewIndexer(Options{Dir: dir, Blobs: blobs})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func readAll(t testing.TB, tree *Tree, path string) []byte {
	t.Helper()
	n, ok := tree.Lookup(path)
	if !ok {
		t.Fatalf("%s: not found", path)
	}
	buf := make([]byte, n.Size+10)
	k, err := tree.ReadAt(context.Background(), n, buf, 0)
	if err != io.EOF && !(err == nil && int64(k) == n.Size) {
		t.Fatalf("%s: read %d bytes: %v", path, k, err)
	}
	return buf[:k]
}
