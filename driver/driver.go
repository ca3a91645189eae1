// Package driver defines the storage driver interface that regfs stores
// registry data through, and the typed errors every driver returns.
//
// A driver knows nothing of registries: it stores opaque byte objects under
// slash-separated paths. Paths are absolute ("/docker/registry/v2/..."), made
// of components matching [A-Za-z0-9._-]+ (and '_' prefixed names), with no
// empty, "." or ".." components and no trailing slash. The root "/" is valid
// only for List, Stat, Walk and Delete.
//
// Drivers never choose errnos: they return the typed errors below, and the
// FUSE layer maps them in one place.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// FileInfo describes an object or a directory (a common prefix of objects).
type FileInfo struct {
	// Path is the absolute driver path.
	Path string
	// Size is the object's length in bytes; 0 for directories.
	Size int64
	// ModTime is the last modification time; may be zero for directories on
	// drivers that have no directory objects.
	ModTime time.Time
	// IsDir tells a directory (prefix) from an object.
	IsDir bool
	// Symlink marks a symbolic link met by Walk (only drivers that keep
	// objects as files have them). A link is never followed: it is neither
	// an object nor a directory, Walk does not descend it and every other
	// method refuses it with SymlinkError. Walk reports it so that a check
	// (fsck) can name every link planted in the tree.
	Symlink bool
}

// StorageDriver stores objects under paths. Every method is safe for
// concurrent use. Every method returns PathNotFoundError when the path does
// not exist, InvalidPathError for a malformed path, InvalidOffsetError for
// an offset outside the object and SymlinkError for a path that leads to or
// through a symbolic link (except Delete of the link itself, see Delete).
type StorageDriver interface {
	// Name identifies the driver in errors and logs ("filesystem", "inmemory").
	Name() string

	// GetContent returns the whole object at path. Meant for small objects
	// (links, manifests); large blobs are read with Reader.
	GetContent(ctx context.Context, path string) ([]byte, error)

	// PutContent replaces the object at path with content, atomically: a
	// concurrent reader sees the old or the new content, never a short one.
	// Missing parent directories are created, and appear with the object
	// in them: no reader, and no crash, sees a new directory empty. Once
	// PutContent returns, a driver that persists (filesystem, S3) keeps
	// the object through a crash of the machine.
	PutContent(ctx context.Context, path string, content []byte) error

	// Reader streams the object at path from offset. An offset equal to the
	// size yields a reader at EOF; a negative offset or one beyond the size is
	// an InvalidOffsetError.
	Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error)

	// Writer returns a writer for the object at path. With append false the
	// object is started empty (replacing any previous one); with append true
	// the writer continues after the bytes a previous writer wrote and closed
	// (or committed), and PathNotFoundError is returned when there is none.
	// Bytes written are durable and readable once Close or Commit returns, so
	// that an upload survives a restart of the process.
	Writer(ctx context.Context, path string, append bool) (FileWriter, error)

	// Stat describes the object or directory at path.
	Stat(ctx context.Context, path string) (FileInfo, error)

	// List returns the absolute paths of the direct children of the
	// directory at path, sorted. A missing directory is PathNotFoundError.
	List(ctx context.Context, path string) ([]string, error)

	// Move renames the object at src to dst, creating dst's parents (which,
	// as with PutContent, appear with the object in them) and replacing any
	// object at dst. A missing src is PathNotFoundError. Once Move returns,
	// a driver that persists keeps the object at dst through a crash of
	// the machine.
	Move(ctx context.Context, src, dst string) error

	// Delete removes the object at path, or the directory at path with
	// everything below it, at once: no reader sees it half gone, and no
	// name other than those of the objects ever appears while it goes.
	// Deleting "/a" never touches "/ab". A missing path is
	// PathNotFoundError. A symbolic link at path itself is removed (the
	// link, never what it points to), so that a planted link can be
	// repaired; a link above path is a SymlinkError.
	Delete(ctx context.Context, path string) error

	// Walk calls fn for every object and directory below path, parents before
	// children, siblings in sorted order. fn returning ErrSkipDir skips a
	// directory's children; any other error stops the walk and is returned.
	// A symbolic link is passed to fn with FileInfo.Symlink set and is not
	// descended.
	Walk(ctx context.Context, path string, fn WalkFn) error
}

// Janitor is implemented by drivers that keep internal areas beside the
// objects (the filesystem driver's trash of deleted trees and staging area
// of writes in progress) which a crash can leave non-empty. Such leftovers
// are never visible as objects; they only take space. A driver empties them
// itself when it starts and after each Delete; a check (fsck) reports them
// with Leftovers and removes them with Clean. base.Base implements Janitor
// for every driver it wraps: for an implementation without internal areas
// Leftovers is empty and Clean does nothing.
type Janitor interface {
	// Leftovers describes what crashed or unfinished operations left in
	// the internal areas, one entry per item (for the filesystem driver,
	// the file names), sorted. The staging areas of writers that are still
	// running, in this process or another, are not leftovers.
	Leftovers(ctx context.Context) ([]string, error)
	// Clean removes every leftover that Leftovers would report.
	Clean(ctx context.Context) error
}

