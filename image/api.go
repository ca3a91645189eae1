package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
)

// Blob is one layer blob, readable at any offset concurrently.
// store.BlobReader satisfies it.
type Blob interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Blobs is where layer bytes come from. Open returns the blob named by dgst;
// its error is passed on wrapped, so callers can match the store's errors
// (a foreign layer that is not in storage, for one) with errors.Is.
type Blobs interface {
	Open(ctx context.Context, dgst digest.Digest) (Blob, error)
}

// BlobsFunc adapts a function to [Blobs].
type BlobsFunc func(ctx context.Context, dgst digest.Digest) (Blob, error)

// Open calls f.
func (f BlobsFunc) Open(ctx context.Context, dgst digest.Digest) (Blob, error) { return f(ctx, dgst) }

// Media types of layers this package reads.
const (
	MediaTypeTar           = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeTarGzip       = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeTarZstd       = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeForeignTar    = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeForeignGzip   = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeForeignZstd   = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
	MediaTypeDockerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// CheckpointSpacing is the amount of uncompressed output between two gzip
// checkpoints (the next deflate block boundary after it). A read decompresses
// at most about this much before its first byte.
const CheckpointSpacing = 1 << 20

// Compression is how a layer's tar stream is stored.
type Compression uint8

const (
	Uncompressed Compression = iota + 1
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "tar"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

// CompressionOf returns the compression of a layer media type. An empty media
// type (schema1 manifests have none) returns 0, nil: the blob's first bytes
// decide. Anything else unknown is an *UnsupportedMediaTypeError.
func CompressionOf(mediaType string) (Compression, error) {
	switch mediaType {
	case MediaTypeTar, MediaTypeForeignTar, "application/vnd.docker.image.rootfs.diff.tar":
		return Uncompressed, nil
	case MediaTypeTarGzip, MediaTypeForeignGzip, MediaTypeDockerGzip, MediaTypeDockerForeign:
		return Gzip, nil
	case MediaTypeTarZstd, MediaTypeForeignZstd:
		return Zstd, nil
	case "":
		return 0, nil
	}
	return 0, &UnsupportedMediaTypeError{MediaType: mediaType}
}

// UnsupportedMediaTypeError is returned for a layer whose media type is not a
// tar stream this package reads.
type UnsupportedMediaTypeError struct {
	MediaType string
}

func (e *UnsupportedMediaTypeError) Error() string {
	return fmt.Sprintf("image: unsupported layer media type %q", e.MediaType)
}

// LayerError is a layer blob that could not be read as a tar stream: a
// truncated blob, corrupt compressed data or a bad tar header. Nothing read
// from such a layer is trusted.
type LayerError struct {
	Digest digest.Digest
	Err    error
}

func (e *LayerError) Error() string { return fmt.Sprintf("image: layer %s: %v", e.Digest, e.Err) }
func (e *LayerError) Unwrap() error { return e.Err }

// ErrCorrupt is wrapped by errors about damaged compressed data.
var ErrCorrupt = errors.New("corrupt compressed data")

// ErrSparse is returned when reading a GNU sparse file, which the index does
// not map.
var ErrSparse = errors.New("image: sparse tar entries are not supported")

// Options configures an [Indexer].
type Options struct {
	// Dir holds the index files; created if missing. Empty keeps indexes
	// in memory only.
	Dir string
	// MaxBytes bounds the size of Dir; the least recently used index files
	// are removed past it. 0 means no bound.
	MaxBytes int64
	// Blobs reads layer blobs.
	Blobs Blobs
	// Log receives the indexer's records; nil means slog.Default().
	Log *slog.Logger
}

// Entry is one tar entry of a layer. Name is cleaned and relative to the
// root ("" is the root itself); whiteout entries are kept as stored (Merge
// interprets them).
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, ...
	Mode     int64
	UID, GID int
	Size     int64
	ModTime  time.Time
	Linkname string
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string // PAX SCHILY.xattr.* records, without the prefix
	// Offset is where the content starts in the uncompressed tar stream.
	Offset int64
	// Sparse is set for GNU sparse files, whose content the index does not map.
	Sparse bool
}

// FileMode returns the entry's type and permission bits as an fs.FileMode.
func (e *Entry) FileMode() fs.FileMode { return fileMode(e.Type, e.Mode) }
