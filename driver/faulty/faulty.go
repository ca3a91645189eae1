// Package faulty wraps a storage driver and injects failures into its calls,
// so that tests can show what the layers above do when the backend
// misbehaves: calls that fail (before or after doing their work), calls that
// stall, and read streams that end early or break in the middle.
//
// Faults are drawn from a seeded random source at a rate chosen per method,
// and counted by kind, so a test can both reproduce a run and check that the
// faults it meant to exercise really happened. Rules can be changed while
// the driver is in use (for example switched off to inspect the storage
// after a run).
//
// An injected failure is a *driver.Error wrapping ErrInjected, never a
// driver.PathNotFoundError: a backend failure must not be mistaken for a
// missing object. Delays honour the call's context (and, for streams and
// writers, the context they were opened with), so a deadline set above the
// driver ends them.
package faulty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regfs/regfs/driver"
)

// ErrInjected is the cause of every failure this package injects.
var ErrInjected = errors.New("faulty: injected fault")

// Method names that rules are keyed by. The StorageDriver methods use their
// own names; Read is a Read of a stream returned by Reader, and Write,
// Commit, Close and Cancel are the methods of a FileWriter.
const (
	GetContent = "GetContent"
	PutContent = "PutContent"
	Reader     = "Reader"
	Writer     = "Writer"
	Stat       = "Stat"
	List       = "List"
	Move       = "Move"
	Delete     = "Delete"
	Walk       = "Walk"
	Read       = "Read"
	Write      = "Write"
	Commit     = "Commit"
	Close      = "Close"
	Cancel     = "Cancel"
	// Any is the rule for every method that has no rule of its own.
	Any = "*"
)

// Rule says which faults to inject into one method and how often. Rates are
// probabilities per call, from 0 (never) to 1 (always); at most one of
// Error, ErrorAfter and Delay is injected into a call.
type Rule struct {
	// Error fails the call before it reaches the wrapped driver, so it has
	// no effect. For Write, a random prefix of the bytes is written first
	// (a short write), as a backend that fails part way would.
	Error float64
	// ErrorAfter runs the call and then reports a failure, as when the
	// answer of a backend that did the work is lost. Only for methods that
	// change storage (PutContent, Move, Delete, Commit); elsewhere it acts
	// like Error.
	ErrorAfter float64
	// Delay stalls the call for DelayFor (or until its context is done,
	// which fails it) before running it.
	Delay    float64
	DelayFor time.Duration
	// Short applies to Read only: it picks a point in the stream, up to
	// ShortWithin bytes (1 MiB if 0) from where the stream was opened, at
	// which the stream ends early with io.EOF (half the time) or fails with
	// an injected error (the other half). Reads before that point return
	// at most half of what was asked, exercising callers' handling of
	// short reads.
	Short       float64
	ShortWithin int64
	// Skip passes the next Skip calls through untouched before the rule
	// starts injecting (counted from SetRule), so a test can let the
	// first steps of an operation succeed and fail a later one.
	Skip int
}

// Kind is a kind of injected fault, for Counts.
type Kind int

// The kinds of fault counted.
const (
	// KindError is a call failed before it reached the wrapped driver.
	KindError Kind = iota
	// KindErrorAfter is a call that did its work and then reported failure.
	KindErrorAfter
	// KindShortWrite is a Write that wrote part of its bytes and failed.
	KindShortWrite
	// KindDelay is a stalled call.
	KindDelay
	// KindEarlyEOF is a stream that ended before its object did.
	KindEarlyEOF
	// KindStreamError is a stream that failed in the middle.
	KindStreamError
	numKinds
)

var kindNames = [numKinds]string{"error", "error-after", "short-write", "delay", "early-eof", "stream-error"}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Counts are the faults injected so far, by kind, and the calls seen.
type Counts struct {
	Injected map[Kind]int64
	// Calls counts the calls that went through the rules, by method.
	Calls map[string]int64
}

