package fs

import (
	"context"
	"errors"
	"strconv"
	"syscall"

	"bazil.org/fuse"

	"github.com/regfs/regfs/store"
)

// Errors this package makes itself. errno maps them like the store's; the
// reasons for each choice are in docs/decisions.md.
var (
	// errImmutable: writing, truncating or re-creating a blob, a revision
	// or a control file (EPERM, like a file marked immutable).
	errImmutable = errors.New("immutable file")
	// errNotSupported: an operation the tree has no meaning for (symlink,
	// rename of a layer or a directory, a setuid mode, mkdir in a
	// reserved directory).
	errNotSupported = errors.New("operation not supported by regfs")
	// errNotReadable: reading an upload in progress (EACCES).
	errNotReadable = errors.New("uploads in progress cannot be read")
	// errForeignUpload: writing to an upload another writer left, which
	// has no expected digest to verify against (EPERM).
	errForeignUpload = errors.New("upload left by another writer: no expected digest")
	// errTooLarge: a manifest larger than store.MaxManifestSize (EFBIG).
	errTooLarge = errors.New("manifest too large")
	// errWrongKind: ln of a file into a directory of another kind, or
	// under a name that differs from its digest (EINVAL).
	errWrongKind = errors.New("link source and target directory do not match")
	// errCrossRepository: ln of a manifest into another repository (EXDEV).
	errCrossRepository = errors.New("manifests cannot be linked across repositories")
	// errNotFound: a name that does not exist (ENOENT).
	errNotFound = errors.New("no such file or directory")
	// errNotEmpty: rmdir of a directory holding other directories (ENOTEMPTY).
	errNotEmpty = errors.New("directory not empty")
	// errExists: mkdir or create of a name that exists (EEXIST).
	errExists = errors.New("file exists")
	// errAppend: opening a stored tag with O_APPEND (EPERM): a manifest is
	// replaced whole, and the kernel would start the append past bytes the
	// writer does not have.
	errAppend = errors.New("a stored manifest cannot be appended to: write the whole manifest (> not >>)")
	// errEmptyManifest: setting the times of a manifest name created but
	// never written, what touch does (EINVAL): an empty manifest is not a
	// push.
	errEmptyManifest = errors.New("an empty manifest is not a push: write a manifest to the name")
	// errBusy: renaming a manifest name still open for writing, or over
	// one (EBUSY): it is stored when closed.
	errBusy = errors.New("manifest still open for writing: close it first")
	// errStale: a write through a handle whose upload was committed or
	// cancelled (ESTALE).
	errStale = errors.New("upload already committed or cancelled")
)

// errno turns err into the errno the kernel gets; it is the one place that
// chooses errnos. op and name say what failed, for the log. Every error
// returned by a node or handle method goes through it, which also counts
// it by errno for .regfs/stats. Anything not recognised is logged once here
// and becomes EIO: a storage failure must never look like a missing file.
func (f *FS) errno(op, name string, err error) error {
	if err == nil {
		return nil
	}
	e := classify(err)
	if e == syscall.EIO {
		f.log.Error("storage operation failed", "op", op, "path", name, "error", err)
	}
	f.stats.countErrno(e)
	return fuse.Errno(e)
}

