package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
)

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("op: %w", err) }
	storageErr := func(kind, cause error) error {
		return wrap(&store.StorageError{Op: "Op", Path: "/x", Kind: kind, Err: cause})
	}
	blobMissing := &store.ManifestBlobUnknownError{Digest: digest.FromString("x")}
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{storageErr(store.ErrNotFound, driver.PathNotFoundError{Path: "/x", Driver: "inmemory"}), syscall.ENOENT},
		{wrap(store.ErrBlobUnknown), syscall.ENOENT},
		{wrap(store.ErrManifestUnknown), syscall.ENOENT},
		{wrap(store.ErrTagUnknown), syscall.ENOENT},
		{wrap(store.ErrUploadUnknown), syscall.ENOENT},
		{wrap(store.ErrRepositoryUnknown), syscall.ENOENT},
		{wrap(store.ErrInvalidName), syscall.EINVAL},
		{wrap(store.ErrInvalidDigest), syscall.EINVAL},
		{wrap(store.ErrInvalidOffset), syscall.EINVAL},
		{storageErr(store.ErrInvalidOffset, driver.InvalidOffsetError{Path: "/x", Offset: -1}), syscall.EINVAL},
		{storageErr(store.ErrInvalidPath, driver.InvalidPathError{Path: "/x/../y"}), syscall.EINVAL},
		{store.ErrReadOnly, syscall.EROFS},
		{wrap(store.ErrRepositoryNotEmpty), syscall.ENOTEMPTY},
		{&store.DigestMismatchError{Expected: digest.FromString("a"), Actual: digest.FromString("b")}, syscall.EBADMSG},
		{&store.ManifestInvalidError{Reason: "bad"}, syscall.EBADMSG},
		{&store.ManifestUnverifiedError{Reason: "bad"}, syscall.EBADMSG},
		// Verification wraps ErrBlobUnknown per missing blob: still EBADMSG.
		{wrap(&store.ManifestVerificationError{Errs: []error{blobMissing}}), syscall.EBADMSG},
		{wrap(context.Canceled), syscall.EINTR},
		{wrap(context.DeadlineExceeded), syscall.ETIMEDOUT},
		{storageErr(nil, &driver.Error{Driver: "s3", Op: "GetContent", Path: "/x", Err: errors.New("connection reset")}), syscall.EIO},
		{storageErr(nil, &driver.Error{Driver: "filesystem", Op: "Write", Path: "/x", Err: &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}}), syscall.ENOSPC},
		{storageErr(nil, &driver.Error{Driver: "filesystem", Op: "Close", Path: "/x", Err: &os.PathError{Op: "close", Path: "/x", Err: syscall.EDQUOT}}), syscall.EDQUOT},
		{storageErr(nil, &driver.Error{Driver: "s3", Op: "GetContent", Path: "/x", Err: context.Canceled}), syscall.EINTR},
		// A link that stays torn is a storage failure, never EINVAL or ENOENT.
		{&store.CorruptLinkError{Path: "/x/link", Content: []byte("sha256:12")}, syscall.EIO},
		{&store.CorruptBlobError{Path: "/x/data"}, syscall.EIO},
		{errors.New("something else"), syscall.EIO},
		{wrap(syscall.ENOSPC), syscall.ENOSPC},
		// A registry refusing the credentials (store/remote): EACCES.
		{storageErr(nil, fmt.Errorf("401: %w", syscall.EACCES)), syscall.EACCES},
		{wrap(syscall.ENOENT), syscall.EIO}, // a raw errno from a backend is a hiccup, not "not found"
		{storageErr(store.ErrUnsupported, driver.UnsupportedMethodError{Method: "Move"}), syscall.ENOTSUP},
		{errImmutable, syscall.EPERM},
		{errNotSupported, syscall.EPERM},
		{errForeignUpload, syscall.EPERM},
		{errNotReadable, syscall.EACCES},
		{errTooLarge, syscall.EFBIG},
		{errWrongKind, syscall.EINVAL},
		{errCrossRepository, syscall.EXDEV},
		{errExists, syscall.EEXIST},
		{errStale, syscall.ESTALE},
		{fuse.Errno(syscall.ENOSYS), syscall.ENOSYS},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %v, want %v", c.err, errnoName(got), errnoName(c.want))
		}
	}
}