// Stager is implemented by drivers that have no rename (S3), where moving
// an object is a second copy of its bytes. A staged writer sends its bytes
// toward the object at dst, where they appear only when it is committed:
// a caller that must check the bytes before they become the object (an
// upload, verified before it becomes its blob) skips the copy.
//
// Close makes the bytes written so far durable, not at dst, but through
// the object at state, a path of the caller's that the writer keeps its
// progress in (the driver's own format: the caller only stats, lists or
// deletes it). A later StageWriter with the same dst and state and append
// true continues from there, after a restart of the process too; with
// append false a new staged write starts (state is replaced when it is
// closed). Commit makes dst the object of every byte written, at once,
// and removes state. Cancel discards the staged bytes and state, never
// dst.
//
// Drivers that do not stage return UnsupportedMethodError (base.Base
// implements Stager for every driver it wraps). A driver that stages
// keeps the bytes of an uncommitted write in its backend (S3: a pending
// multipart upload at dst's key): Janitor reports those that nothing can
// reach any more.
type Stager interface {
	StageWriter(ctx context.Context, dst, state string, append bool) (FileWriter, error)
}

// StagedWrite is a staged write in progress, as StageLister lists it.
type StagedWrite struct {
	// Dst is the path the write becomes when it is committed.
	Dst string
	// ID names the write in the backend (S3: the multipart upload's ID).
	ID string
	// Started is when the write started in the backend.
	Started time.Time
}

// StageLister is implemented by drivers that stage, so that a check
// (fsck) can find the staged writes that no state object names any more:
// their state was removed with the directory it was in (a registry's purge
// of an old upload), or a crash came between the start of the write in
// the backend and its first state. Such a write is invisible to every
// listing and only takes space. base.Base implements it for every driver,
// with UnsupportedMethodError for those that do not stage.
type StageLister interface {
	// StagedWrites lists the staged writes in progress whose Dst is below
	// the directory dir.
	StagedWrites(ctx context.Context, dir string) ([]StagedWrite, error)
	// StagedWriteID returns the ID of the staged write that the state
	// object at state names; "" when it names none yet (a write smaller
	// than a part lives in its state alone).
	StagedWriteID(ctx context.Context, state string) (string, error)
	// AbortStagedWrite discards the staged write w; one gone already is
	// no error.
	AbortStagedWrite(ctx context.Context, w StagedWrite) error
}

// Usage is the space of a driver's backend, for df.
type Usage struct {
	// Total, Free and Avail are bytes: the backend's size, what is free,
	// and what is free to an unprivileged writer.
	Total, Free, Avail uint64
	// Files and FreeFiles count inodes, where the backend has them.
	Files, FreeFiles uint64
}

// UsageReporter is implemented by drivers that can tell how much space
// their backend has (the filesystem driver: statfs(2) of its root). An
// object store has no such number; its drivers do not implement it.
type UsageReporter interface {
	Usage(ctx context.Context) (Usage, error)
}

// WalkFn is called by Walk for each entry.
type WalkFn func(fi FileInfo) error

// ErrSkipDir returned by a WalkFn skips the children of a directory.
// Returned for an object it is ignored and the walk goes on.
var ErrSkipDir = fmt.Errorf("skip this directory")

// FileWriter writes one object. It is not safe for concurrent use.
type FileWriter interface {
	io.Writer
	// Size is the number of bytes in the object so far, including the bytes
	// written by earlier writers that this one appends to.
	Size() int64
	// Close makes the bytes written so far durable and releases the writer.
	// The object can be reopened with append to continue.
	Close() error
	// Cancel discards the object, including the bytes of earlier writers.
	Cancel(ctx context.Context) error
	// Commit makes the object complete and durable. Close must still be called.
	Commit(ctx context.Context) error
}

// PathNotFoundError is returned when an object or directory does not exist.
type PathNotFoundError struct {
	Path   string
	Driver string
}

func (e PathNotFoundError) Error() string {
	return fmt.Sprintf("%s: path not found: %s", e.Driver, e.Path)
}

// InvalidPathError is returned for a malformed path.
type InvalidPathError struct {
	Path   string
	Driver string
}

func (e InvalidPathError) Error() string {
	return fmt.Sprintf("%s: invalid path: %q", e.Driver, e.Path)
}

// InvalidOffsetError is returned for a read or write offset outside an object.
type InvalidOffsetError struct {
	Path   string
	Offset int64
	Driver string
}

func (e InvalidOffsetError) Error() string {
	return fmt.Sprintf("%s: invalid offset %d for path %s", e.Driver, e.Offset, e.Path)
}

// SymlinkError is returned when a path leads to or through a symbolic link
// (only drivers that keep objects as files meet them). Neither the registry
// nor regfs makes links, so one was planted by someone else, and following it
// could read or change files outside the storage root: it is refused, never
// followed. Path is the path asked for; Link is the link met, Path itself or
// one of its parents (empty when the link went away before it could be
// named).
type SymlinkError struct {
	Path   string
	Link   string
	Driver string
}

