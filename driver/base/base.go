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
// # Deadlines
//
// Every call has a deadline, so a stalled backend fails calls instead of
// hanging the mount. A call that changes or reads metadata (GetContent,
// PutContent, Stat, List, Move, Delete, opening a Reader or Writer, and a
// writer's Commit and Cancel) must finish within Options.Timeout. A stream
// or a walk may take as long as it needs but must keep moving: each Read of
// a stream, each Write or Close of a writer and the wait for each entry of a
// Walk must finish within Options.IdleTimeout. The deadline reaches the
// implementation through the context it is given (a stream's and a writer's
// context is the one they were opened with), so an implementation must
// honour its context for the deadline to end a stalled call. A call that
// runs past its deadline fails with a *driver.Error wrapping
// context.DeadlineExceeded.
//
// Base also implements driver.Janitor, forwarding to the implementation
// when it implements it, so a caller can always ask any driver for its
// leftovers.
//
// In return every error the caller sees names the driver: the typed errors
// get their Driver field filled in if the implementation left it empty, and
// any other error is wrapped in *driver.Error with the operation and path.
// Errors returned by a WalkFn come back unchanged.
//
// The wrapper is on the read path of every FUSE request, so it allocates
// little: a call allocates only its deadline's context (none when the
// caller's own deadline is sooner), and a stream one timer when it is
// opened, none per Read. With IdleTimeout negative, Reader returns the
// implementation's stream itself (keeping optional interfaces such as
// io.ReaderAt or io.WriterTo visible to callers).
package base

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync/atomic"
	"time"

	"github.com/regfs/regfs/driver"
)

// Errors returned by a FileWriter used in the wrong state. All of them wrap
// fs.ErrClosed, so errors.Is(err, fs.ErrClosed) matches any of them.
var (
	errWriterClosed    = fmt.Errorf("writer closed: %w", fs.ErrClosed)
	errWriterCommitted = fmt.Errorf("writer committed: %w", fs.ErrClosed)
	errWriterCancelled = fmt.Errorf("writer cancelled: %w", fs.ErrClosed)
)

// Default deadlines (see Deadlines in the package comment). Two minutes is
// far beyond any healthy call, local or remote (an S3 request that has not
// answered in two minutes will not), yet a hung backend frees the process
// that waits on it in bounded time.
const (
	DefaultTimeout     = 2 * time.Minute
	DefaultIdleTimeout = 2 * time.Minute
)

// Options tune NewWithOptions. Zero fields take the defaults.
type Options struct {
	// Timeout bounds each metadata call (DefaultTimeout if 0, none if
	// negative).
	Timeout time.Duration
	// IdleTimeout bounds each Read of a stream, each Write and Close of a
	// writer and each step of a Walk (DefaultIdleTimeout if 0, none if
	// negative).
	IdleTimeout time.Duration
}

// Base wraps a driver implementation with the common checks. It is exported
// so that a driver can assert on it in tests; construct it with New.
type Base struct {
	impl    driver.StorageDriver
	name    string
	timeout time.Duration
	idle    time.Duration
}

var (
	_ driver.StorageDriver = (*Base)(nil)
	_ driver.Janitor       = (*Base)(nil)
	_ driver.Stager        = (*Base)(nil)
	_ driver.StageLister   = (*Base)(nil)
)

// New wraps impl with the default deadlines. impl.Name is read once, here.
func New(impl driver.StorageDriver) *Base {
	return NewWithOptions(impl, Options{})
}

// NewWithOptions wraps impl with the deadlines o sets.
func NewWithOptions(impl driver.StorageDriver, o Options) *Base {
	b := &Base{impl: impl, name: impl.Name(), timeout: o.Timeout, idle: o.IdleTimeout}
	if b.timeout == 0 {
		b.timeout = DefaultTimeout
	}
	if b.idle == 0 {
		b.idle = DefaultIdleTimeout
	}
	return b
}

