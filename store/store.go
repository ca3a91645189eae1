// Package store implements registry semantics (repositories, layers,
// uploads, manifests, tags) on a driver.StorageDriver, in docker/distribution's
// on-disk format byte for byte. It knows nothing of FUSE.
//
// The interfaces below are what the fs package programs against; the
// implementations behind them are unexported. Services are cheap values made
// per use: Repository returns a fresh value every call and holds no state
// beyond the name and the shared store.
//
// Every error the store returns is its own (errors.go): sentinels matched
// with errors.Is, and types named ...Error matched with errors.As. A
// failure of the storage driver comes back as a *StorageError whose Kind
// says what the driver said (ErrNotFound, ErrInvalidPath, ...) and which
// keeps the driver's error as its cause, errno included, so that callers
// never read driver errors themselves.
//
// Other writers (a registry, another mount) share the storage. A link read
// empty or short, as a registry rewriting it in place leaves it for a
// moment, is read again before it is a *CorruptLinkError; listings skip
// such links; a verified upload or manifest replaces a damaged stored blob.
package store

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Store is a registry's storage.
type Store interface {
	// Children lists the direct child directory names below the namespace
	// prefix ("" for the top, "library" for library/...), excluding reserved
	// names (those starting with '_'). A child is listed whether it is a
	// repository, a namespace holding repositories, or both. A prefix that
	// does not exist in storage has no children (nil, nil error).
	Children(ctx context.Context, prefix string) ([]string, error)

	// IsRepository tells whether name exists in storage as a repository.
	IsRepository(ctx context.Context, name string) (bool, error)

	// IsDirectory tells whether name is a directory in storage: a
	// repository, a namespace holding repositories, or a directory a
	// driver with directories keeps empty. It is one listing of the
	// directory, which does not tell the three apart.
	IsDirectory(ctx context.Context, name string) (bool, error)

	// Repositories lists every repository, sorted (what the registry's
	// catalog lists).
	Repositories(ctx context.Context) ([]string, error)

	// Repository returns the repository called name, validating the name
	// (ErrInvalidName). It does not create anything in storage.
	Repository(name string) (Repository, error)

	// RemoveRepository removes an empty repository (no layers, manifests,
	// tags or uploads) and its directory. A non-empty one is
	// ErrRepositoryNotEmpty, and so is one holding a nested repository or a
	// namespace holding repositories; a missing one ErrRepositoryUnknown.
	// An empty directory (a namespace whose last repository was removed,
	// on drivers that keep directories) is removed as well.
	RemoveRepository(ctx context.Context, name string) error

	// Usage returns the space of the backend, for df: the filesystem
	// driver's is its root's file system's. ErrUnsupported when the
	// driver cannot tell (an object store has no size; memory has none
	// worth reporting).
	Usage(ctx context.Context) (Usage, error)
}

// Usage is the space of a store's backend; see driver.Usage.
type Usage struct {
	// Total, Free and Avail are bytes; Avail is what an unprivileged
	// writer may use.
	Total, Free, Avail uint64
	// Files and FreeFiles count inodes, where the backend has them.
	Files, FreeFiles uint64
}

// Stats are the counters of a store, for .regfs/stats.
type Stats struct {
	// DriverCalls is how many times the store has called each driver
	// method ("List", "Walk", "Reader", ...) since New. What a listing or
	// a lookup costs is a number of backend calls, each a round trip on a
	// remote driver, so this is what the benchmark checks.
	DriverCalls map[string]int64
	// DriverLatency is how long those calls took, by method.
	DriverLatency map[string]Latency
	// BadLinks counts the link files found unreadable (empty, short or not
	// a digest) after re-reading them: each one a listing skipped or a
	// read failed on.
	BadLinks int64
}

// StatsReporter is implemented by a Store that counts what it does. The
// counters are no part of the registry's semantics, so they are not in
// Store: a caller that shows them asks whether the store has them.
type StatsReporter interface {
	Stats() Stats
}

// Repository is one named repository.
type Repository interface {
	Name() string
	Layers() LayerService
	Uploads() UploadService
	Manifests() ManifestService
	Tags() TagService
}

// Descriptor names a blob and its size.
type Descriptor struct {
	Digest digest.Digest
	Size   int64
}

// BlobReader reads a blob at any offset, concurrently, through the cache.
// Read and Seek share one cursor and are for single-threaded callers; ReadAt
// is safe for concurrent use.
type BlobReader interface {
	io.ReaderAt
	io.ReadSeeker
	io.Closer
	Size() int64
	Digest() digest.Digest
}

