package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.HandleWriter   = (*uploadHandle)(nil)
	_ fs.HandlePoller   = (*uploadHandle)(nil)
	_ fs.HandleFlusher  = (*uploadHandle)(nil)
	_ fs.HandleReleaser = (*uploadHandle)(nil)
)

// emptyDigest is the digest of the empty blob.
var emptyDigest = digest.FromBytes(nil)

// uploadState is an upload open in this process, shared by every handle on
// it.
type uploadState struct {
	key fileKey
	// refs counts the handles on it. Guarded by FS.mu.
	refs int

	// mu serialises writes, commits and cancels, and guards up and done.
	mu sync.Mutex
	up store.Upload
	// done is set once up is committed, cancelled or closed.
	done bool
	// modTime is when this process last wrote to up, or before its first
	// write the time storage has (read once, by Attr); zero until then.
	// Guarded by mu.
	modTime time.Time
	// private is set for an upload one handle has to itself (see
	// detachUpload): it is not in FS.uploads, and is cancelled, not kept,
	// when its handle goes without committing it.
	private bool
}

// uploadHandle is one open file descriptor on an upload.
type uploadHandle struct {
	noPoll
	f    *FS
	node uploadFile

	// smu guards st, which a write switches to a private upload (see
	// detachUpload).
	smu sync.Mutex
	st  *uploadState
	// wrote is set by a write and cleared by each commit attempt, so close
	// commits only what this handle changed. Guarded by st.mu.
	wrote bool
	// created is set when this handle created the file. Creating the empty
	// blob's upload is a complete push by itself (touch, : >); any other
	// upload needs bytes, and committing it at its first close would only
	// fail: shells open, dup2 and close a redirection's descriptor before
	// the command writes. Guarded by st.mu.
	created bool
	// opener is the process that opened the file (0 if unknown); only its
	// close commits (see closedByOpener).
	opener int
}

// Write implements fs.HandleWriter. Only appends are accepted: a write
// anywhere but the current end is EINVAL. The bytes are stored and hashed
// behind the write (see store.Upload.Write); when storing fails, the next
// write (or close) gets EIO, and the upload's size is then what storage
// holds, where the writer resumes.
func (h *uploadHandle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	p := h.node.path()
	if err := h.f.readOnly(); err != nil {
		return h.f.errno("write", p, err)
	}
	st := h.state()
	st.mu.Lock()
	if !st.done && req.Offset == 0 && !h.wrote && st.up.Size() > 0 && h.f.sharedUpload(st) {
		// A second writer of the same digest (two cp at once) starts
		// from the beginning while the first is part way: it gets an
		// upload of its own, and whichever commits second finds the
		// blob stored.
		ps, err := h.f.detachUpload(ctx, st)
		st.mu.Unlock()
		if err != nil {
			return h.f.errno("write", p, err)
		}
		h.setState(ps)
		st = ps
		st.mu.Lock()
	}
	defer st.mu.Unlock()
	if st.done {
		return h.f.errno("write", p, errStale)
	}
	n, err := st.up.WriteAt(req.Data, req.Offset)
	if errors.Is(err, store.ErrInvalidOffset) {
		h.f.reject(p, err)
		return h.f.errno("write", p, err)
	}
	resp.Size = n
	if n > 0 {
		h.wrote = true
		st.modTime = time.Now()
	}
	h.f.stats.writes.Add(1)
	h.f.stats.bytesWritten.Add(int64(n))
	return h.f.errno("write", p, err)
}

// Flush implements fs.HandleFlusher: close(2) by the process that opened
// the file commits what was written. On a digest mismatch close fails with
// EBADMSG and the upload stays, its data and hash state saved, for the rest
// to be appended.
func (h *uploadHandle) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	if !closedByOpener(h.opener, req) {
		return nil
	}
	// A commit must not stop half-way because the closing process got a
	// signal.
	return h.f.errno("close", h.node.path(), h.commit(context.WithoutCancel(ctx)))
}

// Release implements fs.HandleReleaser. When the last descriptor goes away
// with bytes no commit has seen (the opener closed before a process it
// shared the descriptor with), they are committed here; nobody is left to
// get an error, so a mismatch is only recorded in .regfs/errors.
func (h *uploadHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	if err := h.commit(h.f.ctx); err != nil && !isRejection(err) {
		h.f.log.Error("committing upload at release", "path", h.node.path(), "error", err)
	}
	h.f.releaseUpload(h.state())
	return nil
}

// state returns the upload the handle writes to.
func (h *uploadHandle) state() *uploadState {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.st
}

func (h *uploadHandle) setState(st *uploadState) {
	h.smu.Lock()
	defer h.smu.Unlock()
	h.st = st
}