// Usage implements driver.UsageReporter for a driver that does; for any
// other it is an UnsupportedMethodError.
func (b *Base) Usage(ctx context.Context) (driver.Usage, error) {
	u, ok := b.impl.(driver.UsageReporter)
	if !ok {
		return driver.Usage{}, driver.UnsupportedMethodError{Method: "Usage", Driver: b.name}
	}
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	out, err := u.Usage(callCtx)
	if err != nil {
		return driver.Usage{}, b.finish(ctx, callCtx, "Usage", "/", err)
	}
	return out, nil
}

// deadline returns ctx bounded by the call timeout, and the function to
// release it. When ctx already ends sooner no context is made.
func (b *Base) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.timeout < 0 {
		return ctx, noop
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= b.timeout {
		return ctx, noop
	}
	return context.WithTimeout(ctx, b.timeout)
}

func noop() {}

// timedOut reports whether a call made under callCtx failed because of the
// deadline this wrapper set (not the caller's own cancellation).
func timedOut(ctx, callCtx context.Context) bool {
	return ctx.Err() == nil && callCtx.Err() != nil
}

// timeoutErr is the error of op on path that ran past d.
func (b *Base) timeoutErr(op, path string, d time.Duration) error {
	return &driver.Error{Driver: b.name, Op: op, Path: path,
		Err: fmt.Errorf("no answer within %v: %w", d, context.DeadlineExceeded)}
}

// finish wraps err, or replaces it with the timeout error when the call's
// deadline ended it.
func (b *Base) finish(ctx, callCtx context.Context, op, path string, err error) error {
	if err != nil && timedOut(ctx, callCtx) {
		return b.timeoutErr(op, path, b.timeout)
	}
	return b.wrap(op, path, err)
}

// idleTimer cancels a stream's, writer's or walk's context when one step
// takes longer than d. It is armed around each step, not in between, so
// time spent by the caller between reads does not count.
type idleTimer struct {
	t      *time.Timer
	fired  atomic.Bool
	cancel context.CancelFunc
}

// newIdleTimer returns a timer for the context it derives from ctx, or
// nil (every method a no-op) when d, the longest step it will bound, is
// negative.
func newIdleTimer(ctx context.Context, d time.Duration) (*idleTimer, context.Context) {
	if d < 0 {
		return nil, ctx
	}
	ctx, cancel := context.WithCancel(ctx)
	it := &idleTimer{cancel: cancel}
	it.t = time.AfterFunc(time.Hour, func() {
		it.fired.Store(true)
		cancel()
	})
	it.t.Stop()
	return it, ctx
}

// start arms the timer for one step of at most dur.
func (it *idleTimer) start(dur time.Duration) {
	if it != nil {
		it.t.Reset(dur)
	}
}

// stop disarms the timer; it reports whether the step ran out of time (now
// or in an earlier step, which leaves the context cancelled for good).
func (it *idleTimer) stop() bool {
	if it == nil {
		return false
	}
	it.t.Stop()
	return it.fired.Load()
}

// release stops the timer and releases the derived context.
func (it *idleTimer) release() {
	if it != nil {
		it.t.Stop()
		it.cancel()
	}
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
	case driver.SymlinkError:
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
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	data, err := b.impl.GetContent(callCtx, path)
	if err != nil {
		return nil, b.finish(ctx, callCtx, "GetContent", path, err)
	}
	return data, nil
}

// PutContent checks path and ctx, then calls the implementation.
func (b *Base) PutContent(ctx context.Context, path string, content []byte) error {
	if err := b.check(ctx, "PutContent", path, false); err != nil {
		return err
	}
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	return b.finish(ctx, callCtx, "PutContent", path, b.impl.PutContent(callCtx, path, content))
}