func (e SymlinkError) Error() string {
	if e.Link == "" || e.Link == e.Path {
		return fmt.Sprintf("%s: refusing symbolic link %s", e.Driver, e.Path)
	}
	return fmt.Sprintf("%s: refusing symbolic link %s on the way to %s", e.Driver, e.Link, e.Path)
}

// IsSymlink reports whether err is, or wraps, a SymlinkError.
func IsSymlink(err error) bool {
	var se SymlinkError
	return errors.As(err, &se)
}

// UnsupportedMethodError is returned by a driver that cannot do an operation.
type UnsupportedMethodError struct {
	Method string
	Driver string
}

func (e UnsupportedMethodError) Error() string {
	return fmt.Sprintf("%s: unsupported method %s", e.Driver, e.Method)
}

// Error wraps any other failure of a driver with the operation and path, so
// logs say which backend call failed. It unwraps to the cause.
type Error struct {
	Driver string
	Op     string
	Path   string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s %s: %v", e.Driver, e.Op, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports whether err is, or wraps, a PathNotFoundError, so callers
// can tell "absent" from a backend failure without matching strings.
func IsNotFound(err error) bool {
	var nf PathNotFoundError
	return errors.As(err, &nf)
}

// ValidComponent reports whether name can be one component of a driver path:
// one or more of [A-Za-z0-9._-], and neither "." nor "..". Every driver maps
// such a name to a key or file name unchanged, so validating once here keeps
// paths portable between drivers.
func ValidComponent(name string) bool {
	if name == "" || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !componentByte(name[i]) {
			return false
		}
	}
	return true
}

// Child returns the path of name in the directory dir, which may be the
// root "/". Unlike path.Join it cleans nothing: both are valid already.
func Child(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// ValidPath reports whether p is a well-formed object path: absolute, made of
// valid components, with no empty component and no trailing slash. The root
// "/" is not an object path; the methods that accept it check for it apart.
// It does not allocate, because it runs on every driver call.
func ValidPath(p string) bool {
	if len(p) < 2 || p[0] != '/' {
		return false
	}
	start := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if !componentByte(p[i]) {
				return false
			}
			continue
		}
		switch p[start:i] {
		case "", ".", "..":
			return false
		}
		start = i + 1
	}
	return true
}

func componentByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// readLengthKey is the context key of WithReadLength.
type readLengthKey struct{}

// WithReadLength returns a context telling Reader that its caller reads at
// most n bytes (n > 0) from the offset. A driver for which the length of a
// stream matters asks the storage for that range only: an S3 GET without
// an end makes the server send bytes nobody reads, and a connection closed
// before the end of its answer cannot be reused. Others ignore the hint. A
// reader opened under it may end (io.EOF) after n bytes, or run on to the
// end of the object; the caller must not read past n bytes either way.
func WithReadLength(ctx context.Context, n int64) context.Context {
	return context.WithValue(ctx, readLengthKey{}, n)
}

// ReadLength returns the length WithReadLength set on ctx, if any.
func ReadLength(ctx context.Context) (int64, bool) {
	n, ok := ctx.Value(readLengthKey{}).(int64)
	return n, ok && n > 0
}

// childrenWalkKey is the context key of WithChildrenWalk.
type childrenWalkKey struct{}

// WithChildrenWalk returns a context telling Walk that its caller wants
// the children of the walk's root only: its WalkFn skips every directory
// (driver.ErrSkipDir). A driver whose Walk would otherwise start with a
// request meant for small trees (S3's first page of keys) lists the
// children alone. Walk must still honour a WalkFn that descends.
func WithChildrenWalk(ctx context.Context) context.Context {
	return context.WithValue(ctx, childrenWalkKey{}, true)
}

// ChildrenWalk reports whether WithChildrenWalk set ctx.
func ChildrenWalk(ctx context.Context) bool {
	v, _ := ctx.Value(childrenWalkKey{}).(bool)
	return v
}

// sizeReportKey is the context key of WithSizeReport.
type sizeReportKey struct{}

// WithSizeReport returns a context asking Reader to call report with the
// size of the whole object, before it returns, when the answer that opens
// the stream tells it at no cost: an S3 GET of a range names the object's
// size in its Content-Range. A caller that wants an object's first bytes
// and its size then makes one request where it would make two (a Stat and
// a Reader). A driver that cannot tell does not call report; the caller
// then states the object.
func WithSizeReport(ctx context.Context, report func(size int64)) context.Context {
	return context.WithValue(ctx, sizeReportKey{}, report)
}

// ReportSize calls the function WithSizeReport set on ctx, if any, with
// the size of the object a Reader is opening.
func ReportSize(ctx context.Context, size int64) {
	if report, ok := ctx.Value(sizeReportKey{}).(func(int64)); ok {
		report(size)
	}
}
