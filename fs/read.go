package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"

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

// lender is a BlobReader that can answer a read with the bytes of its
// cache instead of a copy of them (cache.Reader.Lend); done ends the loan.
type lender interface {
	Lend(p []byte, off int64) (data []byte, done func(), err error)
}

// lendMin is the smallest read answered with a loan of the cache's bytes;
// a smaller one, whose copy costs little, is copied. A loan ends only when
// the garbage collector finds the answer unreachable, and a program
// reading 4 KiB here and there allocates so little that the loans of many
// blocks could wait long for it.
const lendMin = 64 << 10

// Read implements fs.HandleReader. bazil hands over resp.Data with room for
// req.Size bytes; ReadAt fills it completely unless the blob ends first.
//
// A large read is answered with the cached block's own bytes instead
// (lender): bazil copies resp.Data into the message it writes to the
// kernel after Read returned, so copying them into resp.Data first would
// copy every byte twice. The cache must then not reuse the block's buffer
// until bazil is done with resp, and the one moment known for certain to
// come after that is when resp is unreachable: its cleanup ends the loan.
// (The request's context is cancelled once the answer is written, but
// also when the kernel interrupts the request, which may happen just
// before it is written.)
func (h *blobHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	var n int
	var err error
	if l, ok := h.r.(lender); ok && req.Size >= lendMin {
		var data []byte
		var done func()
		data, done, err = l.Lend(resp.Data[:req.Size], req.Offset)
		if done != nil {
			runtime.AddCleanup(resp, func(done func()) { done() }, done)
		}
		resp.Data, n = data, len(data)
	} else {
		n, err = h.r.ReadAt(resp.Data[:req.Size], req.Offset)
		resp.Data = resp.Data[:n]
	}
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
