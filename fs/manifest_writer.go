package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.HandleWriter   = (*manifestWriter)(nil)
	_ fs.HandlePoller   = (*manifestWriter)(nil)
	_ fs.HandleFlusher  = (*manifestWriter)(nil)
	_ fs.HandleReleaser = (*manifestWriter)(nil)
)

// syntaxCheckLimit bounds the early JSON check of a manifest being written:
// past it, malformed JSON is found at close only, so a large manifest is
// not re-scanned on every write.
const syntaxCheckLimit = 1 << 20

// manifestWriter buffers a manifest being written to _manifests/<name> and
// stores it, verified, when the file is closed.
type manifestWriter struct {
	noPoll
	f    *FS
	dir  manifestsDir
	name string
	// opener is the process that opened the file (0 if unknown); only its
	// close stores (see closedByOpener).
	opener int

	mu sync.Mutex
	// buf is the manifest so far. Guarded by mu.
	buf []byte
	// dirty is set by a write or a truncate and cleared by each attempt to
	// store. Creating the file alone stores nothing: shells open, dup2 and
	// close a redirection's descriptor before the command writes, and that
	// first close must not store (or reject) an empty manifest. Guarded by
	// mu.
	dirty bool
	// malformed is set when buf is already known not to be JSON. Guarded
	// by mu.
	malformed error
}

func (w *manifestWriter) path() string { return w.dir.path(w.name) }

func (w *manifestWriter) size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int64(len(w.buf))
}

// untouched tells whether nothing was written or truncated since the name
// was created.
func (w *manifestWriter) untouched() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.dirty && len(w.buf) == 0
}

func (w *manifestWriter) truncate(n int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n > store.MaxManifestSize+1 {
		return errTooLarge
	}
	if n > int64(len(w.buf)) {
		err := &store.ManifestInvalidError{Reason: fmt.Sprintf("truncate to %d bytes leaves a hole after the %d bytes written", n, len(w.buf))}
		w.f.stats.manifestsRejected.Add(1)
		w.f.reject(w.path(), err)
		return err
	}
	w.buf = w.buf[:n]
	w.malformed = nil
	w.dirty = true
	return nil
}

func resize(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n]
	}
	return append(b, make([]byte, n-len(b))...)
}

// Write implements fs.HandleWriter. A write whose bytes make the manifest
// malformed JSON fails at once with EBADMSG: shells do not check close(2)
// after a redirection, so `echo ... > _manifests/tag` would otherwise
// report nothing.
func (w *manifestWriter) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	if err := w.f.readOnly(); err != nil {
		return w.f.errno("write", w.path(), err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	end := req.Offset + int64(len(req.Data))
	if req.Offset < 0 || end > store.MaxManifestSize+1 {
		return w.f.errno("write", w.path(), errTooLarge)
	}
	if req.Offset > int64(len(w.buf)) {
		// A hole would read as NULs, which no manifest holds: the write
		// started past what this writer has (an append to a tag opened
		// without O_APPEND's offset, a seek).
		err := &store.ManifestInvalidError{Reason: fmt.Sprintf("write at offset %d leaves a hole after the %d bytes written", req.Offset, len(w.buf))}
		w.f.stats.manifestsRejected.Add(1)
		w.f.reject(w.path(), err)
		return w.f.errno("write", w.path(), err)
	}
	appended := req.Offset == int64(len(w.buf))
	if int(end) > len(w.buf) {
		w.buf = resize(w.buf, int(end))
	}
	copy(w.buf[req.Offset:], req.Data)
	w.dirty = true
	resp.Size = len(req.Data)
	w.f.stats.writes.Add(1)
	w.f.stats.bytesWritten.Add(int64(len(req.Data)))
	if appended && w.malformed == nil && len(w.buf) <= syntaxCheckLimit {
		if err := syntaxError(w.buf); err != nil {
			w.malformed = &store.ManifestInvalidError{Reason: err.Error()}
			w.f.stats.manifestsRejected.Add(1)
			w.f.reject(w.path(), w.malformed)
			return w.f.errno("write", w.path(), w.malformed)
		}
	}
	return nil
}

// syntaxError returns the JSON syntax error in b, if b cannot be the start
// of a JSON document whatever follows it; an incomplete document is not an
// error.
func syntaxError(b []byte) error {
	var v json.RawMessage
	err := json.NewDecoder(bytes.NewReader(b)).Decode(&v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("malformed JSON at offset %d: %v", se.Offset, se)
	}
	return nil
}

// Flush implements fs.HandleFlusher: close(2) by the process that opened
// the file stores the manifest. A rejected one changes nothing in storage
// and close fails with EBADMSG; .regfs/errors lists every reason.
func (w *manifestWriter) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	if !closedByOpener(w.opener, req) {
		return nil
	}
	// Storing must not stop half-way because the closing process got a
	// signal.
	return w.f.errno("close", w.path(), w.store(context.WithoutCancel(ctx)))
}

// Release implements fs.HandleReleaser. Bytes no close has stored yet
// (the opener closed first) are stored now; a rejection is only recorded.
// A name created but never written disappears with its last descriptor.
func (w *manifestWriter) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	if err := w.store(w.f.ctx); err != nil && !isRejection(err) {
		w.f.log.Error("storing manifest at release", "path", w.path(), "error", err)
	}
	if w.f.dropPending(fileKey{w.dir.repo, w.name}, w) {
		w.f.invalidateDir(w.dir) // the name leaves the listing
	}
	return nil
}

// store verifies and stores the manifest if it was written since the last
// attempt.
func (w *manifestWriter) store(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.dirty {
		return nil
	}
	w.dirty = false
	// Stored, the revision's name joins the listing of _manifests;
	// rejected, a new name leaves it (once no longer pending).
	defer w.f.invalidateDir(w.dir)
	defer w.f.dropPending(fileKey{w.dir.repo, w.name}, w)
	if w.malformed != nil {
		return w.malformed
	}
	var tag string
	want, err := store.ParseDigest(w.name)
	if err != nil {
		tag, want = w.name, ""
	}
	repo, err := w.f.st.Repository(w.dir.repo)
	if err != nil {
		return err
	}
	dgst, err := repo.Manifests().Put(ctx, w.buf, tag, want)
	if err != nil {
		if isRejection(err) {
			w.f.stats.manifestsRejected.Add(1)
			w.f.reject(w.path(), err)
		}
		return err
	}
	w.f.stats.manifestsStored.Add(1)
	w.f.invalidateEntry(w.dir, w.name)
	w.f.invalidateNode(tagFile{f: w.f, repo: w.dir.repo, name: w.name})
	if tag != "" {
		w.f.invalidateEntry(w.dir, dgst.String())
	}
	return nil
}

// pendingManifest returns the writer of a manifest being written to a new
// name, or nil.
func (f *FS) pendingManifest(k fileKey) *manifestWriter {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending[k]
}

// pendingNames lists the names being written in repo's _manifests.
func (f *FS) pendingNames(repo string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.pending {
		if k.repo == repo {
			out = append(out, k.name)
		}
	}
	return out
}

// dropPending forgets w as the writer of k, once it has been stored or
// rejected (a rejected new name disappears); it tells whether it did.
func (f *FS) dropPending(k fileKey, w *manifestWriter) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending[k] == w {
		delete(f.pending, k)
		return true
	}
	return false
}