// sharedUpload tells whether another handle than the caller's has st open.
func (f *FS) sharedUpload(st *uploadState) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return st.refs > 1 && !st.private
}

// detachUpload starts an upload of st's digest for one of st's handles
// alone, and drops that handle's reference to st (not the last one: st is
// shared). The caller holds st.mu.
func (f *FS) detachUpload(ctx context.Context, st *uploadState) (*uploadState, error) {
	expected := st.up.Expected()
	if expected == "" {
		return nil, errForeignUpload
	}
	repo, err := f.st.Repository(st.key.repo)
	if err != nil {
		return nil, err
	}
	up, err := repo.Uploads().Create(context.WithoutCancel(ctx), expected)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	st.refs--
	f.mu.Unlock()
	return &uploadState{key: st.key, refs: 1, up: up, private: true}, nil
}

// commit commits the upload. After a handle that wrote to it since the
// last attempt (or created the empty blob's upload), a mismatch is a
// rejection. After one that wrote nothing, a mismatch is no error: the
// writer has not started yet (a shell's redirection) or has more to write;
// but an upload whose bytes are all there is committed, because a crash
// between the last write and the commit leaves no rest to append.
func (h *uploadHandle) commit(ctx context.Context) error {
	st := h.state()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil
	}
	quiet := !(h.wrote || h.created && st.up.Expected() == emptyDigest)
	if quiet && st.up.Size() == 0 && st.up.Expected() != emptyDigest {
		return nil // nothing to commit yet, and nothing to flush
	}
	h.wrote, h.created = false, false
	desc, err := st.up.Commit(ctx)
	if err != nil {
		var mismatch *store.DigestMismatchError
		if errors.As(err, &mismatch) && quiet {
			return nil
		}
		if errors.As(err, &mismatch) {
			h.f.stats.uploadsRejected.Add(1)
			h.f.reject(h.node.path(), err)
		}
		return err
	}
	st.done = true
	h.f.forgetUpload(st)
	h.f.noteCommitted(st.key, h.opener, desc.Size)
	h.f.stats.uploadsCommitted.Add(1)
	h.f.invalidateEntry(h.node.dir, h.node.name)
	h.f.invalidateEntry(newLayersDir(h.f, h.node.dir.repo), desc.Digest.String())
	h.f.invalidateDir(h.node.dir)
	h.f.invalidateDir(newLayersDir(h.f, h.node.dir.repo))
	return nil
}

// openUpload returns the upload open in this process under k, or nil.
func (f *FS) openUpload(k fileKey) *uploadState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.uploads[k]
}

// findUpload finds the upload named k in storage: by expected digest, or
// by ID for an upload another writer left.
func (f *FS) findUpload(ctx context.Context, k fileKey) (store.UploadInfo, error) {
	repo, err := f.st.Repository(k.repo)
	if err != nil {
		return store.UploadInfo{}, err
	}
	infos, err := repo.Uploads().List(ctx)
	if err != nil {
		return store.UploadInfo{}, err
	}
	for _, in := range infos {
		if uploadName(in) == k.name {
			return in, nil
		}
	}
	return store.UploadInfo{}, fmt.Errorf("%w: %s", store.ErrUploadUnknown, k.name)
}

// uploadSize is the current size of the upload named k.
func (f *FS) uploadSize(ctx context.Context, k fileKey) (int64, error) {
	if st := f.openUpload(k); st != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.up.Size(), nil
	}
	info, err := f.findUpload(ctx, k)
	return info.Size, err
}

// acquireUpload returns the open upload named k, opening it from storage
// (resuming it, also after a restart) or, with create, starting it.
//
// Lock order: the key's lock in uploadKeys, then an uploadState's mu, then
// FS.mu.
func (f *FS) acquireUpload(ctx context.Context, k fileKey, create bool) (*uploadState, error) {
	defer f.uploadKeys.lock(k)()
	f.mu.Lock()
	if st := f.uploads[k]; st != nil {
		st.refs++
		f.mu.Unlock()
		return st, nil
	}
	f.mu.Unlock()
	repo, err := f.st.Repository(k.repo)
	if err != nil {
		return nil, err
	}
	// The upload outlives this request: it is bound to the mount's
	// context, which the request's end does not cancel but the end of
	// serving does (after closeUploads saved what is open).
	bg := f.ctx
	var up store.Upload
	info, err := f.findUpload(ctx, k)
	switch {
	case err == nil && info.Expected == "":
		return nil, errForeignUpload
	case err == nil:
		up, err = repo.Uploads().Resume(bg, info.ID)
	case errors.Is(err, store.ErrUploadUnknown) && create:
		dgst, perr := uploadDigest(k.name)
		if perr != nil {
			return nil, perr
		}
		up, err = repo.Uploads().Create(bg, dgst)
	}
	if err != nil {
		return nil, err
	}
	st := &uploadState{key: k, refs: 1, up: up}
	f.mu.Lock()
	f.uploads[k] = st
	f.mu.Unlock()
	return st, nil
}