// Total is the number of faults injected, of every kind.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c.Injected {
		n += v
	}
	return n
}

// Driver is a driver.StorageDriver that injects faults into the calls it
// passes to the wrapped driver. It is safe for concurrent use.
type Driver struct {
	inner driver.StorageDriver

	mu sync.Mutex
	// rng draws every fault; guarded by mu.
	rng *rand.Rand
	// rules by method name; guarded by mu.
	rules map[string]Rule
	// calls by method name; guarded by mu.
	calls map[string]int64

	injected [numKinds]atomic.Int64
}

var _ driver.StorageDriver = (*Driver)(nil)

// New wraps inner. The faults are drawn from a random source seeded with
// seed, so a single-threaded run is reproducible. rules may be nil (no
// faults until SetRule).
func New(inner driver.StorageDriver, seed uint64, rules map[string]Rule) *Driver {
	d := &Driver{
		inner: inner,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		rules: make(map[string]Rule),
		calls: make(map[string]int64),
	}
	for m, r := range rules {
		d.rules[m] = r
	}
	return d
}

// SetRule replaces the rule for method (or Any).
func (d *Driver) SetRule(method string, r Rule) {
	d.mu.Lock()
	d.rules[method] = r
	d.mu.Unlock()
}

// Disable removes every rule: from now on calls pass through unchanged
// (streams and writers opened before keep the faults already drawn for
// them).
func (d *Driver) Disable() {
	d.mu.Lock()
	clear(d.rules)
	d.mu.Unlock()
}

// Counts returns what was injected so far.
func (d *Driver) Counts() Counts {
	c := Counts{Injected: make(map[Kind]int64), Calls: make(map[string]int64)}
	for k := range d.injected {
		if n := d.injected[k].Load(); n > 0 {
			c.Injected[Kind(k)] = n
		}
	}
	d.mu.Lock()
	for m, n := range d.calls {
		c.Calls[m] = n
	}
	d.mu.Unlock()
	return c
}

// fault is what was drawn for one call.
type fault struct {
	err, errAfter bool
	delay         time.Duration
	// cut is where a stream ends (-1: never); eof says whether it ends
	// with io.EOF or with an error.
	cut int64
	eof bool
	// frac is the fraction of p a short Write writes, in [0, 1).
	frac float64
}

// draw decides the faults of one call of method.
func (d *Driver) draw(method string) fault {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[method]++
	f := fault{cut: -1}
	key := method
	r, ok := d.rules[key]
	if !ok {
		key = Any
		r, ok = d.rules[key]
	}
	if !ok {
		return f
	}
	if r.Skip > 0 {
		r.Skip--
		d.rules[key] = r
		return f
	}
	switch x := d.rng.Float64(); {
	case x < r.Error:
		f.err = true
		f.frac = d.rng.Float64()
	case x < r.Error+r.ErrorAfter:
		f.errAfter = true
	case x < r.Error+r.ErrorAfter+r.Delay:
		f.delay = r.DelayFor
	}
	if method == Read && d.rng.Float64() < r.Short {
		within := r.ShortWithin
		if within <= 0 {
			within = 1 << 20
		}
		f.cut = d.rng.Int64N(within)
		f.eof = d.rng.IntN(2) == 0
	}
	return f
}

func (d *Driver) count(k Kind) { d.injected[k].Add(1) }

func (d *Driver) injectedErr(op, path string) error {
	return &driver.Error{Driver: d.inner.Name(), Op: op, Path: path, Err: ErrInjected}
}

// before injects the faults that happen before a call: an error or a delay.
func (d *Driver) before(ctx context.Context, f fault, op, path string) error {
	if f.err {
		d.count(KindError)
		return d.injectedErr(op, path)
	}
	if f.delay > 0 {
		d.count(KindDelay)
		return sleep(ctx, f.delay, op, path, d.inner.Name())
	}
	return nil
}

// after injects a failure after a call that succeeded.
func (d *Driver) after(f fault, op, path string, err error) error {
	if err == nil && f.errAfter {
		d.count(KindErrorAfter)
		return d.injectedErr(op, path)
	}
	return err
}