// Reader checks path, ctx and that offset is not negative, then calls the
// implementation. Opening the stream must finish within the call timeout,
// and each Read within the idle timeout.
func (b *Base) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	if err := b.check(ctx, "Reader", path, false); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, driver.InvalidOffsetError{Path: path, Offset: offset, Driver: b.name}
	}
	if b.idle < 0 {
		callCtx, cancel := b.deadline(ctx)
		rc, err := b.impl.Reader(callCtx, path, offset)
		if err != nil {
			cancel()
			return nil, b.finish(ctx, callCtx, "Reader", path, err)
		}
		if callCtx != ctx {
			// The stream lives on after the call: its context must too.
			return &releasingStream{ReadCloser: rc, cancel: cancel}, nil
		}
		return rc, nil
	}
	// The stream's context outlives this call, so the open is bounded by
	// the stream's own timer instead of a context that ends with the call.
	it, sctx := newIdleTimer(ctx, b.idle)
	if b.timeout >= 0 {
		it.start(b.timeout)
	}
	rc, err := b.impl.Reader(sctx, path, offset)
	late := it.stop()
	if err != nil {
		it.release()
		if late {
			return nil, b.timeoutErr("Reader", path, b.timeout)
		}
		return nil, b.wrap("Reader", path, err)
	}
	return &stream{b: b, path: path, rc: rc, it: it}, nil
}

// releasingStream releases a deadline context when the stream is closed.
type releasingStream struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (s *releasingStream) Close() error {
	err := s.ReadCloser.Close()
	s.cancel()
	return err
}

// stream bounds each Read of an implementation's stream by the idle
// timeout. Like any io.Reader it is not safe for concurrent Reads.
type stream struct {
	b    *Base
	path string
	rc   io.ReadCloser
	it   *idleTimer
}

func (s *stream) Read(p []byte) (int, error) {
	s.it.start(s.b.idle)
	n, err := s.rc.Read(p)
	if s.it.stop() {
		if err == nil || err == io.EOF {
			// The bytes came, late; the stream is dead from now on.
			return n, err
		}
		return n, s.b.timeoutErr("Read", s.path, s.b.idle)
	}
	if err != nil && err != io.EOF {
		return n, s.b.wrap("Read", s.path, err)
	}
	return n, err
}

func (s *stream) Close() error {
	err := s.rc.Close()
	s.it.release()
	return s.b.wrap("Close", s.path, err)
}

// Writer checks path and ctx, then wraps the implementation's writer so that
// its state and deadlines are checked once, here.
func (b *Base) Writer(ctx context.Context, path string, append bool) (driver.FileWriter, error) {
	if err := b.check(ctx, "Writer", path, false); err != nil {
		return nil, err
	}
	// The writer's context outlives this call; its timer bounds the open
	// and, later, each Write and Close.
	it, wctx := newIdleTimer(ctx, max(b.idle, b.timeout))
	if b.timeout >= 0 {
		it.start(b.timeout)
	}
	w, err := b.impl.Writer(wctx, path, append)
	late := it.stop()
	if err != nil {
		it.release()
		if late {
			return nil, b.timeoutErr("Writer", path, b.timeout)
		}
		return nil, b.wrap("Writer", path, err)
	}
	return &writer{b: b, path: path, impl: w, it: it}, nil
}

// StageWriter implements driver.Stager: it checks both paths and ctx,
// then wraps the implementation's staged writer as Writer wraps a writer.
// An implementation that does not stage gets UnsupportedMethodError.
func (b *Base) StageWriter(ctx context.Context, dst, state string, append bool) (driver.FileWriter, error) {
	if err := b.check(ctx, "StageWriter", dst, false); err != nil {
		return nil, err
	}
	if err := b.check(ctx, "StageWriter", state, false); err != nil {
		return nil, err
	}
	st, ok := b.impl.(driver.Stager)
	if !ok {
		return nil, driver.UnsupportedMethodError{Method: "StageWriter", Driver: b.name}
	}
	it, wctx := newIdleTimer(ctx, max(b.idle, b.timeout))
	if b.timeout >= 0 {
		it.start(b.timeout)
	}
	w, err := st.StageWriter(wctx, dst, state, append)
	late := it.stop()
	if err != nil {
		it.release()
		if late {
			return nil, b.timeoutErr("StageWriter", state, b.timeout)
		}
		return nil, b.wrap("StageWriter", state, err)
	}
	return &writer{b: b, path: state, impl: w, it: it}, nil
}

