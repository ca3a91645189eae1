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

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
)

// Every descriptor of one revision, opened by digest or through a tag,
// reads one shared buffer, charged once to the cache budget; the last
// close lets it go.
func TestManifestOpensShareOneBuffer(t *testing.T) {
	m := newMount(t, mountConfig{})
	mf, mfd, _ := m.pushImage("app", "v1", 1)
	const opens = 200
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for i := 0; i < opens; i++ {
		p := m.path("app/_manifests", mfd.String())
		if i%2 == 1 {
			p = m.path("app/_manifests/v1")
		}
		m.must("open", func() error {
			f, err := openFile(p, os.O_RDONLY)
			if err == nil {
				files = append(files, f)
			}
			return err
		})
	}
	s := m.fs.Stats()
	if s.ManifestBuffers != 1 || s.ManifestLoads != 1 || s.ManifestBufferBytes != int64(len(mf)) {
		t.Errorf("%d opens: %d buffers of %d bytes, %d loads; want 1 of %d, 1 load",
			opens, s.ManifestBuffers, s.ManifestBufferBytes, s.ManifestLoads, len(mf))
	}
	if c := m.cache.Stats(); c.Charged != int64(len(mf)) {
		t.Errorf("cache charged %d bytes, want %d", c.Charged, len(mf))
	}
	for _, i := range []int{0, 1, opens - 1} {
		got := make([]byte, len(mf)+10)
		var n int
		m.must("read", func() (err error) {
			n, err = files[i].ReadAt(got, 0)
			if err == io.EOF {
				err = nil
			}
			return err
		})
		if !bytes.Equal(got[:n], mf) {
			t.Errorf("descriptor %d reads %d bytes, not the manifest", i, n)
		}
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	m.eventually("the buffer is let go after the last close", func() bool {
		return m.fs.Stats().ManifestBuffers == 0 && m.cache.Stats().Charged == 0
	})
}

// An open that the budget has no room for fails with ENOMEM instead of
// holding bytes nothing bounds; a revision already open still shares.
// Node methods are called directly, with bazil's request values.
func TestManifestOpenBeyondTheBudget(t *testing.T) {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A budget of 768 bytes: charges may take 384, room for one manifest.
	c := cache.New(768, 256)
	st, err := store.New(inmemory.New(), store.Options{Cache: c, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	f := New(st, Options{Logger: logger, Cache: c})
	m := &testMount{t: t, st: st}
	mf1, d1, _ := m.pushImage("app", "v1", 0)
	_, d2, _ := m.pushImage("app", "v2", 0)
	if len(mf1) > 384 || 2*len(mf1) <= 384 {
		t.Fatalf("test manifest of %d bytes: too large for the budget", len(mf1))
	}
	open := func(name string) (*manifestHandle, error) {
		h, err := (tagFile{f: f, repo: "app", name: name}).Open(ctx, &fuse.OpenRequest{Flags: fuse.OpenReadOnly}, &fuse.OpenResponse{})
		if err != nil {
			return nil, err
		}
		return h.(*manifestHandle), nil
	}
	h1, err := open("v1")
	if err != nil {
		t.Fatal(err)
	}
	h1b, err := open(d1.String())
	if err != nil || h1b.buf != h1.buf {
		t.Fatalf("second open of the same revision: %v, shared %v", err, err == nil && h1b.buf == h1.buf)
	}
	if h, err := open(d2.String()); classify(err) != syscall.ENOMEM {
		t.Errorf("open beyond the budget: %v, want ENOMEM", err)
		if err == nil {
			h.Release(ctx, &fuse.ReleaseRequest{})
		}
	}
	if s := f.Stats(); s.ManifestOpensRefused != 1 {
		t.Errorf("refused opens: %d", s.ManifestOpensRefused)
	}
	resp := &fuse.ReadResponse{Data: make([]byte, 0, 4096)}
	if err := h1b.Read(ctx, &fuse.ReadRequest{Offset: 0, Size: 4096}, resp); err != nil || !bytes.Equal(resp.Data, mf1) {
		t.Errorf("read: %v", err)
	}
	for _, h := range []*manifestHandle{h1, h1b, h1b} { // a second Release is harmless
		if err := h.Release(ctx, &fuse.ReleaseRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if c.Stats().Charged != 0 {
		t.Errorf("%d bytes still charged after the last release", c.Stats().Charged)
	}
	h2, err := open("v2")
	if err != nil {
		t.Fatalf("open once room was given back: %v", err)
	}
	h2.Release(ctx, &fuse.ReleaseRequest{})
}
