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
//	        regfs-staged                                  regfs only: where a staged upload's bytes are (see uploads.go)
//
// A link file holds exactly a digest string ("sha256:" and 64 lowercase hex
// digits, 71 bytes) with no newline. Reserved names start with '_', which a
// repository path component never does, so they cannot collide.
//
// Every directory and object above is a Location (a PathKind and the names
// in it). Location.Path builds the path after checking every part, so a
// malformed name or digest can never escape the layout; ParsePath is its
// inverse, so code that reads the tree (listings, fsck, gc) never splits a
// path by hand. Inside the package each kind that store's own code builds
// has a small spec type, and pathFor turns one into its path.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

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
	stagedFileName   = "regfs-staged"
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
	// uploadStagedPathSpec: .../_uploads/<uuid>/regfs-staged
	uploadStagedPathSpec struct{ name, id string }
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
func (uploadStagedPathSpec) pathSpec()              {}
func (uploadHashStatesPathSpec) pathSpec()          {}
func (uploadHashStatePathSpec) pathSpec()           {}

// pathFor returns the driver path of spec. Directories come without a
// trailing slash. Every name, tag, digest and upload ID is validated (by
// Location.Path), so no caller input can produce a path outside the layout.
func pathFor(spec pathSpec) (string, error) {
	return locationOf(spec).Path()
}