// stageLister returns the implementation as a driver.StageLister, or the
// error every StageLister method returns for a driver that does not stage.
func (b *Base) stageLister(op string) (driver.StageLister, error) {
	sl, ok := b.impl.(driver.StageLister)
	if !ok {
		return nil, driver.UnsupportedMethodError{Method: op, Driver: b.name}
	}
	return sl, nil
}

// StagedWrites implements driver.StageLister, forwarding to the
// implementation. Like Leftovers it has no deadline of its own.
func (b *Base) StagedWrites(ctx context.Context, dir string) ([]driver.StagedWrite, error) {
	if err := b.check(ctx, "StagedWrites", dir, true); err != nil {
		return nil, err
	}
	sl, err := b.stageLister("StagedWrites")
	if err != nil {
		return nil, err
	}
	ws, err := sl.StagedWrites(ctx, dir)
	return ws, b.wrap("StagedWrites", dir, err)
}

// StagedWriteID implements driver.StageLister, forwarding to the
// implementation.
func (b *Base) StagedWriteID(ctx context.Context, state string) (string, error) {
	if err := b.check(ctx, "StagedWriteID", state, false); err != nil {
		return "", err
	}
	sl, err := b.stageLister("StagedWriteID")
	if err != nil {
		return "", err
	}
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	id, err := sl.StagedWriteID(callCtx, state)
	return id, b.finish(ctx, callCtx, "StagedWriteID", state, err)
}

// AbortStagedWrite implements driver.StageLister, forwarding to the
// implementation.
func (b *Base) AbortStagedWrite(ctx context.Context, w driver.StagedWrite) error {
	if err := b.check(ctx, "AbortStagedWrite", w.Dst, false); err != nil {
		return err
	}
	sl, err := b.stageLister("AbortStagedWrite")
	if err != nil {
		return err
	}
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	return b.finish(ctx, callCtx, "AbortStagedWrite", w.Dst, sl.AbortStagedWrite(callCtx, w))
}

// Stat checks path and ctx, then calls the implementation.
func (b *Base) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	if err := b.check(ctx, "Stat", path, true); err != nil {
		return driver.FileInfo{}, err
	}
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	fi, err := b.impl.Stat(callCtx, path)
	if err != nil {
		return driver.FileInfo{}, b.finish(ctx, callCtx, "Stat", path, err)
	}
	return fi, nil
}