// classify is errno's table. Order matters where one error matches several
// rows: a manifest verification failure wraps ErrBlobUnknown for each
// missing blob, and must still read as a rejected manifest, not ENOENT.
func classify(err error) syscall.Errno {
	var (
		errno        fuse.Errno
		mismatch     *store.DigestMismatchError
		verification *store.ManifestVerificationError
		invalid      *store.ManifestInvalidError
		unverified   *store.ManifestUnverifiedError
	)
	switch {
	case errors.As(err, &errno):
		return syscall.Errno(errno)
	// A storage failure keeps the errno of its cause (the store's
	// StorageError wraps the driver's error, which wraps the system
	// call's), so a full disk reads as one, not as a bad upload.
	case errors.Is(err, syscall.ENOSPC):
		return syscall.ENOSPC
	case errors.Is(err, syscall.EDQUOT):
		return syscall.EDQUOT
	// A store over a registry's API reports a refusal of its credentials
	// (401, 403) as a storage failure caused by EACCES.
	case errors.Is(err, syscall.EACCES):
		return syscall.EACCES
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		return syscall.ETIMEDOUT
	case errors.Is(err, store.ErrReadOnly):
		return syscall.EROFS
	case errors.As(err, &verification), errors.As(err, &invalid),
		errors.As(err, &unverified), errors.As(err, &mismatch):
		return syscall.EBADMSG
	case errors.Is(err, store.ErrInvalidName), errors.Is(err, store.ErrInvalidDigest),
		errors.Is(err, store.ErrInvalidOffset), errors.Is(err, store.ErrInvalidPath),
		errors.Is(err, errWrongKind), errors.Is(err, errEmptyManifest):
		return syscall.EINVAL
	case errors.Is(err, errImageUnreadable):
		return syscall.EIO
	case errors.Is(err, errImageUnsupported):
		return syscall.ENOTSUP
	case errors.Is(err, store.ErrRepositoryNotEmpty), errors.Is(err, errNotEmpty):
		return syscall.ENOTEMPTY
	case errors.Is(err, store.ErrBlobUnknown), errors.Is(err, store.ErrManifestUnknown),
		errors.Is(err, store.ErrTagUnknown), errors.Is(err, store.ErrUploadUnknown),
		errors.Is(err, store.ErrRepositoryUnknown), errors.Is(err, store.ErrNotFound),
		errors.Is(err, errNotFound):
		return syscall.ENOENT
	case errors.Is(err, errImmutable), errors.Is(err, errNotSupported),
		errors.Is(err, errForeignUpload), errors.Is(err, errAppend):
		return syscall.EPERM
	case errors.Is(err, errNotReadable):
		return syscall.EACCES
	case errors.Is(err, errTooLarge):
		return syscall.EFBIG
	case errors.Is(err, errCrossRepository):
		return syscall.EXDEV
	case errors.Is(err, errExists):
		return syscall.EEXIST
	case errors.Is(err, errBusy):
		return syscall.EBUSY
	case errors.Is(err, errStale):
		return syscall.ESTALE
	case errors.Is(err, store.ErrUnsupported):
		return syscall.ENOTSUP
	}
	return syscall.EIO
}

// isNotFoundErr tells whether err means the thing does not exist.
func isNotFoundErr(err error) bool { return classify(err) == syscall.ENOENT }

// isRejection tells whether err rejects the content written (EBADMSG).
func isRejection(err error) bool { return classify(err) == syscall.EBADMSG }

// errnoNames names the errnos regfs returns, for .regfs/stats.
var errnoNames = map[syscall.Errno]string{
	syscall.ENOENT:    "ENOENT",
	syscall.EINVAL:    "EINVAL",
	syscall.EROFS:     "EROFS",
	syscall.ENOTEMPTY: "ENOTEMPTY",
	syscall.EBADMSG:   "EBADMSG",
	syscall.EINTR:     "EINTR",
	syscall.ETIMEDOUT: "ETIMEDOUT",
	syscall.EIO:       "EIO",
	syscall.EPERM:     "EPERM",
	syscall.EACCES:    "EACCES",
	syscall.EFBIG:     "EFBIG",
	syscall.EXDEV:     "EXDEV",
	syscall.EEXIST:    "EEXIST",
	syscall.ESTALE:    "ESTALE",
	syscall.EBUSY:     "EBUSY",
	syscall.ENOTSUP:   "ENOTSUP",
	syscall.ENOSPC:    "ENOSPC",
	syscall.EDQUOT:    "EDQUOT",
}

func errnoName(e syscall.Errno) string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return "errno" + strconv.Itoa(int(e))
}

// noPoll is embedded in file handles to answer the kernel's poll requests
// with ENOSYS, which makes it stop asking for the whole mount: files here
// are always ready, and every Go program that opens one would otherwise
// cost a round trip per open for the runtime's poller to register it.
type noPoll struct{}

// Poll implements fs.HandlePoller.
func (noPoll) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	return fuse.Errno(syscall.ENOSYS)
}
