package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node                = manifestsDir{}
	_ fs.NodeRequestLookuper = manifestsDir{}
	_ fs.HandleReadDirAller  = manifestsDir{}
	_ fs.NodeCreater         = manifestsDir{}
	_ fs.NodeRemover         = manifestsDir{}
	_ fs.NodeLinker          = manifestsDir{}
	_ fs.NodeMkdirer         = manifestsDir{}
	_ fs.NodeSymlinker       = manifestsDir{}
	_ fs.NodeRenamer         = manifestsDir{}
	_ fs.NodeSetattrer       = manifestsDir{}

	_ fs.Node          = revisionFile{}
	_ fs.NodeOpener    = revisionFile{}
	_ fs.NodeSetattrer = revisionFile{}

	_ fs.Node          = tagFile{}
	_ fs.NodeOpener    = tagFile{}
	_ fs.NodeSetattrer = tagFile{}

	_ fs.HandleWriter   = (*manifestWriter)(nil)
	_ fs.HandlePoller   = (*manifestWriter)(nil)
	_ fs.HandleFlusher  = (*manifestWriter)(nil)
	_ fs.HandleReleaser = (*manifestWriter)(nil)

	_ fs.HandleReader = (*bytesHandle)(nil)
	_ fs.HandlePoller = (*bytesHandle)(nil)
)

// syntaxCheckLimit bounds the early JSON check of a manifest being written:
// past it, malformed JSON is found at close only, so a large manifest is
// not re-scanned on every write.
const syntaxCheckLimit = 1 << 20

// manifestsDir is a repository's _manifests/: revisions by digest and tags
// by name, and manifests being written.
type manifestsDir struct {
	f    *FS
	repo string
	ino  uint64
}

func (d manifestsDir) path(name string) string {
	return joinPath(d.repo, reservedManifests+"/"+name)
}

