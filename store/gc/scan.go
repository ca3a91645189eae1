package gc

// The scan: one walk of repositories/ and one of blobs/ with the store's
// layout walker (the one fsck uses), into a snapshot the mark works on.

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store"
)

// key is a sha256 digest in 32 bytes: the mark and the snapshot hold one
// per blob and per link, so a million blobs cost tens of megabytes, not
// the hundreds their digest strings would.
type key [32]byte

// keyOf returns the key of a canonical sha256 digest.
func keyOf(d digest.Digest) (key, bool) {
	var k key
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return k, false
	}
	if _, err := hex.Decode(k[:], []byte(d.Encoded())); err != nil {
		return k, false
	}
	return k, true
}

func (k key) digest() digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(k[:]))
}

// pathOf returns the driver path of a location whose names came from the
// walk or from digests keyOf accepted: valid by construction.
func pathOf(l store.Location) string {
	p, err := l.Path()
	if err != nil {
		panic(fmt.Sprintf("gc: path of %+v: %v", l, err))
	}
	return p
}

// repoSnap is one repository as the scan found it.
type repoSnap struct {
	name string
	// layers are the _layers links, each with its link file's
	// modification time: a slice, as they are only ever gone through (a
	// map would cost twice the memory, once per link of the tree).
	layers []linkSnap
	// revisions maps each revision with a link to the link's time.
	revisions map[key]time.Time
	// signatures are the schema1 signature links beside revisions.
	signatures map[key][]key
	// tags lists the tags that have a current link.
	tags []string
	// uploads are the upload directories by ID.
	uploads map[string]*uploadSnap
}

// linkSnap is one link and its modification time (Unix nanoseconds).
type linkSnap struct {
	k     key
	mtime int64
}

// uploadSnap is one upload directory.
type uploadSnap struct {
	id string
	// modTime is the latest time of anything in the upload the scan saw
	// (data, startedat, hash states): when it was last written.
	modTime    time.Time
	size       int64
	hasStarted bool
}

// newRepoSnap makes a repository's snapshot. Its maps are made on first
// use: most repositories have no signatures or uploads, and ten thousand
// empty maps are megabytes.
func newRepoSnap(name string) *repoSnap { return &repoSnap{name: name} }

// blobSnap is one blob's data object: its size and modification time
// (Unix nanoseconds, 8 bytes where a time.Time takes 24, once per blob).
type blobSnap struct {
	size, mtime int64
}

// scanned is what a walk of repositories/ found.
type scanned struct {
	repos map[string]*repoSnap
	// unreadable lists directories that could not be listed: what is in
	// them is unknown.
	unreadable []string
}

// walkRepositories walks repositories/ once into a snapshot of every
// repository (a directory with a _layers, _manifests or _uploads child);
// tags only when asked (a run that keeps every revision needs none).
// Entries that have no place in the layout (fsck reports them) are
// skipped: nothing can serve them, so they keep nothing alive.
func walkRepositories(ctx context.Context, d driver.StorageDriver, workers int, tags bool) (*scanned, error) {
	var mu sync.Mutex // the walker calls fn from several goroutines
	sc := &scanned{repos: map[string]*repoSnap{}}
	get := func(name string) *repoSnap {
		r := sc.repos[name]
		if r == nil {
			r = newRepoSnap(name)
			sc.repos[name] = r
		}
		return r
	}
	err := store.WalkRepositories(ctx, d, store.WalkOptions{Workers: workers}, func(e store.WalkEntry) error {
		if e.Err != nil {
			if e.Unreadable() {
				mu.Lock()
				sc.unreadable = append(sc.unreadable, e.Path)
				mu.Unlock()
			}
			return nil
		}
		l := e.Location
		mu.Lock()
		defer mu.Unlock()
		switch l.Kind {
		case store.PathLayersRoot, store.PathManifests, store.PathUploads:
			get(l.Repository)
		case store.PathLayerLink:
			if k, ok := keyOf(l.Digest); ok {
				r := get(l.Repository)
				r.layers = append(r.layers, linkSnap{k: k, mtime: e.ModTime.UnixNano()})
			}
		case store.PathRevisionLink:
			if k, ok := keyOf(l.Digest); ok {
				r := get(l.Repository)
				if r.revisions == nil {
					r.revisions = map[key]time.Time{}
				}
				r.revisions[k] = e.ModTime
			}
		case store.PathSignatureLink:
			rev, ok1 := keyOf(l.Digest)
			sig, ok2 := keyOf(l.Signature)
			if ok1 && ok2 {
				r := get(l.Repository)
				if r.signatures == nil {
					r.signatures = map[key][]key{}
				}
				r.signatures[rev] = append(r.signatures[rev], sig)
			}
		case store.PathTagCurrentLink:
			r := get(l.Repository)
			r.tags = append(r.tags, l.Tag)
		case store.PathTags:
			if !tags {
				return driver.ErrSkipDir
			}
		case store.PathTagIndexRoot:
			return driver.ErrSkipDir // a tag's history keeps nothing
		case store.PathUpload, store.PathUploadData, store.PathUploadStartedAt, store.PathUploadExpected, store.PathUploadStaged,
			store.PathUploadHashStatesRoot, store.PathUploadHashStates, store.PathUploadHashState:
			r := get(l.Repository)
			up := r.uploads[l.Upload]
			if up == nil {
				if r.uploads == nil {
					r.uploads = map[string]*uploadSnap{}
				}
				up = &uploadSnap{id: l.Upload}
				r.uploads[l.Upload] = up
			}
			if e.ModTime.After(up.modTime) {
				up.modTime = e.ModTime
			}
			switch l.Kind {
			case store.PathUploadData:
				up.size = e.Size
			case store.PathUploadStartedAt:
				up.hasStarted = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc: walking repositories: %w", err)
	}
	return sc, nil
}

// walkBlobs walks blobs/sha256/<hh>/<hex>/data. Directories that cannot be
// listed hide blobs the run then simply does not see.
func walkBlobs(ctx context.Context, d driver.StorageDriver, workers int) (map[key]blobSnap, error) {
	var mu sync.Mutex
	blobs := map[key]blobSnap{}
	err := store.WalkBlobs(ctx, d, store.WalkOptions{Workers: workers}, func(e store.WalkEntry) error {
		if e.Err != nil || e.Location.Kind != store.PathBlobData {
			return nil
		}
		if k, ok := keyOf(e.Location.Digest); ok {
			mu.Lock()
			blobs[k] = blobSnap{size: e.Size, mtime: e.ModTime.UnixNano()}
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc: walking blobs: %w", err)
	}
	return blobs, nil
}
