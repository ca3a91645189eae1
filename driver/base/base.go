// Package base holds the checks every storage driver needs, so that they live
// in one place instead of once per driver.
//
// A driver implements driver.StorageDriver without checking its arguments
// and its constructor returns base.New(impl). The wrapper then guarantees the
// implementation that:
//
//   - every path is valid (driver.ValidPath), and the root "/" reaches it only
//     through Stat, List, Walk and Delete;
//   - Reader offsets are not negative (the upper bound needs the object's
//     size, so the implementation checks it);
//   - the context is not already done when a call starts, and a Walk stops
//     between entries once it is;
//   - a FileWriter sees Write and Commit only while open, Close at most once
//     and never after Cancel (Cancel must release the writer's resources).
//
// In return every error the caller sees names the driver: the typed errors
// get their Driver field filled in if the implementation left it empty, and
// any other error is wrapped in *driver.Error with the operation and path.
// Errors returned by a WalkFn come back unchanged.
//
// The wrapper is on the read path of every FUSE request, so it allocates
// nothing on success except for Writer and Walk, and Reader returns the
// implementation's stream itself (keeping optional interfaces such as
// io.ReaderAt or io.WriterTo visible to callers).
package base

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/regfs/regfs/driver"
)

// Errors returned by a FileWriter used in the wrong state. All of them wrap
// fs.ErrClosed, so errors.Is(err, fs.ErrClosed) matches any of them.
var (
	errWriterClosed    = fmt.Errorf("writer closed: %w", fs.ErrClosed)
	errWriterCommitted = fmt.Errorf("writer committed: %w", fs.ErrClosed)
	errWriterCancelled = fmt.Errorf("writer cancelled: %w", fs.ErrClosed)
)

// Base wraps a driver implementation with the common checks. It is exported
// so that a driver can assert on it in tests; construct it with New.
type Base struct {
	impl driver.StorageDriver
	name string
}

var _ driver.StorageDriver = (*Base)(nil)

// New wraps impl. impl.Name is read once, here.
func New(impl driver.StorageDriver) *Base {
	return &Base{impl: impl, name: impl.Name()}
}

// Name returns the implementation's name.
func (b *Base) Name() string { return b.name }

// check validates path (the root allowed if rootOK) and the context.
func (b *Base) check(ctx context.Context, op, path string, rootOK bool) error {
	if !driver.ValidPath(path) && !(rootOK && path == "/") {
		return driver.InvalidPathError{Path: path, Driver: b.name}
	}
	if err := ctx.Err(); err != nil {
		return &driver.Error{Driver: b.name, Op: op, Path: path, Err: err}
	}
	return nil
}

// wrap makes err name the driver (see the package comment).
func (b *Base) wrap(op, path string, err error) error {
	switch e := err.(type) {
	case nil:
		return nil
	case driver.PathNotFoundError:
		if e.Driver == "" {
			e.Driver = b.name
		}
		return e
	case driver.InvalidPathError:
		if e.Driver == "" {
			e.Driver = b.name
		}
		return e
	case driver.InvalidOffsetError:
		if e.Driver == "" {
			e.Driver = b.name
		}
		return e
	case driver.UnsupportedMethodError:
		if e.Driver == "" {
			e.Driver = b.name
		}
		return e
	case *driver.Error:
		if e.Driver == "" {
			c := *e
			c.Driver = b.name
			return &c
		}
		return e
	}
	return &driver.Error{Driver: b.name, Op: op, Path: path, Err: err}
}

// GetContent checks path and ctx, then calls the implementation.
func (b *Base) GetContent(ctx context.Context, path string) ([]byte, error) {
	if err := b.check(ctx, "GetContent", path, false); err != nil {
		return nil, err
	}
	data, err := b.impl.GetContent(ctx, path)
	if err != nil {
		return nil, b.wrap("GetContent", path, err)
	}
	return data, nil
}

// PutContent checks path and ctx, then calls the implementation.
func (b *Base) PutContent(ctx context.Context, path string, content []byte) error {
	if err := b.check(ctx, "PutContent", path, false); err != nil {
		return err
	}
	return b.wrap("PutContent", path, b.impl.PutContent(ctx, path, content))
}

// Reader checks path, ctx and that offset is not negative, then calls the
// implementation.
func (b *Base) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	if err := b.check(ctx, "Reader", path, false); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, driver.InvalidOffsetError{Path: path, Offset: offset, Driver: b.name}
	}
	rc, err := b.impl.Reader(ctx, path, offset)
	if err != nil {
		return nil, b.wrap("Reader", path, err)
	}
	return rc, nil
}

