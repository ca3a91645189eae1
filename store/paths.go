package store

// This file is the only place where storage paths are built. The layout is
// docker/distribution v2's, byte for byte, so that a directory or bucket
// written by the registry mounts as is and the registry serves what regfs
// writes:
//
//	<root>/docker/registry/v2/
//	  blobs/
//	    sha256/<hex[0:2]>/<hex>/data                      blob bytes (layer, config, manifest, signature)
//	  repositories/
//	    <name>/                                           one or more path components
//	      _layers/
//	        sha256/<hex>/link                             blob linked into the repository
//	      _manifests/
//	        revisions/
//	          sha256/<hex>/link                           manifest revision in the repository
//	          sha256/<hex>/signatures/sha256/<sig>/link   schema1 JWS signature (a blob)
//	        tags/<tag>/
//	          current/link                                what the tag points to now
//	          index/sha256/<hex>/link                     every digest the tag has had
//	      _uploads/<uuid>/
//	        data                                          upload bytes so far
//	        startedat                                     RFC 3339 UTC, seconds, no newline
//	        hashstates/sha256/<offset>                    crypto/sha256 MarshalBinary state
//	        regfs-expected                                regfs only: the digest the upload must hash to
//
// A link file holds exactly a digest string ("sha256:" and 64 lowercase hex
// digits, 71 bytes) with no newline. Reserved names start with '_', which a
// repository path component never does, so they cannot collide.
//
// Each kind of path has a small spec type; pathFor turns a spec into a path
// after checking its parts, so a malformed name or digest can never escape
// the layout.

