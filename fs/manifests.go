package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

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
	_ fs.NodeRenamer         = manifestsDir{}
)

// manifestsDir is a repository's _manifests/: revisions by digest and tags
// by name, and manifests being written. A tag is re-pointed with ln, or
// moved with mv (Rename).
type manifestsDir struct {
	noXattr
	synced
	refusals
	repo string
	ino  uint64
}

func newManifestsDir(f *FS, repo string) manifestsDir {
	return manifestsDir{
		refusals: refusals{f: f, dir: joinPath(repo, reservedManifests)},
		repo:     repo,
		ino:      childInode(pathInode(repo), reservedManifests),
	}
}

// Attr implements fs.Node.
func (d manifestsDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.f.dirAttr(a, d.dir, d.ino, immutableTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper. Every entry is valid for the
// short entry timeout, revisions included: another writer may delete a
// revision, and its name must then disappear soon.
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
		size, err := d.f.manifestSize(ctx, repo, dgst)
		if err != nil {
			return nil, d.f.errno("lookup", p, err)
		}
		mtime, err := d.f.linkTime(ctx, d.dir, dgst, repo.Manifests().LinkTime)
		if err != nil {
			return nil, d.f.errno("lookup", p, err)
		}
		d.f.noteTime(d.dir, mtime)
		resp.EntryValid = d.f.opts.EntryTTL
		return revisionFile{f: d.f, repo: d.repo, dgst: dgst, size: size, mtime: mtime}, nil
	}
	if store.ValidateTag(req.Name) != nil {
		return nil, d.f.errno("lookup", p, errNotFound)
	}
	if _, err := repo.Tags().Get(ctx, req.Name); err != nil {
		return nil, d.f.errno("lookup", p, err)
	}
	d.f.forgetRename(d.repo, req.Name)
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
	revs, err := repo.Manifests().Linked(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	tags, err := repo.Tags().List(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	out := dots(d.ino, pathInode(d.repo))
	seen := map[string]bool{}
	d.f.rememberListing(d.dir, revs)
	var newest time.Time
	for _, r := range revs {
		if r.ModTime.After(newest) {
			newest = r.ModTime
		}
		seen[r.Digest.String()] = true
		out = append(out, fuse.Dirent{Inode: digestInode(r.Digest), Type: fuse.DT_File, Name: r.Digest.String()})
	}
	d.f.noteTime(d.dir, newest) // shows later: see layersDir.ReadDirAll
	for _, t := range tags {
		dg, err := repo.Tags().Get(ctx, t)
		if isNotFoundErr(err) {
			continue // untagged since the listing
		}
		if skipBadLink(d.f, d.path(t), err) {
			continue
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
	d.f.expiry.listed(d)
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
	delete(d.f.renamed, key)
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
		tags, err := d.f.tagsOf(ctx, repo, dgst)
		if err != nil {
			return d.f.errno("unlink", p, err)
		}
		d.f.forgetListed(d.dir, dgst)
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

// tagsOf lists the tags of repo pointing at dgst. A tag whose link is
// unreadable points nowhere known, and is left out.
func (f *FS) tagsOf(ctx context.Context, repo store.Repository, dgst digest.Digest) ([]string, error) {
	tags, err := repo.Tags().List(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range tags {
		dg, err := repo.Tags().Get(ctx, t)
		if isNotFoundErr(err) || skipBadLink(f, joinPath(repo.Name(), reservedManifests+"/"+t), err) {
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
		if dgst, err = resolveManifest(ctx, r, src.name); err != nil {
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
	d.f.forgetRename(d.repo, req.NewName)
	n := tagFile{f: d.f, repo: d.repo, name: req.NewName}
	d.f.invalidateNode(n)
	return n, nil
}

// resolveName returns the digest of the revision name (a digest or a tag)
// refers to; a digest is taken as it is.
func resolveName(ctx context.Context, repo store.Repository, name string) (digest.Digest, error) {
	if dgst, err := store.ParseDigest(name); err == nil {
		return dgst, nil
	}
	return repo.Tags().Get(ctx, name)
}

// resolveManifest returns the digest of the revision name (a digest or a
// tag) refers to, once the revision is seen to exist.
func resolveManifest(ctx context.Context, repo store.Repository, name string) (digest.Digest, error) {
	dgst, err := resolveName(ctx, repo, name)
	if err != nil {
		return "", err
	}
	ok, err := repo.Manifests().Exists(ctx, dgst)
	if err != nil || !ok {
		return "", manifestGone(err, repo, dgst)
	}
	return dgst, nil
}

// Rename implements fs.NodeRenamer: mv _manifests/a _manifests/b moves the
// tag: b is pointed at a's revision, then a is untagged. Through the mount
// b never disappears (it is re-pointed before a goes), and both name the
// revision for the moment between; a registry sees the same. This is also
// how editors and sed -i save a tag: they write a temporary name, which is
// stored (verified) as a tag when closed, then rename it over the tag.
// Revisions are named by their content and cannot move; a name still open
// for writing is EBUSY (it is stored at close).
func (d manifestsDir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	p := d.path(req.OldName)
	if err := d.f.readOnly(); err != nil {
		return d.f.errno("rename", p, err)
	}
	to := renameTarget(newDir, req.NewName)
	dst, ok := newDir.(manifestsDir)
	if !ok {
		return d.f.refuseRename(p, to, &because{why: "a tag can only be renamed within _manifests/", kind: errNotSupported})
	}
	if dst.repo != d.repo {
		return d.f.refuseRename(p, to, &because{why: "a tag cannot move to another repository: tag the revision there instead", kind: errCrossRepository})
	}
	if d.f.pendingManifest(fileKey{d.repo, req.OldName}) != nil || d.f.pendingManifest(fileKey{d.repo, req.NewName}) != nil {
		return d.f.refuseRename(p, to, errBusy)
	}
	if _, err := store.ParseDigest(req.OldName); err == nil {
		return d.f.refuseRename(p, to, &because{why: "a revision is named by its digest and cannot be renamed: ln it to a tag name instead", kind: errImmutable})
	}
	if _, err := store.ParseDigest(req.NewName); err == nil {
		return d.f.refuseRename(p, to, &because{why: "a tag cannot be renamed to a digest", kind: errWrongKind})
	}
	if store.ValidateTag(req.OldName) != nil {
		return d.f.errno("rename", p, errNotFound)
	}
	if err := store.ValidateTag(req.NewName); err != nil {
		return d.f.refuseRename(p, to, err)
	}
	if req.OldName == req.NewName {
		return nil
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return d.f.errno("rename", p, err)
	}
	dgst, err := repo.Tags().Get(ctx, req.OldName)
	if err != nil {
		return d.f.errno("rename", p, err)
	}
	if err := repo.Tags().Tag(ctx, req.NewName, dgst); err != nil {
		return d.f.errno("rename", p, err)
	}
	d.f.invalidateNode(tagFile{f: d.f, repo: d.repo, name: req.NewName})
	if err := repo.Tags().Untag(ctx, req.OldName); err != nil && !isNotFoundErr(err) {
		return d.f.errno("rename", p, err)
	}
	// The kernel moves the old name's entry, and with it the node made
	// for the old tag, to the new name. The node answers for the new
	// name from now on (tagFile.moved); the entry is also dropped, so the
	// next path walk looks the new name up afresh.
	d.f.noteRename(d.repo, req.OldName, req.NewName)
	d.f.invalidateEntry(d, req.NewName)
	return nil
}

// skipBadLink tells whether err is a link that stayed unreadable
// (*store.CorruptLinkError, which the store has counted in
// Stats.BadLinks), for a walk over many names to log and leave out, so
// that one bad tag never hides the others.
func skipBadLink(f *FS, name string, err error) bool {
	var bad *store.CorruptLinkError
	if !errors.As(err, &bad) {
		return false
	}
	f.log.Warn("skipping unreadable link", "path", name, "error", err)
	return true
}

// noteRename records that the kernel's entry old, with the node it holds,
// is now called new: the node made for the name that answers for old now
// answers for new. A node that answered for new stays with its own name.
func (f *FS) noteRename(repo, old, new string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	made := old
	for k, n := range f.renamed {
		if k.repo == repo && n == old {
			made = k.name
			break
		}
	}
	for k, n := range f.renamed {
		if k.repo == repo && n == new {
			delete(f.renamed, k) // unlinked by the kernel: its own name again
		}
	}
	if made == new {
		delete(f.renamed, fileKey{repo, made})
	} else {
		f.renamed[fileKey{repo, made}] = new
	}
}

// forgetRename drops a record of noteRename for the name n, which is now
// made anew (looked up, created, linked): a node for n answers for n again.
func (f *FS) forgetRename(repo, n string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.renamed, fileKey{repo, n})
}
