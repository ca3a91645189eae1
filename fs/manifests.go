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
	_ fs.NodeMkdirer         = manifestsDir{}
	_ fs.NodeSymlinker       = manifestsDir{}
	_ fs.NodeRenamer         = manifestsDir{}
	_ fs.NodeSetattrer       = manifestsDir{}
)

// manifestsDir is a repository's _manifests/: revisions by digest and tags
// by name, and manifests being written.
type manifestsDir struct {
	noXattr
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