// releaseUpload drops a handle's reference; the last one closes the upload
// (saving its data and hash state) unless it is already done.
func (f *FS) releaseUpload(st *uploadState) {
	defer f.uploadKeys.lock(st.key)()
	f.mu.Lock()
	st.refs--
	last := st.refs == 0
	if last && f.uploads[st.key] == st {
		delete(f.uploads, st.key)
	}
	f.mu.Unlock()
	if !last {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.done && st.private {
		// A duplicate of a shared upload: nobody can reach it by name.
		st.done = true
		if err := st.up.Cancel(f.ctx); err != nil {
			f.log.Error("cancelling a second writer's upload", "repository", st.key.repo, "upload", st.key.name, "error", err)
		}
		return
	}
	if !st.done {
		st.done = true
		if err := st.up.Close(); err != nil {
			f.log.Error("closing upload", "repository", st.key.repo, "upload", st.key.name, "error", err)
		}
	}
}

// forgetUpload removes a committed or cancelled upload from the open ones,
// so the next open of its name starts afresh. The caller holds st.mu.
func (f *FS) forgetUpload(st *uploadState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.uploads[st.key] == st {
		delete(f.uploads, st.key)
	}
}

// restartUpload empties the upload named k: it is cancelled and created
// again with the same expected digest.
func (f *FS) restartUpload(ctx context.Context, k fileKey) error {
	defer f.uploadKeys.lock(k)()
	repo, err := f.st.Repository(k.repo)
	if err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	if st := f.openUpload(k); st != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.done {
			return errStale
		}
		if st.up.Size() == 0 {
			return nil
		}
		if f.sharedUpload(st) {
			// Another handle is writing it: the truncating writer gets
			// an upload of its own at its first write (detachUpload).
			return nil
		}
		expected := st.up.Expected()
		if expected == "" {
			return errForeignUpload
		}
		if err := st.up.Cancel(bg); err != nil {
			return err
		}
		up, err := repo.Uploads().Create(bg, expected)
		if err != nil {
			st.done = true
			f.forgetUpload(st)
			return err
		}
		st.up = up
		return nil
	}
	info, err := f.findUpload(ctx, k)
	if err != nil {
		return err
	}
	if info.Expected == "" {
		return errForeignUpload
	}
	if info.Size == 0 {
		return nil
	}
	if err := repo.Uploads().Cancel(bg, info.ID); err != nil {
		return err
	}
	up, err := repo.Uploads().Create(bg, info.Expected)
	if err != nil {
		return err
	}
	return up.Close()
}

// cancelUpload cancels the upload named k, open here or not.
func (f *FS) cancelUpload(ctx context.Context, k fileKey) error {
	defer f.uploadKeys.lock(k)()
	bg := context.WithoutCancel(ctx)
	if st := f.openUpload(k); st != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.done {
			return fmt.Errorf("%w: %s", store.ErrUploadUnknown, k.name)
		}
		st.done = true
		f.forgetUpload(st)
		return st.up.Cancel(bg)
	}
	info, err := f.findUpload(ctx, k)
	if err != nil {
		return err
	}
	repo, err := f.st.Repository(k.repo)
	if err != nil {
		return err
	}
	return repo.Uploads().Cancel(bg, info.ID)
}

// SaveUploads saves every upload still open, as the end of Serve does, for
// a daemon that exits while Serve still runs (a lazily unmounted mount whose
// files are still open): their data and hash state are kept for a resume,
// and a later write to them is ESTALE.
func (f *FS) SaveUploads() { f.closeUploads() }

// closeUploads closes every upload still open when serving ends, so their
// data and hash state are saved for a resume.
func (f *FS) closeUploads() {
	f.mu.Lock()
	open := make([]*uploadState, 0, len(f.uploads))
	for _, st := range f.uploads {
		open = append(open, st)
	}
	f.uploads = map[fileKey]*uploadState{}
	f.mu.Unlock()
	for _, st := range open {
		st.mu.Lock()
		if !st.done {
			st.done = true
			if err := st.up.Close(); err != nil {
				f.log.Error("closing upload", "repository", st.key.repo, "upload", st.key.name, "error", err)
			}
		}
		st.mu.Unlock()
	}
}