// Attr implements fs.Node.
func (d manifestsDir) Attr(ctx context.Context, a *fuse.Attr) error {
	dirAttr(d.f, a, d.ino, immutableTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper.
func (d manifestsDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	p := d.path(req.Name)
	if d.f.pendingManifest(fileKey{d.repo, req.Name}) != nil {
		resp.EntryValid = 0
		return tagFile{f: d.f, repo: d.repo, name: req.Name}, nil
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("lookup", p, err)
	}
	if dgst, err := store.ParseDigest(req.Name); err == nil {
		content, _, err := repo.Manifests().Get(ctx, dgst)
		if err != nil {
			return nil, d.f.errno("lookup", p, err)
		}
		resp.EntryValid = immutableTTL
		return revisionFile{f: d.f, repo: d.repo, dgst: dgst, size: int64(len(content))}, nil
	}
	if store.ValidateTag(req.Name) != nil {
		return nil, d.f.errno("lookup", p, errNotFound)
	}
	if _, err := repo.Tags().Get(ctx, req.Name); err != nil {
		return nil, d.f.errno("lookup", p, err)
	}
	resp.EntryValid = d.f.opts.EntryTTL
	return tagFile{f: d.f, repo: d.repo, name: req.Name}, nil
}

// ReadDirAll implements fs.HandleReadDirAller. Tags are resolved so that
// their d_ino matches the inode stat reports (their revision's).
func (d manifestsDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	revs, err := repo.Manifests().List(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	tags, err := repo.Tags().List(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	out := make([]fuse.Dirent, 0, len(revs)+len(tags))
	seen := map[string]bool{}
	for _, r := range revs {
		seen[r.String()] = true
		out = append(out, fuse.Dirent{Inode: digestInode(r), Type: fuse.DT_File, Name: r.String()})
	}
	for _, t := range tags {
		dg, err := repo.Tags().Get(ctx, t)
		if isNotFoundErr(err) {
			continue // untagged since the listing
		}
		if err != nil {
			return nil, d.f.errno("readdir", d.path(t), err)
		}
		seen[t] = true
		out = append(out, fuse.Dirent{Inode: digestInode(dg), Type: fuse.DT_File, Name: t})
	}
	for _, n := range d.f.pendingNames(d.repo) {
		if !seen[n] {
			out = append(out, fuse.Dirent{Inode: childInode(d.ino, n), Type: fuse.DT_File, Name: n})
		}
	}
	return out, nil
}

// Create implements fs.NodeCreater: a new tag or revision, written in full
// and verified when the file is closed.
func (d manifestsDir) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	p := d.path(req.Name)
	if err := d.f.readOnly(); err != nil {
		return nil, nil, d.f.errno("create", p, err)
	}
	if err := checkManifestName(req.Name); err != nil {
		return nil, nil, d.f.errno("create", p, err)
	}
	key := fileKey{d.repo, req.Name}
	w := &manifestWriter{f: d.f, dir: d, name: req.Name, opener: processOf(req.Pid)}
	d.f.mu.Lock()
	if d.f.pending[key] != nil {
		d.f.mu.Unlock()
		return nil, nil, d.f.errno("create", p, errExists)
	}
	d.f.pending[key] = w
	d.f.mu.Unlock()
	resp.EntryValid = 0
	return tagFile{f: d.f, repo: d.repo, name: req.Name}, w, nil
}

// checkManifestName accepts a sha256 digest or a tag.
func checkManifestName(name string) error {
	if _, err := store.ParseDigest(name); err == nil {
		return nil
	}
	if bytes.ContainsRune([]byte(name), ':') {
		return fmt.Errorf("%w: %q", store.ErrInvalidDigest, name)
	}
	return store.ValidateTag(name)
}

// Remove implements fs.NodeRemover: rm of a tag untags; rm of a revision
// deletes it and every tag pointing at it.
func (d manifestsDir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	p := d.path(req.Name)
	if err := d.f.readOnly(); err != nil {
		return d.f.errno("unlink", p, err)
	}
	if d.f.pendingManifest(fileKey{d.repo, req.Name}) != nil {
		return d.f.errno("unlink", p, errNotSupported)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return d.f.errno("unlink", p, err)
	}
	if dgst, err := store.ParseDigest(req.Name); err == nil {
		tags, err := tagsOf(ctx, repo, dgst)
		if err != nil {
			return d.f.errno("unlink", p, err)
		}
		if err := repo.Manifests().Delete(ctx, dgst); err != nil {
			return d.f.errno("unlink", p, err)
		}
		for _, t := range tags {
			d.f.invalidateEntry(d, t)
			d.f.invalidateNode(tagFile{f: d.f, repo: d.repo, name: t})
		}
		return nil
	}
	if store.ValidateTag(req.Name) != nil {
		return d.f.errno("unlink", p, errNotFound)
	}
	return d.f.errno("unlink", p, repo.Tags().Untag(ctx, req.Name))
}

// tagsOf lists the tags of repo pointing at dgst.
func tagsOf(ctx context.Context, repo store.Repository, dgst digest.Digest) ([]string, error) {
	tags, err := repo.Tags().List(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range tags {
		dg, err := repo.Tags().Get(ctx, t)
		if isNotFoundErr(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if dg == dgst {
			out = append(out, t)
		}
	}
	return out, nil
}

// Link implements fs.NodeLinker: ln _manifests/<revision or tag>
// _manifests/<tag> points the tag at the source's revision.
func (d manifestsDir) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	p := d.path(req.NewName)
	if err := d.f.readOnly(); err != nil {
		return nil, d.f.errno("link", p, err)
	}
	var srcRepo string
	var dgst digest.Digest
	switch src := old.(type) {
	case revisionFile:
		srcRepo, dgst = src.repo, src.dgst
	case tagFile:
		srcRepo = src.repo
		r, err := d.f.st.Repository(src.repo)
		if err != nil {
			return nil, d.f.errno("link", p, err)
		}
		if dgst, _, err = resolveManifest(ctx, r, src.name); err != nil {
			return nil, d.f.errno("link", p, err)
		}
	default:
		return nil, d.f.errno("link", p, errWrongKind)
	}
	if srcRepo != d.repo {
		return nil, d.f.errno("link", p, errCrossRepository)
	}
	if _, err := store.ParseDigest(req.NewName); err == nil {
		return nil, d.f.errno("link", p, errWrongKind)
	}
	if err := store.ValidateTag(req.NewName); err != nil {
		return nil, d.f.errno("link", p, err)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("link", p, err)
	}
	if err := repo.Tags().Tag(ctx, req.NewName, dgst); err != nil {
		return nil, d.f.errno("link", p, err)
	}
	n := tagFile{f: d.f, repo: d.repo, name: req.NewName}
	d.f.invalidateNode(n)
	return n, nil
}

// Mkdir implements fs.NodeMkdirer.
func (d manifestsDir) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fs.Node, error) {
	return nil, d.f.refuse("mkdir", d.path(req.Name))
}

// Symlink implements fs.NodeSymlinker.
func (d manifestsDir) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fs.Node, error) {
	return nil, d.f.refuse("symlink", d.path(req.NewName))
}

// Rename implements fs.NodeRenamer: re-tag with ln and rm instead.
func (d manifestsDir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	return d.f.refuse("rename", d.path(req.OldName))
}

// Setattr implements fs.NodeSetattrer.
func (d manifestsDir) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return d.f.setattrFixed("setattr", d.path(""), req)
}

// resolveManifest returns the digest and bytes of the revision name (a
// digest or a tag) refers to.
func resolveManifest(ctx context.Context, repo store.Repository, name string) (digest.Digest, []byte, error) {
	dgst, err := store.ParseDigest(name)
	if err != nil {
		if dgst, err = repo.Tags().Get(ctx, name); err != nil {
			return "", nil, err
		}
	}
	content, _, err := repo.Manifests().Get(ctx, dgst)
	if err != nil {
		return "", nil, err
	}
	return dgst, content, nil
}

// revisionFile is a manifest revision, _manifests/sha256:<hex>. Its bytes
// are what a registry client receives (schema1 with its signatures).
type revisionFile struct {
	f    *FS
	repo string
	dgst digest.Digest
	size int64
}

func (r revisionFile) path() string {
	return joinPath(r.repo, reservedManifests+"/"+r.dgst.String())
}

// Attr implements fs.Node.
func (r revisionFile) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = digestInode(r.dgst)
	a.Mode = 0o444
	a.Size = uint64(r.size)
	a.Blocks = blocks(r.size)
	a.Valid = immutableTTL
	r.f.attrTimes(a)
	return nil
}