import (
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// storageRoot is the registry's root below the driver's root.
const storageRoot = "/docker/registry/v2"

// Names of the reserved repository children and of the regfs-only file.
const (
	layersDirName    = "_layers"
	manifestsDirName = "_manifests"
	uploadsDirName   = "_uploads"
	linkFileName     = "link"
	expectedFileName = "regfs-expected"
)

// pathSpec is implemented by the spec types below; the method is a marker so
// that only they can be passed to pathFor.
type pathSpec interface{ pathSpec() }

type (
	// repositoriesRootPathSpec: repositories/ (or repositories/<prefix>/ with
	// a namespace prefix, which may be empty).
	repositoriesRootPathSpec struct{ prefix string }
	// repositoryPathSpec: repositories/<name>/
	repositoryPathSpec struct{ name string }

	// blobsPathSpec: blobs/sha256/, the root of every blob (fsck walks it)
	blobsPathSpec struct{}
	// blobDataPathSpec: blobs/sha256/<hh>/<hex>/data
	blobDataPathSpec struct{ digest digest.Digest }

	// layersPathSpec: repositories/<name>/_layers/sha256/
	layersPathSpec struct{ name string }
	// layerLinkPathSpec: repositories/<name>/_layers/sha256/<hex>/link
	layerLinkPathSpec struct {
		name   string
		digest digest.Digest
	}
	// layerPathSpec: repositories/<name>/_layers/sha256/<hex>/
	layerPathSpec struct {
		name   string
		digest digest.Digest
	}

	// manifestRevisionsPathSpec: repositories/<name>/_manifests/revisions/sha256/
	manifestRevisionsPathSpec struct{ name string }
	// manifestRevisionPathSpec: .../_manifests/revisions/sha256/<hex>/
	manifestRevisionPathSpec struct {
		name     string
		revision digest.Digest
	}
	// manifestRevisionLinkPathSpec: .../_manifests/revisions/sha256/<hex>/link
	manifestRevisionLinkPathSpec struct {
		name     string
		revision digest.Digest
	}
	// manifestSignaturesPathSpec: .../revisions/sha256/<hex>/signatures/sha256/
	manifestSignaturesPathSpec struct {
		name     string
		revision digest.Digest
	}
	// manifestSignatureLinkPathSpec: .../revisions/sha256/<hex>/signatures/sha256/<sig>/link
	manifestSignatureLinkPathSpec struct {
		name      string
		revision  digest.Digest
		signature digest.Digest
	}

	// manifestTagsPathSpec: repositories/<name>/_manifests/tags/
	manifestTagsPathSpec struct{ name string }
	// manifestTagPathSpec: .../_manifests/tags/<tag>/
	manifestTagPathSpec struct{ name, tag string }
	// manifestTagCurrentLinkPathSpec: .../_manifests/tags/<tag>/current/link
	manifestTagCurrentLinkPathSpec struct{ name, tag string }
	// manifestTagIndexPathSpec: .../_manifests/tags/<tag>/index/sha256/
	manifestTagIndexPathSpec struct{ name, tag string }
	// manifestTagIndexEntryPathSpec: .../_manifests/tags/<tag>/index/sha256/<hex>/
	manifestTagIndexEntryPathSpec struct {
		name, tag string
		revision  digest.Digest
	}
	// manifestTagIndexEntryLinkPathSpec: .../tags/<tag>/index/sha256/<hex>/link
	manifestTagIndexEntryLinkPathSpec struct {
		name, tag string
		revision  digest.Digest
	}

	// uploadsPathSpec: repositories/<name>/_uploads/
	uploadsPathSpec struct{ name string }
	// uploadPathSpec: repositories/<name>/_uploads/<uuid>/
	uploadPathSpec struct{ name, id string }
	// uploadDataPathSpec: .../_uploads/<uuid>/data
	uploadDataPathSpec struct{ name, id string }
	// uploadStartedAtPathSpec: .../_uploads/<uuid>/startedat
	uploadStartedAtPathSpec struct{ name, id string }
	// uploadExpectedPathSpec: .../_uploads/<uuid>/regfs-expected
	uploadExpectedPathSpec struct{ name, id string }
	// uploadHashStatesPathSpec: .../_uploads/<uuid>/hashstates/sha256/
	uploadHashStatesPathSpec struct{ name, id string }
	// uploadHashStatePathSpec: .../_uploads/<uuid>/hashstates/sha256/<offset>
	uploadHashStatePathSpec struct {
		name, id string
		offset   int64
	}
)

func (repositoriesRootPathSpec) pathSpec()          {}
func (repositoryPathSpec) pathSpec()                {}
func (blobsPathSpec) pathSpec()                     {}
func (blobDataPathSpec) pathSpec()                  {}
func (layersPathSpec) pathSpec()                    {}
func (layerLinkPathSpec) pathSpec()                 {}
func (layerPathSpec) pathSpec()                     {}
func (manifestRevisionsPathSpec) pathSpec()         {}
func (manifestRevisionPathSpec) pathSpec()          {}
func (manifestRevisionLinkPathSpec) pathSpec()      {}
func (manifestSignaturesPathSpec) pathSpec()        {}
func (manifestSignatureLinkPathSpec) pathSpec()     {}
func (manifestTagsPathSpec) pathSpec()              {}
func (manifestTagPathSpec) pathSpec()               {}
func (manifestTagCurrentLinkPathSpec) pathSpec()    {}
func (manifestTagIndexPathSpec) pathSpec()          {}
func (manifestTagIndexEntryPathSpec) pathSpec()     {}
func (manifestTagIndexEntryLinkPathSpec) pathSpec() {}
func (uploadsPathSpec) pathSpec()                   {}
func (uploadPathSpec) pathSpec()                    {}
func (uploadDataPathSpec) pathSpec()                {}
func (uploadStartedAtPathSpec) pathSpec()           {}
func (uploadExpectedPathSpec) pathSpec()            {}
func (uploadHashStatesPathSpec) pathSpec()          {}
func (uploadHashStatePathSpec) pathSpec()           {}

// pathFor returns the driver path of spec. Directories come without a
// trailing slash. Every name, tag, digest and upload ID is validated here,
// so no caller input can produce a path outside the layout.
func pathFor(spec pathSpec) (string, error) {
	switch s := spec.(type) {
	case repositoriesRootPathSpec:
		if s.prefix == "" {
			return storageRoot + "/repositories", nil
		}
		return repoPath(s.prefix)
	case repositoryPathSpec:
		return repoPath(s.name)

	case blobsPathSpec:
		return storageRoot + "/blobs/sha256", nil
	case blobDataPathSpec:
		hex, err := hexOf(s.digest)
		if err != nil {
			return "", err
		}
		return storageRoot + "/blobs/sha256/" + hex[:2] + "/" + hex + "/data", nil

	case layersPathSpec:
		return repoJoin(s.name, layersDirName+"/sha256")
	case layerPathSpec:
		return repoDigestJoin(s.name, layersDirName+"/sha256/", s.digest, "")
	case layerLinkPathSpec:
		return repoDigestJoin(s.name, layersDirName+"/sha256/", s.digest, "/"+linkFileName)

	case manifestRevisionsPathSpec:
		return repoJoin(s.name, manifestsDirName+"/revisions/sha256")
	case manifestRevisionPathSpec:
		return repoDigestJoin(s.name, manifestsDirName+"/revisions/sha256/", s.revision, "")
	case manifestRevisionLinkPathSpec:
		return repoDigestJoin(s.name, manifestsDirName+"/revisions/sha256/", s.revision, "/"+linkFileName)
	case manifestSignaturesPathSpec:
		return repoDigestJoin(s.name, manifestsDirName+"/revisions/sha256/", s.revision, "/signatures/sha256")
	case manifestSignatureLinkPathSpec:
		sig, err := hexOf(s.signature)
		if err != nil {
			return "", err
		}
		return repoDigestJoin(s.name, manifestsDirName+"/revisions/sha256/", s.revision, "/signatures/sha256/"+sig+"/"+linkFileName)

	case manifestTagsPathSpec:
		return repoJoin(s.name, manifestsDirName+"/tags")
	case manifestTagPathSpec:
		return tagJoin(s.name, s.tag, "")
	case manifestTagCurrentLinkPathSpec:
		return tagJoin(s.name, s.tag, "/current/"+linkFileName)
	case manifestTagIndexPathSpec:
		return tagJoin(s.name, s.tag, "/index/sha256")
	case manifestTagIndexEntryPathSpec:
		hex, err := hexOf(s.revision)
		if err != nil {
			return "", err
		}
		return tagJoin(s.name, s.tag, "/index/sha256/"+hex)
	case manifestTagIndexEntryLinkPathSpec:
		hex, err := hexOf(s.revision)
		if err != nil {
			return "", err
		}
		return tagJoin(s.name, s.tag, "/index/sha256/"+hex+"/"+linkFileName)

	case uploadsPathSpec:
		return repoJoin(s.name, uploadsDirName)
	case uploadPathSpec:
		return uploadJoin(s.name, s.id, "")
	case uploadDataPathSpec:
		return uploadJoin(s.name, s.id, "/data")
	case uploadStartedAtPathSpec:
		return uploadJoin(s.name, s.id, "/startedat")
	case uploadExpectedPathSpec:
		return uploadJoin(s.name, s.id, "/"+expectedFileName)
	case uploadHashStatesPathSpec:
		return uploadJoin(s.name, s.id, "/hashstates/sha256")
	case uploadHashStatePathSpec:
		if s.offset < 0 {
			return "", fmt.Errorf("%w: negative hash state offset %d", ErrInvalidOffset, s.offset)
		}
		return uploadJoin(s.name, s.id, "/hashstates/sha256/"+strconv.FormatInt(s.offset, 10))
	}
	// Unreachable: pathSpec is sealed by its unexported method.
	panic(fmt.Sprintf("store: unknown path spec %T", spec))
}

// mustPath is pathFor for specs whose parts were validated already (a
// repository's own name, a digest that passed checkDigest); a failure there
// is a programming error.
func mustPath(spec pathSpec) string {
	p, err := pathFor(spec)
	if err != nil {
		panic(fmt.Sprintf("store: path for %#v: %v", spec, err))
	}
	return p
}

func repoPath(name string) (string, error) {
	if err := checkRepositoryName(name); err != nil {
		return "", err
	}
	return storageRoot + "/repositories/" + name, nil
}

func repoJoin(name, rest string) (string, error) {
	p, err := repoPath(name)
	if err != nil {
		return "", err
	}
	return p + "/" + rest, nil
}

func repoDigestJoin(name, mid string, d digest.Digest, suffix string) (string, error) {
	hex, err := hexOf(d)
	if err != nil {
		return "", err
	}
	return repoJoin(name, mid+hex+suffix)
}

func tagJoin(name, tag, suffix string) (string, error) {
	if err := checkTag(tag); err != nil {
		return "", err
	}
	return repoJoin(name, manifestsDirName+"/tags/"+tag+suffix)
}

func uploadJoin(name, id, suffix string) (string, error) {
	if err := checkUploadID(id); err != nil {
		return "", err
	}
	return repoJoin(name, uploadsDirName+"/"+id+suffix)
}

// hexOf returns the encoded part of a validated sha256 digest.
func hexOf(d digest.Digest) (string, error) {
	if err := checkStoredDigest(d); err != nil {
		return "", err
	}
	return d.Encoded(), nil
}
