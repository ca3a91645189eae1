package fs

import (
	"context"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/store/gc"
)

// TestCollectedDropsKernelNames: the kernel caches a layer's name for the
// entry timeout (an hour here); once a collection in the process removed
// the link and the mount is told (Collected), the name is gone at once.
func TestCollectedDropsKernelNames(t *testing.T) {
	m := newMount(t, mountConfig{entryTTL: time.Hour})
	dgst := m.pushBlob("a", []byte("a layer gc unlinks"))
	p := m.path("a", "_layers", dgst.String())
	if got := m.readFile(p); string(got) != "a layer gc unlinks" {
		t.Fatalf("read %q", got)
	}
	// No revision references the link: gc removes it and the blob.
	rep, err := gc.Run(context.Background(), m.st, m.drv, gc.Options{
		UnreferencedLayers: true,
		Now:                func() time.Time { return time.Now().Add(time.Hour) },
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil || !rep.OK() {
		t.Fatalf("gc: %v %v", err, rep.Problems)
	}
	if len(rep.Blobs) != 1 || rep.Blobs[0].Digest != dgst {
		t.Fatalf("gc deleted %v, want %s", rep.Blobs, dgst)
	}
	// Its block left the block cache with it.
	if s := m.fs.Stats(); s.Cache.Forgotten != 1 {
		t.Errorf("cache: %d blocks forgotten, want the deleted blob's one", s.Cache.Forgotten)
	}
	// The kernel still has the name: nothing asked regfs.
	if _, err := m.stat(p); err != nil {
		t.Fatalf("stat before Collected: %v (the kernel was expected to have the name cached)", err)
	}
	m.fs.Collected(rep)
	m.eventually("the collected layer's name is gone", func() bool {
		_, err := m.stat(p)
		return err != nil
	})
	_, err = m.stat(p)
	wantErrno(t, "stat of a collected layer", err, syscall.ENOENT)
}