// Open implements fs.NodeOpener.
func (r revisionFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsReadOnly() {
		return nil, r.f.refuseWrite("open", r.path())
	}
	repo, err := r.f.st.Repository(r.repo)
	if err != nil {
		return nil, r.f.errno("open", r.path(), err)
	}
	content, _, err := repo.Manifests().Get(ctx, r.dgst)
	if err != nil {
		return nil, r.f.errno("open", r.path(), err)
	}
	resp.Flags |= fuse.OpenKeepCache
	return &bytesHandle{f: r.f, path: r.path(), data: content}, nil
}

// Setattr implements fs.NodeSetattrer.
func (r revisionFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return r.f.setattrFixed("setattr", r.path(), req)
}

// tagFile is a tag, _manifests/<tag>, or a manifest being written under a
// name that is not in storage yet. A tag reads as the revision it points
// to now and shares its inode.
type tagFile struct {
	f    *FS
	repo string
	name string
}

func (t tagFile) path() string { return joinPath(t.repo, reservedManifests+"/"+t.name) }

func (t tagFile) dir() manifestsDir {
	return manifestsDir{f: t.f, repo: t.repo, ino: childInode(pathInode(t.repo), reservedManifests)}
}

// Attr implements fs.Node.
func (t tagFile) Attr(ctx context.Context, a *fuse.Attr) error {
	t.f.attrTimes(a)
	if w := t.f.pendingManifest(fileKey{t.repo, t.name}); w != nil {
		a.Inode = childInode(t.dir().ino, t.name)
		a.Mode = 0o644
		a.Size = uint64(w.size())
		a.Valid = 0
		return nil
	}
	repo, err := t.f.st.Repository(t.repo)
	if err != nil {
		return t.f.errno("getattr", t.path(), err)
	}
	dgst, content, err := resolveManifest(ctx, repo, t.name)
	if err != nil {
		return t.f.errno("getattr", t.path(), err)
	}
	a.Inode = digestInode(dgst)
	a.Mode = 0o644
	if dgst.String() == t.name {
		a.Mode = 0o444
	}
	a.Size = uint64(len(content))
	a.Blocks = blocks(int64(len(content)))
	a.Valid = t.f.opts.AttrTTL
	return nil
}

