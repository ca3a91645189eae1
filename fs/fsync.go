package fs

import (
	"context"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

var _ fs.NodeFsyncer = synced{}

// synced is embedded in every node whose bytes are where fsync(2) promises
// as soon as a call returns: blobs and revisions are stored before they
// appear, directories change in storage with each call that changes them,
// and a manifest being written is stored whole, verified, when it is
// closed (docs/decisions.md, "Everyday habits"). Its fsync succeeds;
// without a handler bazil answers EIO, which editors report as a failed
// save. Uploads have their own (uploadFile.Fsync), which makes the bytes
// written so far durable.
type synced struct{}

// Fsync implements fs.NodeFsyncer.
func (synced) Fsync(ctx context.Context, req *fuse.FsyncRequest) error { return nil }
