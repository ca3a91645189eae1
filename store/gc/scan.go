package gc

// The scan: one walk of repositories/ and one of blobs/, into a snapshot
// the mark works on. This is the only file that knows how walked paths map
// to layout objects; when store offers one walker of the layout (shared
// with fsck), it replaces walkRepositories and walkBlobs and nothing else
// changes.

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
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
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return key{}, false
	}
	return keyOfHex(d.Encoded())
}

// keyOfHex returns the key of 64 lowercase hex digits.
func keyOfHex(s string) (key, bool) {
	var k key
	if len(s) != 64 || strings.ToLower(s) != s {
		return k, false
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, false
	}
	return k, true
}

func (k key) digest() digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(k[:]))
}

// repoSnap is one repository as the scan found it.
type repoSnap struct {
	name string
	// valid tells whether the name is one the store accepts; a repository
	// that is not is never swept, and everything it links stays live.
	valid bool
	// layers maps each _layers link to its link file's modification time.
	layers map[key]time.Time
	// revisions maps each revision with a link to the link's time.
	revisions map[key]time.Time
	// signatures are the schema1 signature links beside revisions.
	signatures map[key][]key
	// tags lists the tags that have a current link.
	tags []string
	// uploads are the upload directories by ID.
	uploads map[string]*uploadSnap
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

func newRepoSnap(name string, valid bool) *repoSnap {
	return &repoSnap{
		name: name, valid: valid,
		layers:     map[key]time.Time{},
		revisions:  map[key]time.Time{},
		signatures: map[key][]key{},
		uploads:    map[string]*uploadSnap{},
	}
}

// blobSnap is one blob's data object.
type blobSnap struct {
	size    int64
	modTime time.Time
}

// walkRepositories walks repositories/ once and calls the repo callback
// for each repository directory found (a directory with a _layers,
// _manifests or _uploads child), filling its snapshot. validName tells
// the names the store accepts.
func walkRepositories(ctx context.Context, d driver.StorageDriver, validName func(string) bool) (map[string]*repoSnap, error) {
	root := store.RepositoriesPath()
	repos := map[string]*repoSnap{}
	get := func(name string) *repoSnap {
		r := repos[name]
		if r == nil {
			r = newRepoSnap(name, validName(name))
			repos[name] = r
		}
		return r
	}
	err := d.Walk(ctx, root, func(fi driver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		parts := strings.Split(strings.TrimPrefix(fi.Path, root+"/"), "/")
		i := 0
		for i < len(parts) && !strings.HasPrefix(parts[i], "_") {
			i++
		}
		if i == len(parts) {
			return nil // a namespace or repository directory: go on down
		}
		if i == 0 {
			return skipIfDir(fi)
		}
		r := get(strings.Join(parts[:i], "/"))
		rest := parts[i+1:]
		switch parts[i] {
		case "_layers":
			return scanLayer(r, fi, rest)
		case "_manifests":
			return scanManifests(r, fi, rest)
		case "_uploads":
			return scanUpload(r, fi, rest)
		}
		return skipIfDir(fi)
	})
	if err != nil && !driver.IsNotFound(err) {
		return nil, fmt.Errorf("gc: walking repositories: %w", err)
	}
	return repos, nil
}

// scanLayer: _layers/sha256/<hex>/link
func scanLayer(r *repoSnap, fi driver.FileInfo, rest []string) error {
	switch len(rest) {
	case 0:
		return nil
	case 1:
		if rest[0] == "sha256" {
			return nil
		}
	case 2:
		if _, ok := keyOfHex(rest[1]); ok && rest[0] == "sha256" {
			return nil
		}
	case 3:
		if k, ok := keyOfHex(rest[1]); ok && rest[2] == "link" && !fi.IsDir {
			r.layers[k] = fi.ModTime
		}
	}
	return skipIfDir(fi)
}

// scanManifests: _manifests/revisions/sha256/<hex>/link,
// .../<hex>/signatures/sha256/<sig>/link and _manifests/tags/<tag>/current/link.
func scanManifests(r *repoSnap, fi driver.FileInfo, rest []string) error {
	if len(rest) == 0 {
		return nil
	}
	switch rest[0] {
	case "revisions":
		return scanRevision(r, fi, rest[1:])
	case "tags":
		switch {
		case len(rest) <= 2:
			return nil
		case len(rest) == 3 && rest[2] == "current":
			return nil
		case len(rest) == 4 && rest[2] == "current" && rest[3] == "link" && !fi.IsDir:
			r.tags = append(r.tags, rest[1])
		}
	}
	return skipIfDir(fi)
}

func scanRevision(r *repoSnap, fi driver.FileInfo, rest []string) error {
	if len(rest) == 0 {
		return nil
	}
	if rest[0] != "sha256" {
		return skipIfDir(fi)
	}
	if len(rest) == 1 {
		return nil
	}
	rev, ok := keyOfHex(rest[1])
	if !ok {
		return skipIfDir(fi)
	}
	switch {
	case len(rest) == 2:
		return nil
	case len(rest) == 3 && rest[2] == "link" && !fi.IsDir:
		r.revisions[rev] = fi.ModTime
		return nil
	case len(rest) == 3 && rest[2] == "signatures", len(rest) == 4 && rest[3] == "sha256":
		return nil
	case len(rest) == 5:
		if _, ok := keyOfHex(rest[4]); ok {
			return nil
		}
	case len(rest) == 6 && rest[5] == "link" && !fi.IsDir:
		if sig, ok := keyOfHex(rest[4]); ok {
			r.signatures[rev] = append(r.signatures[rev], sig)
		}
	}
	return skipIfDir(fi)
}

// scanUpload: _uploads/<id>/ and everything in it.
func scanUpload(r *repoSnap, fi driver.FileInfo, rest []string) error {
	if len(rest) == 0 {
		return nil
	}
	up := r.uploads[rest[0]]
	if up == nil {
		if !fi.IsDir {
			return nil
		}
		up = &uploadSnap{id: rest[0]}
		r.uploads[rest[0]] = up
	}
	if fi.ModTime.After(up.modTime) {
		up.modTime = fi.ModTime
	}
	if len(rest) == 2 && !fi.IsDir {
		switch rest[1] {
		case "data":
			up.size = fi.Size
		case "startedat":
			up.hasStarted = true
		}
	}
	return nil
}

// walkBlobs walks blobs/sha256/<hh>/<hex>/data.
func walkBlobs(ctx context.Context, d driver.StorageDriver) (map[key]blobSnap, error) {
	root := store.BlobsPath()
	blobs := map[key]blobSnap{}
	err := d.Walk(ctx, root, func(fi driver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		parts := strings.Split(strings.TrimPrefix(fi.Path, root+"/"), "/")
		switch len(parts) {
		case 1:
			if fi.IsDir && len(parts[0]) == 2 {
				return nil
			}
		case 2:
			if _, ok := keyOfHex(parts[1]); ok && fi.IsDir && strings.HasPrefix(parts[1], parts[0]) {
				return nil
			}
		case 3:
			if k, ok := keyOfHex(parts[1]); ok && parts[2] == "data" && !fi.IsDir {
				blobs[k] = blobSnap{size: fi.Size, modTime: fi.ModTime}
			}
		}
		return skipIfDir(fi)
	})
	if err != nil && !driver.IsNotFound(err) {
		return nil, fmt.Errorf("gc: walking blobs: %w", err)
	}
	return blobs, nil
}

func skipIfDir(fi driver.FileInfo) error {
	if fi.IsDir {
		return driver.ErrSkipDir
	}
	return nil
}
