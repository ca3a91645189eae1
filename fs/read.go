package fs

import (
	"bytes"
	"context"
	"errors"
	"io"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.HandleReader   = (*blobHandle)(nil)
	_ fs.HandlePoller   = (*blobHandle)(nil)
	_ fs.HandleReleaser = (*blobHandle)(nil)
	_ fs.HandleReader   = (*bytesHandle)(nil)
	_ fs.HandlePoller   = (*bytesHandle)(nil)
)

// blobHandle reads an open blob through the block cache.
type blobHandle struct {
	noPoll
	f    *FS
	path string
	r    store.BlobReader
	// release ends the handle's count in FS.openLayers.
	release func()
}

// Read implements fs.HandleReader. bazil hands over resp.Data with room for
// req.Size bytes; ReadAt fills it completely unless the blob ends first.
func (h *blobHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	n, err := h.r.ReadAt(resp.Data[:req.Size], req.Offset)
	resp.Data = resp.Data[:n]
	h.f.countRead(n)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return h.f.errno("read", h.path, err)
}

// Release implements fs.HandleReleaser.
func (h *blobHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	if h.release != nil {
		h.release()
	}
	return h.f.errno("release", h.path, h.r.Close())
}

func (f *FS) countRead(n int) {
	f.stats.reads.Add(1)
	f.stats.bytesRead.Add(int64(n))
}

// bytesHandle serves reads from bytes in memory: a control file's snapshot.
// Manifests are read through manifestHandle, which shares its bytes.
type bytesHandle struct {
	noPoll
	f    *FS
	path string
	data []byte
}

// Read implements fs.HandleReader.
func (h *bytesHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	n, err := bytes.NewReader(h.data).ReadAt(resp.Data[:req.Size], req.Offset)
	resp.Data = resp.Data[:n]
	h.f.countRead(n)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return h.f.errno("read", h.path, err)
}