// LayerService manages the blobs linked into a repository.
type LayerService interface {
	// Stat returns the descriptor of a linked blob without reading it;
	// ErrBlobUnknown when it is not linked here or its data is missing.
	Stat(ctx context.Context, dgst digest.Digest) (Descriptor, error)
	// Open returns a reader over a linked blob.
	Open(ctx context.Context, dgst digest.Digest) (BlobReader, error)
	// List returns the digests linked into the repository, sorted.
	List(ctx context.Context) ([]digest.Digest, error)
	// Link links a blob that exists in storage into this repository (a
	// cross-repository mount: nothing is copied). ErrBlobUnknown when the
	// blob's data does not exist.
	Link(ctx context.Context, dgst digest.Digest) error
	// Unlink removes the repository's link; the blob's data stays until gc.
	Unlink(ctx context.Context, dgst digest.Digest) error
	// Linked is List with each link's modification time, from the same
	// listing (no call per entry).
	Linked(ctx context.Context) ([]Linked, error)
	// LinkTime returns the modification time of the blob's link in this
	// repository (when it was linked); ErrBlobUnknown when not linked.
	LinkTime(ctx context.Context, dgst digest.Digest) (time.Time, error)
	// Lookup is Stat with the link's modification time, what a file's
	// attributes need, in one round trip: the link and the blob's data
	// are stated at once, and neither is read.
	Lookup(ctx context.Context, dgst digest.Digest) (LayerInfo, error)
	// OpenFound returns a reader over the blob a Lookup just found,
	// without asking storage again. A blob deleted since is found missing
	// by the reader's first block load.
	OpenFound(info LayerInfo) BlobReader
}

// FirstBytesLookuper is implemented by the LayerServices whose lookup can
// fetch a blob's first bytes instead of stating its data, on storage that
// answers both in one request (driver.WithSizeReport: S3's ranged GET).
type FirstBytesLookuper interface {
	// LookupFirst is Lookup that also fetches the blob's first n bytes
	// where the driver tells the data's size with them, and otherwise
	// states the data as Lookup does: in either case one round trip.
	// OpenFound of what it returns serves reads within those bytes from
	// memory, so that the first read of a fresh open waits for no
	// request of its own.
	LookupFirst(ctx context.Context, dgst digest.Digest, n int) (LayerInfo, error)
}

// LayerInfo is what Lookup learns of a blob linked into a repository.
type LayerInfo struct {
	// Descriptor is the blob's digest and the size of its data.
	Descriptor
	// ModTime is the link's modification time: when the blob was linked
	// here. Zero when the driver has no times.
	ModTime time.Time
	// target is the blob whose data is served: Digest, unless the link
	// (not 71 bytes, so read) names another.
	target digest.Digest
	// first are the data's first bytes, when LookupFirst fetched them,
	// and forgets the store's count of forgotten blobs then: they are
	// served only while no blob was forgotten or replaced since.
	first   []byte
	forgets int64
}

// Linked is a digest linked into a repository and its link's modification
// time: when it was pushed or linked. Zero when the driver has no times.
type Linked struct {
	Digest  digest.Digest
	ModTime time.Time
}

// UploadInfo describes an upload in progress.
type UploadInfo struct {
	// ID is the upload's directory name (a UUID).
	ID string
	// Expected is the digest the upload must hash to; empty for uploads
	// another writer (the registry) left behind.
	Expected digest.Digest
	// Size is the number of bytes uploaded so far.
	Size      int64
	StartedAt time.Time
	// ModTime is when the upload was last written: its data's
	// modification time; before any data, StartedAt, or without one the
	// directory's time. Zero when the driver has no times. It comes from
	// the stats Stat makes anyway.
	ModTime time.Time
}

// UploadService manages a repository's uploads.
type UploadService interface {
	// Create starts an upload that must hash to expected. ctx also bounds
	// the storage writers the upload opens later, for the writes after a
	// Flush: give it a context that lives as long as the upload may (the
	// mount's), so that ending it stops them.
	Create(ctx context.Context, expected digest.Digest) (Upload, error)
	// Resume reopens an upload by ID, from storage alone (also after a
	// restart of the process), positioned at its current size. ctx is
	// kept as Create keeps it.
	Resume(ctx context.Context, id string) (Upload, error)
	// List returns the uploads in progress, sorted by ID.
	List(ctx context.Context) ([]UploadInfo, error)
	// Stat describes one upload; ErrUploadUnknown when missing.
	Stat(ctx context.Context, id string) (UploadInfo, error)
	// Cancel removes an upload and its data.
	Cancel(ctx context.Context, id string) error
}

