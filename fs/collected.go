package fs

import (
	"path"

	"bazil.org/fuse/fs"

	"github.com/regfs/regfs/store/gc"
)

// Collected tells the mount what a collection in this process (the
// mount's --gc-interval) deleted, so that the kernel forgets the names
// now gone at once instead of when their entry timeouts run out: each
// revision in _manifests/, link in _layers/ and upload in _uploads/ it
// removed, and each repository it pruned. The listings of those
// directories are dropped too. The blobs it deleted are no name in the
// mount (a blob goes only once nothing links it), but a descriptor opened
// before their last link went may still read them: the kernel drops
// their pages (the store has already dropped their cached blocks), so
// such reads fail. A dry run changed nothing.
func (f *FS) Collected(rep *gc.Report) {
	if rep == nil || rep.DryRun {
		return
	}
	for _, b := range rep.Blobs {
		f.blobGone(b.Digest)
	}
	for _, r := range rep.Repositories {
		if r.Removed {
			f.forgetDirectory(path.Dir("/" + r.Name)[1:], r.Name)
			f.invalidateEntry(f.dirNode(path.Dir("/" + r.Name)[1:]), path.Base(r.Name))
			continue
		}
		if len(r.Revisions) > 0 {
			d := newManifestsDir(f, r.Name)
			for _, rev := range r.Revisions {
				f.invalidateEntry(d, rev.String())
			}
			f.invalidateDir(d)
		}
		if len(r.Links) > 0 {
			d := newLayersDir(f, r.Name)
			for _, l := range r.Links {
				f.invalidateEntry(d, l.String())
			}
			f.invalidateDir(d)
		}
		if len(r.Uploads) > 0 {
			d := newUploadsDir(f, r.Name)
			for _, u := range r.Uploads {
				f.invalidateEntry(d, u.ID)
			}
			f.invalidateDir(d)
		}
	}
}

// dirNode is the node of the namespace directory p ("" is the root).
func (f *FS) dirNode(p string) fs.Node {
	if p == "" {
		return newRootDir(f)
	}
	return newNSDir(f, p)
}