// Writer checks path and ctx, then wraps the implementation's writer so that
// its state is checked once, here.
func (b *Base) Writer(ctx context.Context, path string, append bool) (driver.FileWriter, error) {
	if err := b.check(ctx, "Writer", path, false); err != nil {
		return nil, err
	}
	w, err := b.impl.Writer(ctx, path, append)
	if err != nil {
		return nil, b.wrap("Writer", path, err)
	}
	return &writer{b: b, path: path, impl: w}, nil
}

// Stat checks path and ctx, then calls the implementation.
func (b *Base) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	if err := b.check(ctx, "Stat", path, true); err != nil {
		return driver.FileInfo{}, err
	}
	fi, err := b.impl.Stat(ctx, path)
	if err != nil {
		return driver.FileInfo{}, b.wrap("Stat", path, err)
	}
	return fi, nil
}

// List checks path and ctx, then calls the implementation.
func (b *Base) List(ctx context.Context, path string) ([]string, error) {
	if err := b.check(ctx, "List", path, true); err != nil {
		return nil, err
	}
	names, err := b.impl.List(ctx, path)
	if err != nil {
		return nil, b.wrap("List", path, err)
	}
	return names, nil
}

// Move checks both paths and ctx, then calls the implementation.
func (b *Base) Move(ctx context.Context, src, dst string) error {
	if err := b.check(ctx, "Move", src, false); err != nil {
		return err
	}
	if !driver.ValidPath(dst) {
		return driver.InvalidPathError{Path: dst, Driver: b.name}
	}
	return b.wrap("Move", src, b.impl.Move(ctx, src, dst))
}

// Delete checks path and ctx, then calls the implementation. Delete("/")
// empties the store.
func (b *Base) Delete(ctx context.Context, path string) error {
	if err := b.check(ctx, "Delete", path, true); err != nil {
		return err
	}
	return b.wrap("Delete", path, b.impl.Delete(ctx, path))
}

// Walk checks path and ctx, then calls the implementation with a WalkFn that
// stops the walk once ctx is done. An error from fn is returned unchanged.
func (b *Base) Walk(ctx context.Context, path string, fn driver.WalkFn) error {
	if err := b.check(ctx, "Walk", path, true); err != nil {
		return err
	}
	var fnErr error
	err := b.impl.Walk(ctx, path, func(fi driver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := fn(fi)
		if err != nil && err != driver.ErrSkipDir {
			fnErr = err
		}
		return err
	})
	if err == nil {
		return nil
	}
	if fnErr != nil && errors.Is(err, fnErr) {
		return fnErr
	}
	return b.wrap("Walk", path, err)
}

// writer states.
const (
	open = iota
	committed
	cancelled
	closed
)

// writer enforces the FileWriter state machine for the implementation.
type writer struct {
	b     *Base
	path  string
	impl  driver.FileWriter
	state int
}

func (w *writer) stateErr(op string) error {
	var err error
	switch w.state {
	case committed:
		err = errWriterCommitted
	case cancelled:
		err = errWriterCancelled
	default:
		err = errWriterClosed
	}
	return &driver.Error{Driver: w.b.name, Op: op, Path: w.path, Err: err}
}

func (w *writer) Write(p []byte) (int, error) {
	if w.state != open {
		return 0, w.stateErr("Write")
	}
	n, err := w.impl.Write(p)
	if err != nil {
		return n, w.b.wrap("Write", w.path, err)
	}
	return n, nil
}

func (w *writer) Size() int64 { return w.impl.Size() }

// Close is a no-op after Cancel or an earlier Close, so that a deferred Close
// is always safe.
func (w *writer) Close() error {
	switch w.state {
	case cancelled, closed:
		w.state = closed
		return nil
	}
	w.state = closed
	return w.b.wrap("Close", w.path, w.impl.Close())
}

// Cancel does not check ctx: callers cancel on their error path, often
// because ctx was cancelled, and must still be able to clean up.
func (w *writer) Cancel(ctx context.Context) error {
	if w.state != open {
		return w.stateErr("Cancel")
	}
	w.state = cancelled
	return w.b.wrap("Cancel", w.path, w.impl.Cancel(ctx))
}

func (w *writer) Commit(ctx context.Context) error {
	if w.state != open {
		return w.stateErr("Commit")
	}
	if err := ctx.Err(); err != nil {
		return &driver.Error{Driver: w.b.name, Op: "Commit", Path: w.path, Err: err}
	}
	if err := w.impl.Commit(ctx); err != nil {
		return w.b.wrap("Commit", w.path, err)
	}
	w.state = committed
	return nil
}