// List checks path and ctx, then calls the implementation.
func (b *Base) List(ctx context.Context, path string) ([]string, error) {
	if err := b.check(ctx, "List", path, true); err != nil {
		return nil, err
	}
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	names, err := b.impl.List(callCtx, path)
	if err != nil {
		return nil, b.finish(ctx, callCtx, "List", path, err)
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
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	return b.finish(ctx, callCtx, "Move", src, b.impl.Move(callCtx, src, dst))
}

// Delete checks path and ctx, then calls the implementation. Delete("/")
// empties the store.
func (b *Base) Delete(ctx context.Context, path string) error {
	if err := b.check(ctx, "Delete", path, true); err != nil {
		return err
	}
	callCtx, cancel := b.deadline(ctx)
	defer cancel()
	return b.finish(ctx, callCtx, "Delete", path, b.impl.Delete(callCtx, path))
}

// Walk checks path and ctx, then calls the implementation with a WalkFn that
// stops the walk once ctx is done. An error from fn is returned unchanged.
// The implementation must deliver each entry within the idle timeout; the
// time fn takes does not count.
func (b *Base) Walk(ctx context.Context, path string, fn driver.WalkFn) error {
	if err := b.check(ctx, "Walk", path, true); err != nil {
		return err
	}
	it, wctx := newIdleTimer(ctx, b.idle)
	defer it.release()
	var fnErr error
	it.start(b.idle)
	err := b.impl.Walk(wctx, path, func(fi driver.FileInfo) error {
		if it.stop() {
			return wctx.Err()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err := fn(fi)
		if err != nil && err != driver.ErrSkipDir {
			fnErr = err
		}
		it.start(b.idle)
		return err
	})
	late := it.stop()
	if err == nil {
		return nil
	}
	if fnErr != nil && errors.Is(err, fnErr) {
		return fnErr
	}
	if late {
		return b.timeoutErr("Walk", path, b.idle)
	}
	return b.wrap("Walk", path, err)
}

// Leftovers forwards to the implementation when it is a driver.Janitor;
// an implementation without internal areas has no leftovers. The call is
// not bounded by the call timeout: the areas may be large after a crash.
func (b *Base) Leftovers(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, &driver.Error{Driver: b.name, Op: "Leftovers", Path: "/", Err: err}
	}
	j, ok := b.impl.(driver.Janitor)
	if !ok {
		return nil, nil
	}
	left, err := j.Leftovers(ctx)
	if err != nil {
		return nil, b.wrap("Leftovers", "/", err)
	}
	return left, nil
}

// Clean forwards to the implementation when it is a driver.Janitor, and
// does nothing otherwise. Like Leftovers it has no deadline of its own.
func (b *Base) Clean(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return &driver.Error{Driver: b.name, Op: "Clean", Path: "/", Err: err}
	}
	j, ok := b.impl.(driver.Janitor)
	if !ok {
		return nil
	}
	return b.wrap("Clean", "/", j.Clean(ctx))
}

// writer states.
const (
	open = iota
	committed
	cancelled
	closed
)

// writer enforces the FileWriter state machine and the deadlines for the
// implementation.
type writer struct {
	b     *Base
	path  string
	impl  driver.FileWriter
	state int
	// it cancels the context the implementation's writer was opened with
	// when one of its calls runs out of time.
	it *idleTimer
}

// step bounds one call of the writer by d; done reports the call's error,
// replaced by the timeout error when the timer fired.
func (w *writer) step(d time.Duration) func(op string, err error) error {
	if d >= 0 {
		w.it.start(d)
	}
	return func(op string, err error) error {
		if w.it.stop() && err != nil {
			return w.b.timeoutErr(op, w.path, d)
		}
		return w.b.wrap(op, w.path, err)
	}
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
	done := w.step(w.b.idle)
	n, err := w.impl.Write(p)
	if err = done("Write", err); err != nil {
		return n, err
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
	done := w.step(w.b.idle)
	err := done("Close", w.impl.Close())
	w.it.release()
	return err
}

// Cancel does not check ctx: callers cancel on their error path, often
// because ctx was cancelled, and must still be able to clean up.
func (w *writer) Cancel(ctx context.Context) error {
	if w.state != open {
		return w.stateErr("Cancel")
	}
	w.state = cancelled
	callCtx, cancel := w.b.deadline(ctx)
	defer cancel()
	done := w.step(w.b.timeout)
	err := done("Cancel", w.impl.Cancel(callCtx))
	w.it.release()
	return err
}

func (w *writer) Commit(ctx context.Context) error {
	if w.state != open {
		return w.stateErr("Commit")
	}
	if err := ctx.Err(); err != nil {
		return &driver.Error{Driver: w.b.name, Op: "Commit", Path: w.path, Err: err}
	}
	callCtx, cancel := w.b.deadline(ctx)
	defer cancel()
	done := w.step(w.b.timeout)
	if err := w.impl.Commit(callCtx); err != nil {
		if timedOut(ctx, callCtx) {
			done("Commit", nil)
			return w.b.timeoutErr("Commit", w.path, w.b.timeout)
		}
		return done("Commit", err)
	}
	done("Commit", nil)
	w.state = committed
	return nil
}
