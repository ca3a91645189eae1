package fs

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	"bazil.org/fuse"
)

// Large reads are answered with the cache's own bytes (blobHandle.Read,
// cache.Reader.Lend): the bytes read are the blob's, a blob larger than
// the cache reads through it, and every loan ends once bazil is done with
// the answers.
func TestReadLendsBlocks(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 40<<20+12345) // 2.5 x the test cache
	d := m.pushBlob("lend", content)
	p := m.path("lend", "_layers", d.String())
	if got := m.readFile(p); !bytes.Equal(got, content) {
		t.Fatalf("read %d bytes, not the blob's %d", len(got), len(content))
	}
	if s := m.cache.Stats(); s.Lends < int64(len(content))/(256<<10) || s.Uncached > 0 {
		t.Errorf("%d reads lent; %d reads around the cache", s.Lends, s.Uncached)
	}
	m.eventually("every loan ended", func() bool {
		runtime.GC()
		return m.cache.Stats().Loans == 0
	})
}

// The handler lends only for reads of lendMin bytes or more; smaller ones
// are copied into bazil's buffer, and every read returns the blob's bytes.
func TestReadLendsLargeReadsOnly(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 1<<20)
	d := m.pushBlob("lend", content)
	r, err := m.repo("lend").Layers().Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	h := &blobHandle{f: m.fs, path: "lend", r: r}
	defer h.Release(context.Background(), &fuse.ReleaseRequest{})
	for _, c := range []struct {
		off       int64
		size      int
		wantLends int64
	}{
		{0, 4096, 0},
		{8192, lendMin - 1, 0},
		{300 << 10, lendMin, 1},
		{512 << 10, 128 << 10, 1},
		{int64(len(content)) - 100, 128 << 10, 1}, // the end: 100 bytes
	} {
		before := m.cache.Stats().Lends
		resp := &fuse.ReadResponse{Data: make([]byte, 0, c.size)}
		if err := h.Read(context.Background(), &fuse.ReadRequest{Offset: c.off, Size: c.size}, resp); err != nil {
			t.Fatal(err)
		}
		want := content[c.off:min(c.off+int64(c.size), int64(len(content)))]
		if !bytes.Equal(resp.Data, want) {
			t.Errorf("read %d at %d: %d bytes, not the blob's %d", c.size, c.off, len(resp.Data), len(want))
		}
		if got := m.cache.Stats().Lends - before; got != c.wantLends {
			t.Errorf("read %d at %d: %d loans, want %d", c.size, c.off, got, c.wantLends)
		}
	}
}
