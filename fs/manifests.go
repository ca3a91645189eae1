package fs

import (
	"bytes"
	"context"
	"fmt"

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
)

// manifestsDir is a repository's _manifests/: revisions by digest and tags
// by name, and manifests being written. A tag is re-pointed with ln and rm,
// never renamed.
type manifestsDir struct {
	noXattr
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
	d.f.dirAttr(a, d.ino, immutableTTL)
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
		resp.EntryValid = d.f.opts.EntryTTL
		return revisionFile{f: d.f, repo: d.repo, dgst: dgst, size: size}, nil
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