// sleep waits for dur or until ctx is done, which fails the call.
func sleep(ctx context.Context, dur time.Duration, op, path, name string) error {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return &driver.Error{Driver: name, Op: op, Path: path, Err: context.Cause(ctx)}
	}
}

// Name returns the wrapped driver's name.
func (d *Driver) Name() string { return d.inner.Name() }

// GetContent implements driver.StorageDriver.
func (d *Driver) GetContent(ctx context.Context, path string) ([]byte, error) {
	f := d.draw(GetContent)
	if f.errAfter {
		f.err = true
	}
	if err := d.before(ctx, f, GetContent, path); err != nil {
		return nil, err
	}
	return d.inner.GetContent(ctx, path)
}

// PutContent implements driver.StorageDriver.
func (d *Driver) PutContent(ctx context.Context, path string, content []byte) error {
	f := d.draw(PutContent)
	if err := d.before(ctx, f, PutContent, path); err != nil {
		return err
	}
	return d.after(f, PutContent, path, d.inner.PutContent(ctx, path, content))
}

// Reader implements driver.StorageDriver. The stream it returns has its
// own faults, drawn at each Read under the Read rule.
func (d *Driver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	f := d.draw(Reader)
	if f.errAfter {
		f.err = true
	}
	if err := d.before(ctx, f, Reader, path); err != nil {
		return nil, err
	}
	rc, err := d.inner.Reader(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	return &stream{d: d, ctx: ctx, path: path, rc: rc, cut: -1}, nil
}

// stream injects Read faults. The first Read draws where (if anywhere)
// the stream ends early.
type stream struct {
	d    *Driver
	ctx  context.Context
	path string
	rc   io.ReadCloser
	// pos is the number of bytes returned so far.
	pos   int64
	drawn bool
	cut   int64
	eof   bool
	// broken is set once the stream was cut: every later Read repeats it.
	broken error
}

func (s *stream) Read(p []byte) (int, error) {
	if s.broken != nil {
		return 0, s.broken
	}
	f := s.d.draw(Read)
	if !s.drawn {
		s.drawn = true
		s.cut, s.eof = f.cut, f.eof
	}
	if f.errAfter {
		f.err = true
	}
	if err := s.d.before(s.ctx, f, Read, s.path); err != nil {
		s.broken = err
		return 0, err
	}
	if s.cut >= 0 {
		left := s.cut - s.pos
		if left <= 0 {
			if s.eof {
				s.d.count(KindEarlyEOF)
				s.broken = io.EOF
			} else {
				s.d.count(KindStreamError)
				s.broken = s.d.injectedErr(Read, s.path)
			}
			return 0, s.broken
		}
		// Short reads before the cut: at most half of p, never past it.
		n := max(len(p)/2, 1)
		p = p[:min(int64(n), left, int64(len(p)))]
	}
	n, err := s.rc.Read(p)
	s.pos += int64(n)
	return n, err
}

func (s *stream) Close() error { return s.rc.Close() }

// Writer implements driver.StorageDriver.
func (d *Driver) Writer(ctx context.Context, path string, append bool) (driver.FileWriter, error) {
	f := d.draw(Writer)
	if f.errAfter {
		f.err = true
	}
	if err := d.before(ctx, f, Writer, path); err != nil {
		return nil, err
	}
	w, err := d.inner.Writer(ctx, path, append)
	if err != nil {
		return nil, err
	}
	return &writer{d: d, ctx: ctx, path: path, w: w}, nil
}

// writer injects faults into a FileWriter's methods.
type writer struct {
	d    *Driver
	ctx  context.Context
	path string
	w    driver.FileWriter
}

func (w *writer) Write(p []byte) (int, error) {
	f := w.d.draw(Write)
	if f.err {
		// A short write: part of p reaches the backend, then the failure.
		n, err := w.w.Write(p[:int(f.frac*float64(len(p)))])
		if err != nil {
			return n, err
		}
		w.d.count(KindShortWrite)
		return n, w.d.injectedErr(Write, w.path)
	}
	if f.delay > 0 {
		w.d.count(KindDelay)
		if err := sleep(w.ctx, f.delay, Write, w.path, w.d.inner.Name()); err != nil {
			return 0, err
		}
	}
	n, err := w.w.Write(p)
	if err == nil && f.errAfter {
		w.d.count(KindErrorAfter)
		return n, w.d.injectedErr(Write, w.path)
	}
	return n, err
}

func (w *writer) Size() int64 { return w.w.Size() }

// Close fails after closing the wrapped writer when a fault is drawn, so
// that the writer's resources are still released.
func (w *writer) Close() error {
	f := w.d.draw(Close)
	if f.delay > 0 {
		w.d.count(KindDelay)
		if err := sleep(w.ctx, f.delay, Close, w.path, w.d.inner.Name()); err != nil {
			_ = w.w.Close()
			return err
		}
	}
	err := w.w.Close()
	if err == nil && (f.err || f.errAfter) {
		w.d.count(KindErrorAfter)
		return w.d.injectedErr(Close, w.path)
	}
	return err
}

func (w *writer) Cancel(ctx context.Context) error {
	f := w.d.draw(Cancel)
	if err := w.d.before(ctx, f, Cancel, w.path); err != nil {
		return err
	}
	return w.d.after(f, Cancel, w.path, w.w.Cancel(ctx))
}

func (w *writer) Commit(ctx context.Context) error {
	f := w.d.draw(Commit)
	if err := w.d.before(ctx, f, Commit, w.path); err != nil {
		return err
	}
	return w.d.after(f, Commit, w.path, w.w.Commit(ctx))
}

// Stat implements driver.StorageDriver.
func (d *Driver) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	f := d.draw(Stat)
	if f.errAfter {
		f.err = true
	}
	if err := d.before(ctx, f, Stat, path); err != nil {
		return driver.FileInfo{}, err
	}
	return d.inner.Stat(ctx, path)
}

