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

// ErrDigestMismatch reports content that does not hash to the expected digest.
type ErrDigestMismatch struct {
	Expected digest.Digest
	Actual   digest.Digest
	// ExpectedSize and Size are set when a size was expected.
	Size int64
}

func (e *ErrDigestMismatch) Error() string {
	return fmt.Sprintf("digest mismatch: expected %s, got %s (%d bytes)", e.Expected, e.Actual, e.Size)
}

// ErrManifestVerification collects every problem found verifying a manifest.
type ErrManifestVerification struct {
	Errs []error
}

func (e *ErrManifestVerification) Error() string {
	parts := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		parts[i] = err.Error()
	}
	return "manifest verification failed: " + strings.Join(parts, "; ")
}

// Unwrap lets errors.Is and errors.As look at every problem.
func (e *ErrManifestVerification) Unwrap() []error { return e.Errs }

// ErrManifestBlobUnknown names a blob a manifest references that is not
// linked in the repository.
type ErrManifestBlobUnknown struct {
	Digest digest.Digest
}

func (e *ErrManifestBlobUnknown) Error() string {
	return fmt.Sprintf("blob unknown to repository: %s", e.Digest)
}

// Is makes errors.Is(err, ErrBlobUnknown) true.
func (e *ErrManifestBlobUnknown) Is(target error) bool { return target == ErrBlobUnknown }

// ErrManifestChildUnknown names a child manifest of a manifest list or OCI
// index that is not a revision of the repository.
type ErrManifestChildUnknown struct {
	Digest digest.Digest
}

func (e *ErrManifestChildUnknown) Error() string {
	return fmt.Sprintf("manifest unknown to repository: %s", e.Digest)
}

// Is makes errors.Is(err, ErrManifestUnknown) true.
func (e *ErrManifestChildUnknown) Is(target error) bool { return target == ErrManifestUnknown }

// ErrManifestInvalid is a malformed or unacceptable manifest (bad JSON,
// unknown media type, too large, name or tag mismatch, bad lengths).
type ErrManifestInvalid struct {
	Reason string
}

func (e *ErrManifestInvalid) Error() string { return "invalid manifest: " + e.Reason }

// ErrManifestUnverified is a schema1 manifest whose signatures do not verify.
type ErrManifestUnverified struct {
	Reason string
}

func (e *ErrManifestUnverified) Error() string { return "manifest signature invalid: " + e.Reason }