// Upload is one resumable, append-only blob upload. Not safe for concurrent
// use; callers serialise.
type Upload interface {
	ID() string
	Expected() digest.Digest
	// Size is the number of bytes uploaded so far: stored, or queued to
	// be. After a storage failure is reported it is what storage holds.
	Size() int64
	// WriteAt appends p; off must equal Size (ErrInvalidOffset otherwise;
	// after a storage failure, an off beyond Size gets the failure).
	WriteAt(p []byte, off int64) (int, error)
	// Write appends p. The bytes are copied and stored and hashed behind
	// the call; a storage failure is returned by the next Write, WriteAt,
	// Flush or Commit.
	Write(p []byte) (int, error)
	// Flush waits for the bytes written to be stored, makes them durable
	// and saves the hash state for resuming.
	Flush(ctx context.Context) error
	// Commit verifies size and digest against Expected. On a match the blob
	// is stored (once, however many uploads carry it), linked into the
	// repository and the upload removed; a stored copy of the blob that
	// has the wrong size (or, up to 4 MiB, the wrong bytes) is replaced by
	// the verified one. On a mismatch it returns *DigestMismatchError and
	// leaves the upload intact for more appends; when bytes are missing
	// because storing them failed, it returns that failure instead (a
	// *StorageError keeping its cause, e.g. ENOSPC). A hash state resumed
	// from storage is not trusted with a mismatch: the stored bytes are
	// re-hashed once first.
	Commit(ctx context.Context) (Descriptor, error)
	// Close flushes and releases the upload without committing it. It
	// does so with a context of its own, so that an upload is saved also
	// after the context it was opened with has ended.
	Close() error
	// Cancel removes the upload and its data.
	Cancel(ctx context.Context) error
}

// Manifest media types regfs verifies.
const (
	MediaTypeSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	MediaTypeSchema2       = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeManifestList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest   = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex      = "application/vnd.oci.image.index.v1+json"
)

// MaxManifestSize is the largest manifest accepted (4 MiB).
const MaxManifestSize = 4 << 20

// ManifestService manages a repository's manifest revisions.
type ManifestService interface {
	// Get returns a revision's bytes as a client would receive them (a
	// schema1 manifest with its signatures attached) and its media type.
	// ErrManifestUnknown when missing; a *CorruptBlobError when the stored
	// bytes do not hash to the revision's link target.
	Get(ctx context.Context, dgst digest.Digest) ([]byte, string, error)
	// Exists tells whether the revision is in the repository.
	Exists(ctx context.Context, dgst digest.Digest) (bool, error)
	// Put verifies content (collecting every problem in one
	// *ManifestVerificationError), stores it as a revision and returns its
	// digest. A stored blob of the same digest whose bytes differ is
	// replaced by the verified ones. With tag non-empty the tag is then pointed at it. With want
	// non-empty the revision's digest must equal want (DigestMismatchError).
	// A rejected put changes nothing in storage.
	Put(ctx context.Context, content []byte, tag string, want digest.Digest) (digest.Digest, error)
	// Delete removes the revision and every tag that points at it. Blob
	// data stays.
	Delete(ctx context.Context, dgst digest.Digest) error
	// List returns the repository's revisions, sorted; like
	// TagService.List, it leaves out a revision whose link stays
	// unreadable.
	List(ctx context.Context) ([]digest.Digest, error)
	// Linked is List with each revision link's modification time, from
	// the same listing.
	Linked(ctx context.Context) ([]Linked, error)
	// LinkTime returns the modification time of the revision's link (when
	// it was pushed); ErrManifestUnknown when missing.
	LinkTime(ctx context.Context, dgst digest.Digest) (time.Time, error)
}

// TagService manages a repository's tags.
type TagService interface {
	// Get returns the digest a tag points at; ErrTagUnknown when missing.
	// A link read empty or short (another writer rewriting it in place)
	// is re-read; one that stays bad is a *CorruptLinkError.
	Get(ctx context.Context, tag string) (digest.Digest, error)
	// Tag points tag at an existing revision (ErrManifestUnknown otherwise),
	// recording it in the tag's index. When another writer deletes the
	// revision meanwhile, the tag is removed again and the result is
	// ErrManifestUnknown.
	Tag(ctx context.Context, tag string, dgst digest.Digest) error
	// Untag removes a tag; the revision stays.
	Untag(ctx context.Context, tag string) error
	// List returns the repository's tags, sorted. A tag whose link stays
	// unreadable is left out (and logged, and counted in Stats.BadLinks).
	List(ctx context.Context) ([]string, error)
	// LinkTime returns the modification time of the tag's current link:
	// when it was last pointed (pushed or re-tagged). ErrTagUnknown when
	// missing.
	LinkTime(ctx context.Context, tag string) (time.Time, error)
}