// locationOf turns a spec into the Location it names.
func locationOf(spec pathSpec) Location {
	switch s := spec.(type) {
	case repositoriesRootPathSpec:
		if s.prefix == "" {
			return Location{Kind: PathRepositories}
		}
		// A namespace's directory is the one a repository of that name has.
		return Location{Kind: PathRepository, Repository: s.prefix}
	case repositoryPathSpec:
		return Location{Kind: PathRepository, Repository: s.name}
	case blobsPathSpec:
		return Location{Kind: PathBlobs}
	case blobDataPathSpec:
		return Location{Kind: PathBlobData, Digest: s.digest}
	case layersPathSpec:
		return Location{Kind: PathLayers, Repository: s.name}
	case layerPathSpec:
		return Location{Kind: PathLayer, Repository: s.name, Digest: s.digest}
	case layerLinkPathSpec:
		return Location{Kind: PathLayerLink, Repository: s.name, Digest: s.digest}
	case manifestRevisionsPathSpec:
		return Location{Kind: PathRevisions, Repository: s.name}
	case manifestRevisionPathSpec:
		return Location{Kind: PathRevision, Repository: s.name, Digest: s.revision}
	case manifestRevisionLinkPathSpec:
		return Location{Kind: PathRevisionLink, Repository: s.name, Digest: s.revision}
	case manifestSignaturesPathSpec:
		return Location{Kind: PathSignatures, Repository: s.name, Digest: s.revision}
	case manifestSignatureLinkPathSpec:
		return Location{Kind: PathSignatureLink, Repository: s.name, Digest: s.revision, Signature: s.signature}
	case manifestTagsPathSpec:
		return Location{Kind: PathTags, Repository: s.name}
	case manifestTagPathSpec:
		return Location{Kind: PathTag, Repository: s.name, Tag: s.tag}
	case manifestTagCurrentLinkPathSpec:
		return Location{Kind: PathTagCurrentLink, Repository: s.name, Tag: s.tag}
	case manifestTagIndexPathSpec:
		return Location{Kind: PathTagIndex, Repository: s.name, Tag: s.tag}
	case manifestTagIndexEntryPathSpec:
		return Location{Kind: PathTagIndexEntry, Repository: s.name, Tag: s.tag, Digest: s.revision}
	case manifestTagIndexEntryLinkPathSpec:
		return Location{Kind: PathTagIndexEntryLink, Repository: s.name, Tag: s.tag, Digest: s.revision}
	case uploadsPathSpec:
		return Location{Kind: PathUploads, Repository: s.name}
	case uploadPathSpec:
		return Location{Kind: PathUpload, Repository: s.name, Upload: s.id}
	case uploadDataPathSpec:
		return Location{Kind: PathUploadData, Repository: s.name, Upload: s.id}
	case uploadStartedAtPathSpec:
		return Location{Kind: PathUploadStartedAt, Repository: s.name, Upload: s.id}
	case uploadExpectedPathSpec:
		return Location{Kind: PathUploadExpected, Repository: s.name, Upload: s.id}
	case uploadStagedPathSpec:
		return Location{Kind: PathUploadStaged, Repository: s.name, Upload: s.id}
	case uploadHashStatesPathSpec:
		return Location{Kind: PathUploadHashStates, Repository: s.name, Upload: s.id}
	case uploadHashStatePathSpec:
		return Location{Kind: PathUploadHashState, Repository: s.name, Upload: s.id, Offset: s.offset}
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

// PathKind says which place of the layout a path is. Every directory and
// object of the tree at the top of this file has one.
type PathKind uint8

// The places of the layout. The zero PathKind is no place.
const (
	_ PathKind = iota
	// PathBlobsRoot is blobs/.
	PathBlobsRoot
	// PathBlobs is blobs/sha256/.
	PathBlobs
	// PathBlobPrefix is blobs/sha256/<hh>/ (Location.Prefix).
	PathBlobPrefix
	// PathBlob is blobs/sha256/<hh>/<hex>/ (Location.Digest).
	PathBlob
	// PathBlobData is blobs/sha256/<hh>/<hex>/data.
	PathBlobData

	// PathRepositories is repositories/.
	PathRepositories
	// PathRepository is repositories/<name>/: a repository, or a namespace
	// holding repositories; only its children tell which.
	PathRepository

	// PathLayersRoot is <name>/_layers/.
	PathLayersRoot
	// PathLayers is <name>/_layers/sha256/.
	PathLayers
	// PathLayer is <name>/_layers/sha256/<hex>/.
	PathLayer
	// PathLayerLink is <name>/_layers/sha256/<hex>/link.
	PathLayerLink

	// PathManifests is <name>/_manifests/.
	PathManifests
	// PathRevisionsRoot is _manifests/revisions/.
	PathRevisionsRoot
	// PathRevisions is _manifests/revisions/sha256/.
	PathRevisions
	// PathRevision is _manifests/revisions/sha256/<hex>/ (Location.Digest).
	PathRevision
	// PathRevisionLink is _manifests/revisions/sha256/<hex>/link.
	PathRevisionLink
	// PathSignaturesRoot is a revision's signatures/.
	PathSignaturesRoot
	// PathSignatures is a revision's signatures/sha256/.
	PathSignatures
	// PathSignature is a revision's signatures/sha256/<sig>/
	// (Location.Signature).
	PathSignature
	// PathSignatureLink is a revision's signatures/sha256/<sig>/link.
	PathSignatureLink

	// PathTags is _manifests/tags/.
	PathTags
	// PathTag is _manifests/tags/<tag>/ (Location.Tag).
	PathTag
	// PathTagCurrent is _manifests/tags/<tag>/current/.
	PathTagCurrent
	// PathTagCurrentLink is _manifests/tags/<tag>/current/link.
	PathTagCurrentLink
	// PathTagIndexRoot is _manifests/tags/<tag>/index/.
	PathTagIndexRoot
	// PathTagIndex is _manifests/tags/<tag>/index/sha256/.
	PathTagIndex
	// PathTagIndexEntry is .../index/sha256/<hex>/ (Location.Digest).
	PathTagIndexEntry
	// PathTagIndexEntryLink is .../index/sha256/<hex>/link.
	PathTagIndexEntryLink

	// PathUploads is <name>/_uploads/.
	PathUploads
	// PathUpload is _uploads/<uuid>/ (Location.Upload).
	PathUpload
	// PathUploadData is _uploads/<uuid>/data.
	PathUploadData
	// PathUploadStartedAt is _uploads/<uuid>/startedat.
	PathUploadStartedAt
	// PathUploadExpected is _uploads/<uuid>/regfs-expected.
	PathUploadExpected
	// PathUploadHashStatesRoot is _uploads/<uuid>/hashstates/.
	PathUploadHashStatesRoot
	// PathUploadHashStates is _uploads/<uuid>/hashstates/sha256/.
	PathUploadHashStates
	// PathUploadHashState is .../hashstates/sha256/<offset> (Location.Offset).
	PathUploadHashState
	// PathUploadStaged is _uploads/<uuid>/regfs-staged: the driver's
	// record of a staged upload (driver.Stager).
	PathUploadStaged

	numPathKinds
)

// IsLink tells the kinds that are link files: their content is one digest.
func (k PathKind) IsLink() bool {
	switch k {
	case PathLayerLink, PathRevisionLink, PathSignatureLink, PathTagCurrentLink, PathTagIndexEntryLink:
		return true
	}
	return false
}

// LinkTarget is the digest the link file at l must hold, as its directory
// names it: the signature of a signature link, Digest for a layer, revision
// or tag index link. A tag's current link names nothing (only its content
// says), and neither does a path that is no link: "".
func (l Location) LinkTarget() digest.Digest {
	switch l.Kind {
	case PathSignatureLink:
		return l.Signature
	case PathLayerLink, PathRevisionLink, PathTagIndexEntryLink:
		return l.Digest
	}
	return ""
}

// ErrNotInLayout is returned by ParsePath for a path that has no place in
// the registry layout.
var ErrNotInLayout = errors.New("not a path of the registry layout")

// Location is a parsed storage path: the place (Kind) and the names in it.
// Only the fields the Kind has are set. ParsePath and Path are inverses:
// for every path p that ParsePath accepts, Path returns p (in its absolute
// form), and the other way round.
type Location struct {
	Kind PathKind
	// Repository is the repository's (or the namespace's) name.
	Repository string
	// Digest names the blob, layer, revision or tag index entry.
	Digest digest.Digest
	// Signature names a schema1 signature of the revision Digest.
	Signature digest.Digest
	// Tag is the tag's name.
	Tag string
	// Upload is the upload's ID.
	Upload string
	// Offset is a hash state's offset.
	Offset int64
	// Prefix is a blob prefix directory's two hex digits.
	Prefix string
}

// Path returns the absolute driver path of l, after checking every name in
// it, so that no Location can name a path outside the layout.
func (l Location) Path() (string, error) {
	const (
		revisions = manifestsDirName + "/revisions/sha256/"
		tags      = manifestsDirName + "/tags"
	)
	switch l.Kind {
	case PathBlobsRoot:
		return storageRoot + "/blobs", nil
	case PathBlobs:
		return storageRoot + "/blobs/sha256", nil
	case PathBlobPrefix:
		if len(l.Prefix) != 2 || !isLowerHex(l.Prefix) {
			return "", fmt.Errorf("%w: blob prefix %q", ErrInvalidDigest, l.Prefix)
		}
		return storageRoot + "/blobs/sha256/" + l.Prefix, nil
	case PathBlob, PathBlobData:
		hex, err := hexOf(l.Digest)
		if err != nil {
			return "", err
		}
		p := storageRoot + "/blobs/sha256/" + hex[:2] + "/" + hex
		if l.Kind == PathBlobData {
			p += "/data"
		}
		return p, nil

	case PathRepositories:
		return storageRoot + "/repositories", nil
	case PathRepository:
		return repoPath(l.Repository)

	case PathLayersRoot:
		return repoJoin(l.Repository, layersDirName)
	case PathLayers:
		return repoJoin(l.Repository, layersDirName+"/sha256")
	case PathLayer:
		return repoDigestJoin(l.Repository, layersDirName+"/sha256/", l.Digest, "")
	case PathLayerLink:
		return repoDigestJoin(l.Repository, layersDirName+"/sha256/", l.Digest, "/"+linkFileName)

	case PathManifests:
		return repoJoin(l.Repository, manifestsDirName)
	case PathRevisionsRoot:
		return repoJoin(l.Repository, manifestsDirName+"/revisions")
	case PathRevisions:
		return repoJoin(l.Repository, manifestsDirName+"/revisions/sha256")
	case PathRevision:
		return repoDigestJoin(l.Repository, revisions, l.Digest, "")
	case PathRevisionLink:
		return repoDigestJoin(l.Repository, revisions, l.Digest, "/"+linkFileName)
	case PathSignaturesRoot:
		return repoDigestJoin(l.Repository, revisions, l.Digest, "/signatures")
	case PathSignatures:
		return repoDigestJoin(l.Repository, revisions, l.Digest, "/signatures/sha256")
	case PathSignature, PathSignatureLink:
		sig, err := hexOf(l.Signature)
		if err != nil {
			return "", err
		}
		suffix := "/signatures/sha256/" + sig
		if l.Kind == PathSignatureLink {
			suffix += "/" + linkFileName
		}
		return repoDigestJoin(l.Repository, revisions, l.Digest, suffix)

	case PathTags:
		return repoJoin(l.Repository, tags)
	case PathTag:
		return tagJoin(l.Repository, l.Tag, "")
	case PathTagCurrent:
		return tagJoin(l.Repository, l.Tag, "/current")
	case PathTagCurrentLink:
		return tagJoin(l.Repository, l.Tag, "/current/"+linkFileName)
	case PathTagIndexRoot:
		return tagJoin(l.Repository, l.Tag, "/index")
	case PathTagIndex:
		return tagJoin(l.Repository, l.Tag, "/index/sha256")
	case PathTagIndexEntry, PathTagIndexEntryLink:
		hex, err := hexOf(l.Digest)
		if err != nil {
			return "", err
		}
		suffix := "/index/sha256/" + hex
		if l.Kind == PathTagIndexEntryLink {
			suffix += "/" + linkFileName
		}
		return tagJoin(l.Repository, l.Tag, suffix)

	case PathUploads:
		return repoJoin(l.Repository, uploadsDirName)
	case PathUpload:
		return uploadJoin(l.Repository, l.Upload, "")
	case PathUploadData:
		return uploadJoin(l.Repository, l.Upload, "/data")
	case PathUploadStartedAt:
		return uploadJoin(l.Repository, l.Upload, "/startedat")
	case PathUploadExpected:
		return uploadJoin(l.Repository, l.Upload, "/"+expectedFileName)
	case PathUploadStaged:
		return uploadJoin(l.Repository, l.Upload, "/"+stagedFileName)
	case PathUploadHashStatesRoot:
		return uploadJoin(l.Repository, l.Upload, "/hashstates")
	case PathUploadHashStates:
		return uploadJoin(l.Repository, l.Upload, "/hashstates/sha256")
	case PathUploadHashState:
		if l.Offset < 0 {
			return "", fmt.Errorf("%w: negative hash state offset %d", ErrInvalidOffset, l.Offset)
		}
		return uploadJoin(l.Repository, l.Upload, "/hashstates/sha256/"+strconv.FormatInt(l.Offset, 10))
	}
	return "", fmt.Errorf("%w: no path of kind %d", ErrNotInLayout, l.Kind)
}

// ParsePath is the inverse of Location.Path (and of pathFor): it turns a
// storage path back into its Location. p is a driver path
// ("/docker/registry/v2/blobs/...") or relative to the layout's root
// ("blobs/..."). Every name in it is validated as Path validates it, so a
// Location from ParsePath always has a path; anything else is an error
// wrapping ErrNotInLayout (and ErrInvalidName, ErrInvalidDigest or
// ErrUploadUnknown when a name is at fault).
func ParsePath(p string) (Location, error) {
	rel, ok := strings.CutPrefix(p, storageRoot+"/")
	if !ok {
		if strings.HasPrefix(p, "/") {
			return Location{}, fmt.Errorf("%w: %s is not below %s", ErrNotInLayout, p, storageRoot)
		}
		rel = p
	}
	parts := strings.Split(rel, "/")
	var (
		l   Location
		err error
	)
	switch parts[0] {
	case "blobs":
		l, err = parseBlobs(parts[1:])
	case "repositories":
		l, err = parseRepositories(parts[1:])
	default:
		err = errors.New("neither blobs/ nor repositories/")
	}
	if err != nil {
		return Location{}, fmt.Errorf("%w: %s: %w", ErrNotInLayout, p, err)
	}
	return l, nil
}

func parseBlobs(parts []string) (Location, error) {
	if len(parts) == 0 {
		return Location{Kind: PathBlobsRoot}, nil
	}
	if parts[0] != "sha256" {
		return Location{}, errors.New("blobs/ holds sha256/ only")
	}
	switch len(parts) {
	case 1:
		return Location{Kind: PathBlobs}, nil
	case 2:
		if len(parts[1]) != 2 || !isLowerHex(parts[1]) {
			return Location{}, errors.New("not a two-digit blob prefix")
		}
		return Location{Kind: PathBlobPrefix, Prefix: parts[1]}, nil
	}
	d, err := parseHex(parts[2])
	if err != nil {
		return Location{}, err
	}
	if parts[2][:2] != parts[1] {
		return Location{}, errors.New("blob directory under another prefix than its first two digits")
	}
	switch {
	case len(parts) == 3:
		return Location{Kind: PathBlob, Digest: d}, nil
	case len(parts) == 4 && parts[3] == "data":
		return Location{Kind: PathBlobData, Digest: d}, nil
	}
	return Location{}, errors.New("a blob directory holds data only")
}

func parseRepositories(parts []string) (Location, error) {
	if len(parts) == 0 {
		return Location{Kind: PathRepositories}, nil
	}
	// The name ends before the first reserved ('_') component, which a
	// name's components never start with.
	i := 0
	for i < len(parts) && !strings.HasPrefix(parts[i], "_") {
		i++
	}
	name := strings.Join(parts[:i], "/")
	if err := checkRepositoryName(name); err != nil {
		return Location{}, err
	}
	l := Location{Kind: PathRepository, Repository: name}
	if i == len(parts) {
		return l, nil
	}
	rest := parts[i+1:]
	var err error
	switch parts[i] {
	case layersDirName:
		l.Kind, l.Digest, err = parseDigestLinks(rest, PathLayersRoot, PathLayers, PathLayer, PathLayerLink)
		return l, err
	case manifestsDirName:
		return l.parseManifests(rest)
	case uploadsDirName:
		return l.parseUploads(rest)
	}
	return Location{}, fmt.Errorf("%q is not a reserved name of a repository", parts[i])
}

// parseDigestLinks parses "" | sha256 | sha256/<hex> | sha256/<hex>/link,
// the shape of _layers, revisions, signatures and a tag's index, into one
// of the four kinds given and the digest <hex>.
func parseDigestLinks(parts []string, root, dir, entry, link PathKind) (PathKind, digest.Digest, error) {
	switch {
	case len(parts) == 0:
		return root, "", nil
	case parts[0] != "sha256":
		return 0, "", errors.New("a digest directory holds sha256/ only")
	case len(parts) == 1:
		return dir, "", nil
	}
	d, err := parseHex(parts[1])
	if err != nil {
		return 0, "", err
	}
	switch {
	case len(parts) == 2:
		return entry, d, nil
	case len(parts) == 3 && parts[2] == linkFileName:
		return link, d, nil
	}
	return 0, "", errors.New("a digest's directory holds link only")
}

func (l Location) parseManifests(parts []string) (Location, error) {
	if len(parts) == 0 {
		l.Kind = PathManifests
		return l, nil
	}
	var err error
	switch parts[0] {
	case "revisions":
		if len(parts) >= 4 && parts[3] == "signatures" {
			rev, err := parseHex(parts[2])
			if err != nil || parts[1] != "sha256" {
				return Location{}, errors.New("not a revision's signatures")
			}
			l.Digest = rev
			l.Kind, l.Signature, err = parseDigestLinks(parts[4:], PathSignaturesRoot, PathSignatures, PathSignature, PathSignatureLink)
			return l, err
		}
		l.Kind, l.Digest, err = parseDigestLinks(parts[1:], PathRevisionsRoot, PathRevisions, PathRevision, PathRevisionLink)
		return l, err
	case "tags":
		return l.parseTags(parts[1:])
	}
	return Location{}, errors.New("_manifests holds revisions/ and tags/ only")
}

func (l Location) parseTags(parts []string) (Location, error) {
	if len(parts) == 0 {
		l.Kind = PathTags
		return l, nil
	}
	if err := checkTag(parts[0]); err != nil {
		return Location{}, err
	}
	l.Tag = parts[0]
	switch {
	case len(parts) == 1:
		l.Kind = PathTag
		return l, nil
	case parts[1] == "current" && len(parts) == 2:
		l.Kind = PathTagCurrent
		return l, nil
	case parts[1] == "current" && len(parts) == 3 && parts[2] == linkFileName:
		l.Kind = PathTagCurrentLink
		return l, nil
	case parts[1] == "index":
		var err error
		l.Kind, l.Digest, err = parseDigestLinks(parts[2:], PathTagIndexRoot, PathTagIndex, PathTagIndexEntry, PathTagIndexEntryLink)
		return l, err
	}
	return Location{}, errors.New("a tag directory holds current/link and index/ only")
}

func (l Location) parseUploads(parts []string) (Location, error) {
	if len(parts) == 0 {
		l.Kind = PathUploads
		return l, nil
	}
	if err := checkUploadID(parts[0]); err != nil {
		return Location{}, err
	}
	l.Upload = parts[0]
	if len(parts) == 1 {
		l.Kind = PathUpload
		return l, nil
	}
	if len(parts) == 2 {
		switch parts[1] {
		case "data":
			l.Kind = PathUploadData
		case "startedat":
			l.Kind = PathUploadStartedAt
		case expectedFileName:
			l.Kind = PathUploadExpected
		case stagedFileName:
			l.Kind = PathUploadStaged
		case "hashstates":
			l.Kind = PathUploadHashStatesRoot
		default:
			return Location{}, errors.New("not a file of an upload")
		}
		return l, nil
	}
	if parts[1] != "hashstates" || parts[2] != "sha256" {
		return Location{}, errors.New("not a file of an upload")
	}
	switch len(parts) {
	case 3:
		l.Kind = PathUploadHashStates
		return l, nil
	case 4:
		off, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil || off < 0 || strconv.FormatInt(off, 10) != parts[3] {
			return Location{}, errors.New("not a hash state offset")
		}
		l.Kind, l.Offset = PathUploadHashState, off
		return l, nil
	}
	return Location{}, errors.New("not a file of an upload")
}

// parseHex parses a directory name that must be a sha256 digest's hex.
func parseHex(name string) (digest.Digest, error) {
	d := digest.NewDigestFromEncoded(digest.SHA256, name)
	if err := checkStoredDigest(d); err != nil {
		return "", err
	}
	return d, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// linkSize is the length of a well-formed link file.
const linkSize = len("sha256:") + 64

// ParseLink returns the digest in a link file's content when it is exactly
// what the registry writes: "sha256:<64 lowercase hex>", 71 bytes, no
// newline.
func ParseLink(b []byte) (digest.Digest, bool) {
	if len(b) != linkSize {
		return "", false
	}
	d := digest.Digest(b)
	if checkStoredDigest(d) != nil {
		return "", false
	}
	return d, true
}

// LinkContent is what a link file naming d holds.
func LinkContent(d digest.Digest) []byte { return []byte(d.String()) }