// List implements driver.StorageDriver.
func (d *Driver) List(ctx context.Context, path string) ([]string, error) {
	f := d.draw(List)
	if f.errAfter {
		f.err = true
	}
	if err := d.before(ctx, f, List, path); err != nil {
		return nil, err
	}
	return d.inner.List(ctx, path)
}

// Move implements driver.StorageDriver.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	f := d.draw(Move)
	if err := d.before(ctx, f, Move, src); err != nil {
		return err
	}
	return d.after(f, Move, src, d.inner.Move(ctx, src, dst))
}

// Delete implements driver.StorageDriver.
func (d *Driver) Delete(ctx context.Context, path string) error {
	f := d.draw(Delete)
	if err := d.before(ctx, f, Delete, path); err != nil {
		return err
	}
	return d.after(f, Delete, path, d.inner.Delete(ctx, path))
}

// Walk implements driver.StorageDriver. A fault fails or delays the walk
// before its first entry.
func (d *Driver) Walk(ctx context.Context, path string, fn driver.WalkFn) error {
	f := d.draw(Walk)
	if f.errAfter {
		f.err = true
	}
	if err := d.before(ctx, f, Walk, path); err != nil {
		return err
	}
	return d.inner.Walk(ctx, path, fn)
}

// Leftovers implements driver.Janitor by forwarding, without faults, so
// that a check run over a faulty driver sees the inner driver's leftovers.
func (d *Driver) Leftovers(ctx context.Context) ([]string, error) {
	if j, ok := d.inner.(driver.Janitor); ok {
		return j.Leftovers(ctx)
	}
	return nil, nil
}

// Clean implements driver.Janitor by forwarding, without faults.
func (d *Driver) Clean(ctx context.Context) error {
	if j, ok := d.inner.(driver.Janitor); ok {
		return j.Clean(ctx)
	}
	return nil
}