// Open implements fs.NodeOpener. Reading takes a snapshot of the revision
// the tag points to at open, so a re-tag never mixes two manifests in one
// read; the page cache is dropped at every open. Writing replaces the tag
// with a new manifest when the file is closed.
func (t tagFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if req.Flags.IsReadOnly() {
		repo, err := t.f.st.Repository(t.repo)
		if err != nil {
			return nil, t.f.errno("open", t.path(), err)
		}
		_, content, err := resolveManifest(ctx, repo, t.name)
		if err != nil {
			return nil, t.f.errno("open", t.path(), err)
		}
		return &bytesHandle{f: t.f, path: t.path(), data: content}, nil
	}
	if err := t.f.readOnly(); err != nil {
		return nil, t.f.errno("open", t.path(), err)
	}
	if w := t.f.pendingManifest(fileKey{t.repo, t.name}); w != nil {
		return w, nil
	}
	if _, err := store.ParseDigest(t.name); err == nil {
		// A revision in storage: its bytes are fixed by its name.
		return nil, t.f.errno("open", t.path(), errImmutable)
	}
	return &manifestWriter{f: t.f, dir: t.dir(), name: t.name, opener: processOf(req.Pid)}, nil
}

// Setattr implements fs.NodeSetattrer. Truncating to 0 is accepted, as
// every open with O_TRUNC does it first: the manifest written next replaces
// the tag whole. A manifest being written can be truncated to any size.
func (t tagFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	p := t.path()
	if err := t.f.readOnly(); err != nil {
		return t.f.errno("setattr", p, err)
	}
	if req.Valid.Mode() || req.Valid.Uid() || req.Valid.Gid() {
		return t.f.errno("setattr", p, errNotSupported)
	}
	if !req.Valid.Size() {
		return nil
	}
	if w := t.f.pendingManifest(fileKey{t.repo, t.name}); w != nil {
		return t.f.errno("setattr", p, w.truncate(int64(req.Size)))
	}
	if req.Size != 0 {
		return t.f.errno("setattr", p, errImmutable)
	}
	if _, err := store.ParseDigest(t.name); err == nil {
		return t.f.errno("setattr", p, errImmutable)
	}
	return nil
}

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

func (w *manifestWriter) truncate(n int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n > store.MaxManifestSize+1 {
		return errTooLarge
	}
	w.buf = resize(w.buf, int(n))
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
			w.malformed = &store.ErrManifestInvalid{Reason: err.Error()}
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
	w.f.dropPending(fileKey{w.dir.repo, w.name}, w)
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
// rejected (a rejected new name disappears).
func (f *FS) dropPending(k fileKey, w *manifestWriter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending[k] == w {
		delete(f.pending, k)
	}
}

// bytesHandle serves reads from bytes in memory: a manifest or a control
// file's snapshot.
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