// TestErrnoCountsAndLogsOnce checks that errno counts by errno and logs
// only the unknown errors, once each.
func TestErrnoCountsAndLogsOnce(t *testing.T) {
	var log strings.Builder
	f := New(nil, Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if f.errno("op", "p", nil) != nil {
		t.Error("nil error mapped to an errno")
	}
	_ = f.errno("lookup", "a/b", store.ErrTagUnknown)
	_ = f.errno("read", "a/_layers/x", errors.New("disk on fire"))
	err := f.errno("read", "a/_layers/x", errors.New("disk on fire"))
	if classify(err) != syscall.EIO {
		t.Errorf("unknown error: %v", err)
	}
	s := f.Stats()
	if s.ErrorsByErrno["ENOENT"] != 1 || s.ErrorsByErrno["EIO"] != 2 {
		t.Errorf("errors_by_errno = %v", s.ErrorsByErrno)
	}
	if n := strings.Count(log.String(), "disk on fire"); n != 2 || !strings.Contains(log.String(), "op=read path=a/_layers/x") {
		t.Errorf("log (want each EIO once, with op and path):\n%s", log.String())
	}
	if strings.Contains(log.String(), "tag unknown") {
		t.Errorf("ENOENT logged:\n%s", log.String())
	}
}

func TestErrorLogKeepsTheLast100(t *testing.T) {
	var l errorLog
	base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; i < errorLogSize+5; i++ {
		l.add(rejection{time: base.Add(time.Duration(i) * time.Second), path: fmt.Sprintf("r/_uploads/%d", i), reasons: []string{"first", "second\nline"}})
	}
	out := string(l.render())
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3*errorLogSize {
		t.Fatalf("%d lines, want %d", len(lines), 3*errorLogSize)
	}
	if lines[0] != "2024-01-02T03:04:10Z r/_uploads/5" || lines[1] != "  first" || lines[2] != "  second line" {
		t.Errorf("oldest kept entry:\n%s", strings.Join(lines[:3], "\n"))
	}
	if want := fmt.Sprintf("r/_uploads/%d", errorLogSize+4); !strings.HasSuffix(lines[len(lines)-3], want) {
		t.Errorf("newest entry: %q, want %s", lines[len(lines)-3], want)
	}
}

func TestReasonsListEveryProblem(t *testing.T) {
	a, b := digest.FromString("a"), digest.FromString("b")
	err := fmt.Errorf("put: %w", &store.ManifestVerificationError{Errs: []error{
		&store.ManifestBlobUnknownError{Digest: a}, &store.ManifestBlobUnknownError{Digest: b}, &store.ManifestInvalidError{Reason: "name mismatch"},
	}})
	got := reasonsOf(err)
	if len(got) != 3 || !strings.Contains(got[0], a.String()) || !strings.Contains(got[1], b.String()) {
		t.Errorf("reasons = %q", got)
	}
	if got := reasonsOf(errors.New("x")); len(got) != 1 || got[0] != "x" {
		t.Errorf("reasons of a plain error = %q", got)
	}
}

func TestInodesAreDerived(t *testing.T) {
	d := digest.Digest("sha256:0123456789abcdef" + strings.Repeat("0", 48))
	if got := digestInode(d); got != 0x0123456789abcdef {
		t.Errorf("digestInode = %#x", got)
	}
	if got := digestInode(digest.Digest("sha256:" + strings.Repeat("0", 64))); got <= rootInode {
		t.Errorf("an all-zero digest gets inode %d, which FUSE reserves", got)
	}
	if pathInode("") != rootInode {
		t.Error("the root is not inode 1")
	}
	if pathInode("a/b") != childInode(childInode(rootInode, "a"), "b") {
		t.Error("pathInode does not chain childInode")
	}
	seen := map[uint64]string{}
	for _, p := range []string{"a", "b", "a/b", "b/a", "a/a", "ab", "a/_layers", "a/b/_layers"} {
		ino := pathInode(p)
		if other, dup := seen[ino]; dup {
			t.Errorf("%s and %s share inode %d", p, other, ino)
		}
		seen[ino] = p
	}
}

func TestMountOptions(t *testing.T) {
	for _, c := range []struct {
		cfg  MountConfig
		want int
	}{
		{MountConfig{}, 6},
		{MountConfig{ReadOnly: true}, 7},
		// default_permissions comes with allow_other.
		{MountConfig{AllowOther: true}, 8},
		{MountConfig{ReadOnly: true, AllowOther: true}, 9},
		{MountConfig{AllowOther: true, NoDefaultPermissions: true}, 7},
		{MountConfig{NoDefaultPermissions: true}, 6},
	} {
		if n := len(MountOptions(c.cfg)); n != c.want {
			t.Errorf("%+v: %d options, want %d", c.cfg, n, c.want)
		}
	}
}

// TestNodesDirectly calls node methods without a mount: read-only errors
// from the FS itself (the kernel's ro option refuses most writes before
// they arrive) and attributes.
func TestNodesDirectly(t *testing.T) {
	ctx := context.Background()
	st, err := store.New(inmemory.New(), store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f := New(st, Options{ReadOnly: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	root := newRootDir(f)
	if _, err := root.Mkdir(ctx, &fuse.MkdirRequest{Name: "x"}); classify(err) != syscall.EROFS {
		t.Errorf("mkdir: %v", err)
	}
	ups := newUploadsDir(f, "r")
	_, _, err = ups.Create(ctx, &fuse.CreateRequest{Name: digest.FromString("x").String()}, &fuse.CreateResponse{})
	if classify(err) != syscall.EROFS {
		t.Errorf("create upload: %v", err)
	}
	mans := newManifestsDir(f, "r")
	if err := mans.Remove(ctx, &fuse.RemoveRequest{Name: "v1"}); classify(err) != syscall.EROFS {
		t.Errorf("untag: %v", err)
	}
	l := layerFile{f: f, repo: "r", dgst: digest.FromString("x"), size: 1000}
	var a fuse.Attr
	if err := l.Attr(ctx, &a); err != nil || a.Size != 1000 || a.Mode != 0o444 || a.Valid != immutableTTL || a.Inode != digestInode(l.dgst) {
		t.Errorf("layer attr: %v %v", a, err)
	}
	if _, err := l.Open(ctx, &fuse.OpenRequest{Flags: fuse.OpenWriteOnly}, &fuse.OpenResponse{}); classify(err) != syscall.EROFS {
		t.Errorf("open layer for writing on a read-only FS: %v", err)
	}
	var da fuse.Attr
	// A read-only mount shows no write bits.
	if err := newNSDir(f, "a").Attr(ctx, &da); err != nil || da.Mode != os.ModeDir|0o555 || da.Inode != pathInode("a") {
		t.Errorf("dir attr: %v %v", da, err)
	}
}

// A manifest with thousands of problems, or a reason quoting megabytes of
// input, must not blow up .regfs/errors or the log line.
func TestReasonsAreBounded(t *testing.T) {
	var errs []error
	for i := 0; i < 10000; i++ {
		errs = append(errs, &store.ManifestBlobUnknownError{Digest: digest.FromString(strconv.Itoa(i))})
	}
	errs = append([]error{&store.ManifestInvalidError{Reason: strings.Repeat("n", 3<<20)}}, errs...)
	got := reasonsOf(&store.ManifestVerificationError{Errs: errs})
	if len(got) != maxReasons+1 || got[maxReasons] != "... and 9951 more problems" {
		t.Fatalf("%d reasons, last %q", len(got), got[len(got)-1])
	}
	if len(got[0]) > maxReasonBytes+32 || !strings.Contains(got[1], digest.FromString("0").String()) {
		t.Errorf("first reasons: %d bytes, then %q", len(got[0]), got[1])
	}
}
