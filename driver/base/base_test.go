package base

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"testing"

	"github.com/regfs/regfs/driver"
)

// stub is an implementation whose every method returns err and records what
// reached it.
type stub struct {
	driver.StorageDriver // nil: a method not overridden panics
	err                  error
	calls                []string
	walkErr              func(fnErr error) error
	w                    *stubWriter
}

func (s *stub) Name() string { return "stub" }

func (s *stub) Stat(_ context.Context, p string) (driver.FileInfo, error) {
	s.calls = append(s.calls, "Stat "+p)
	return driver.FileInfo{}, s.err
}

func (s *stub) Reader(_ context.Context, p string, off int64) (io.ReadCloser, error) {
	s.calls = append(s.calls, fmt.Sprintf("Reader %s %d", p, off))
	return nil, s.err
}

func (s *stub) Walk(_ context.Context, p string, fn driver.WalkFn) error {
	return s.walkErr(fn(driver.FileInfo{Path: p + "/x"}))
}

func (s *stub) Writer(context.Context, string, bool) (driver.FileWriter, error) {
	s.w = &stubWriter{}
	return s.w, nil
}

type stubWriter struct{ closes, cancels, commits int }

func (w *stubWriter) Write(p []byte) (int, error)  { return len(p), nil }
func (w *stubWriter) Size() int64                  { return 0 }
func (w *stubWriter) Close() error                 { w.closes++; return nil }
func (w *stubWriter) Cancel(context.Context) error { w.cancels++; return nil }
func (w *stubWriter) Commit(context.Context) error { w.commits++; return nil }

func TestErrorsNameTheDriver(t *testing.T) {
	ctx := context.Background()
	cause := errors.New("disk on fire")
	s := &stub{err: cause}
	d := New(s)

	_, err := d.Stat(ctx, "/a")
	var de *driver.Error
	if !errors.As(err, &de) || de.Driver != "stub" || de.Op != "Stat" || de.Path != "/a" || !errors.Is(err, cause) {
		t.Errorf("bare error came back as %#v", err)
	}

	s.err = driver.PathNotFoundError{Path: "/a"}
	_, err = d.Stat(ctx, "/a")
	if err != (driver.PathNotFoundError{Path: "/a", Driver: "stub"}) {
		t.Errorf("PathNotFoundError without driver came back as %#v", err)
	}

	s.err = &driver.Error{Op: "open", Path: "/a", Err: cause}
	_, err = d.Stat(ctx, "/a")
	if !errors.As(err, &de) || de.Driver != "stub" || de.Op != "open" {
		t.Errorf("*driver.Error without driver came back as %#v", err)
	}
	if s.err.(*driver.Error).Driver != "" {
		t.Error("the implementation's error value was modified")
	}
}

func TestChecksStopBadCalls(t *testing.T) {
	s := &stub{}
	d := New(s)
	ctx := context.Background()

	_, err := d.Reader(ctx, "/a", -1)
	if !errors.As(err, new(driver.InvalidOffsetError)) {
		t.Errorf("negative offset: %v", err)
	}
	_, err = d.Stat(ctx, "/a/")
	if !errors.As(err, new(driver.InvalidPathError)) {
		t.Errorf("trailing slash: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err = d.Stat(cancelled, "/a"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	if len(s.calls) != 0 {
		t.Errorf("bad calls reached the implementation: %q", s.calls)
	}
	if _, err := d.Stat(ctx, "/"); err != nil || len(s.calls) != 1 {
		t.Errorf(`Stat("/") = %v, calls %q`, err, s.calls)
	}
}

func TestWalkReturnsFnErrorUnchanged(t *testing.T) {
	fnErr := errors.New("from fn")
	for name, wrap := range map[string]func(error) error{
		"as is":   func(err error) error { return err },
		"wrapped": func(err error) error { return fmt.Errorf("walking: %w", err) },
	} {
		d := New(&stub{walkErr: wrap})
		err := d.Walk(context.Background(), "/a", func(driver.FileInfo) error { return fnErr })
		if err != fnErr {
			t.Errorf("%s: Walk = %#v, want the WalkFn's error itself", name, err)
		}
	}
	// An error of the implementation's own is wrapped.
	cause := errors.New("backend")
	d := New(&stub{walkErr: func(error) error { return cause }})
	err := d.Walk(context.Background(), "/a", func(driver.FileInfo) error { return nil })
	var de *driver.Error
	if !errors.As(err, &de) || de.Driver != "stub" || !errors.Is(err, cause) {
		t.Errorf("Walk = %#v, want *driver.Error wrapping the cause", err)
	}
}

func TestWriterStateReachesImplementationOnce(t *testing.T) {
	ctx := context.Background()
	s := &stub{}
	d := New(s)

	w, _ := d.Writer(ctx, "/a", false)
	w.Commit(ctx)
	w.Close()
	w.Close()
	if *s.w != (stubWriter{closes: 1, commits: 1}) {
		t.Errorf("commit+close+close reached the implementation as %+v", *s.w)
	}
	if err := w.Commit(ctx); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Commit after Close = %v", err)
	}

	w, _ = d.Writer(ctx, "/a", false)
	w.Cancel(ctx)
	w.Close()
	if _, err := w.Write([]byte("x")); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Write after Cancel = %v", err)
	}
	if *s.w != (stubWriter{cancels: 1}) {
		t.Errorf("cancel+close reached the implementation as %+v", *s.w)
	}
}

// janitorImpl is an implementation with internal areas.
type janitorImpl struct {
	driver.StorageDriver
	left    []string
	cleaned bool
}

func (j *janitorImpl) Leftovers(context.Context) ([]string, error) { return j.left, nil }
func (j *janitorImpl) Clean(context.Context) error                 { j.cleaned = true; return nil }

// TestJanitorForwarded: Base forwards driver.Janitor to an implementation
// that has it and answers "none" for one that has not.
func TestJanitorForwarded(t *testing.T) {
	ctx := context.Background()
	impl := &janitorImpl{StorageDriver: &stub{}, left: []string{"/x/.#trash/1"}}
	var d driver.StorageDriver = New(impl)
	j := d.(driver.Janitor)
	if left, err := j.Leftovers(ctx); err != nil || len(left) != 1 || left[0] != "/x/.#trash/1" {
		t.Errorf("Leftovers = %q, %v; want the implementation's", left, err)
	}
	if err := j.Clean(ctx); err != nil || !impl.cleaned {
		t.Errorf("Clean = %v, forwarded %v", err, impl.cleaned)
	}
	plain := New(&stub{})
	if left, err := plain.Leftovers(ctx); err != nil || left != nil {
		t.Errorf("Leftovers of a driver without internal areas = %q, %v", left, err)
	}
	if err := plain.Clean(ctx); err != nil {
		t.Errorf("Clean of a driver without internal areas = %v", err)
	}
}
