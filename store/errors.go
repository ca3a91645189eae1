package store

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors, matched with errors.Is. Errors carrying details wrap these.
var (
	ErrInvalidName        = errors.New("invalid name")
	ErrInvalidDigest      = errors.New("invalid digest")
	ErrRepositoryUnknown  = errors.New("repository unknown")
	ErrRepositoryNotEmpty = errors.New("repository not empty")
	ErrBlobUnknown        = errors.New("blob unknown")
	ErrUploadUnknown      = errors.New("upload unknown")
	ErrManifestUnknown    = errors.New("manifest unknown")
	ErrTagUnknown         = errors.New("tag unknown")
	ErrInvalidOffset      = errors.New("write not at the end of the upload")
	ErrReadOnly           = errors.New("read-only store")
)

// Sentinels for what a storage driver reported, matched with errors.Is on
// a *StorageError. The store turns every driver error into its own errors,
// so callers never need the driver package to tell them apart.
var (
	// ErrNotFound: a path the store needed was not in storage, where no
	// more specific error (ErrBlobUnknown, ErrTagUnknown, ...) applies.
	ErrNotFound = errors.New("not found in storage")
	// ErrInvalidPath: the driver refused a path the store built.
	ErrInvalidPath = errors.New("path refused by the storage driver")
	// ErrUnsupported: the driver cannot do the operation.
	ErrUnsupported = errors.New("operation not supported by the storage driver")
)

// StorageError is a failed call of the storage driver below the store. Kind
// is ErrNotFound, ErrInvalidPath, ErrInvalidOffset or ErrUnsupported for the
// driver errors that say so, nil for any other failure (a backend that
// failed, timed out, ran out of space). Err is the driver's error, kept
// whole: errors.Is finds a context.Canceled or an errno (ENOSPC) in it.
type StorageError struct {
	Op   string
	Path string
	Kind error
	Err  error
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("storage %s %s: %v", e.Op, e.Path, e.Err)
}

// Unwrap lets errors.Is match Kind as well as the cause.
func (e *StorageError) Unwrap() []error {
	if e.Kind != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Err}
}

// CorruptBlobError is a blob whose stored bytes do not hash to its name.
type CorruptBlobError struct {
	Path     string
	Expected digest.Digest
	Actual   digest.Digest
	Size     int64
}

func (e *CorruptBlobError) Error() string {
	return fmt.Sprintf("corrupt blob %s: %d bytes hash to %s", e.Path, e.Size, e.Actual)
}

// CorruptLinkError is a link file that stayed unreadable (empty, short or
// not a digest) over several reads. A registry rewriting it in place makes
// it so for a moment, which a re-read rides out; what stays bad is damage
// (a crash of its writer, a truncated file) that fsck reports. It is a
// storage failure, never "not found" or "invalid name".
type CorruptLinkError struct {
	Path    string
	Content []byte
}

func (e *CorruptLinkError) Error() string {
	const show = 80
	c := e.Content
	if len(c) > show {
		c = c[:show]
	}
	return fmt.Sprintf("corrupt link %s: %d bytes %q, not a digest", e.Path, len(e.Content), c)
}

// DigestMismatchError reports content that does not hash to the expected digest.
type DigestMismatchError struct {
	Expected digest.Digest
	Actual   digest.Digest
	// Size is the length of the content that was hashed.
	Size int64
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("digest mismatch: expected %s, got %s (%d bytes)", e.Expected, e.Actual, e.Size)
}

// ManifestVerificationError collects every problem found verifying a manifest.
type ManifestVerificationError struct {
	Errs []error
}

func (e *ManifestVerificationError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		parts[i] = err.Error()
	}
	return "manifest verification failed: " + strings.Join(parts, "; ")
}

// Unwrap lets errors.Is and errors.As look at every problem.
func (e *ManifestVerificationError) Unwrap() []error { return e.Errs }

// ManifestBlobUnknownError names a blob a manifest references that is not
// linked in the repository.
type ManifestBlobUnknownError struct {
	Digest digest.Digest
}

func (e *ManifestBlobUnknownError) Error() string {
	return fmt.Sprintf("blob unknown to repository: %s", e.Digest)
}

// Is makes errors.Is(err, ErrBlobUnknown) true.
func (e *ManifestBlobUnknownError) Is(target error) bool { return target == ErrBlobUnknown }

// ManifestChildUnknownError names a child manifest of a manifest list or OCI
// index that is not a revision of the repository.
type ManifestChildUnknownError struct {
	Digest digest.Digest
}

func (e *ManifestChildUnknownError) Error() string {
	return fmt.Sprintf("manifest unknown to repository: %s", e.Digest)
}

// Is makes errors.Is(err, ErrManifestUnknown) true.
func (e *ManifestChildUnknownError) Is(target error) bool { return target == ErrManifestUnknown }

// ManifestInvalidError is a malformed or unacceptable manifest (bad JSON,
// unknown media type, too large, name or tag mismatch, bad lengths).
type ManifestInvalidError struct {
	Reason string
}

func (e *ManifestInvalidError) Error() string { return "invalid manifest: " + e.Reason }

// ManifestUnverifiedError is a schema1 manifest whose signatures do not verify.
type ManifestUnverifiedError struct {
	Reason string
}

func (e *ManifestUnverifiedError) Error() string { return "manifest signature invalid: " + e.Reason }
