package fs

import (
	"context"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

var (
	_ fs.Node          = committedFile{}
	_ fs.NodeOpener    = committedFile{}
	_ fs.NodeSetattrer = committedFile{}
)

// committedGrace is how long the process that committed an upload still
// finds its name in _uploads (committedFile).
const committedGrace = time.Minute

// committedUpload is an upload committed lately, for committedFile.
type committedUpload struct {
	// pid is the process that opened and committed it.
	pid   int
	size  int64
	until time.Time
}

// committedFile is the name of an upload, shown after its commit to the
// process that committed it, and to no other, for committedGrace. Tools
// that set a file's mode or times by name after closing it (install -m)
// would otherwise fail on a copy that stored everything, because the
// upload moved to _layers at close. Every other process sees the name gone
// at once, as the upload is: listings never show it. Its attributes can be
// set and change nothing; opening it for writing starts the upload again,
// as creating the name would.
type committedFile struct {
	noXattr
	synced
	f    *FS
	dir  uploadsDir
	name string
	size int64
}

func (c committedFile) path() string { return c.dir.path(c.name) }

// Attr implements fs.Node: what the upload showed, complete.
func (c committedFile) Attr(ctx context.Context, a *fuse.Attr) error {
	c.f.baseAttr(a)
	a.Inode = childInode(c.dir.ino, c.name)
	a.Mode = c.f.mode(modeFile)
	a.Size = uint64(c.size)
	a.Blocks = blocks(c.size)
	a.Valid = 0
	return nil
}

// Open implements fs.NodeOpener: for writing, a new upload of the name,
// as uploadsDir.Create starts it.
func (c committedFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsWriteOnly() {
		return nil, c.f.errno("open", c.path(), errNotReadable)
	}
	if err := c.f.readOnly(); err != nil {
		return nil, c.f.errno("open", c.path(), err)
	}
	n := uploadFile{f: c.f, dir: c.dir, name: c.name}
	st, err := c.f.acquireUpload(ctx, n.key(), true)
	if err != nil {
		return nil, c.f.errno("open", c.path(), err)
	}
	resp.Flags |= UploadOpenFlags
	return &uploadHandle{f: c.f, node: n, st: st, created: true, opener: processOf(req.Pid)}, nil
}

// Setattr implements fs.NodeSetattrer: modes, owners and times change
// nothing; a size is an upload's, once one is open again under the name.
func (c committedFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	n := uploadFile{f: c.f, dir: c.dir, name: c.name}
	if req.Valid.Size() && c.f.openUpload(n.key()) != nil {
		return n.Setattr(ctx, req, resp)
	}
	return c.f.setattrFixed("setattr", c.path(), req)
}

// noteCommitted records the commit of the upload k by the process pid
// (nothing when it is unknown), and drops the records that expired.
func (f *FS) noteCommitted(k fileKey, pid int, size int64) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, c := range f.committed {
		if now.After(c.until) {
			delete(f.committed, key)
		}
	}
	if pid != 0 {
		f.committed[k] = committedUpload{pid: pid, size: size, until: now.Add(committedGrace)}
	}
}

// committedFor returns the record of k's commit when the thread tid belongs
// to the process that committed it, within committedGrace.
func (f *FS) committedFor(k fileKey, tid uint32) (committedUpload, bool) {
	f.mu.Lock()
	c, ok := f.committed[k]
	f.mu.Unlock()
	if !ok || time.Now().After(c.until) {
		return committedUpload{}, false
	}
	if p := processOf(tid); p == 0 || p != c.pid {
		return committedUpload{}, false
	}
	return c, true
}
