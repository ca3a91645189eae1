package faulty

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/driver/testsuite"
)

// Without rules the wrapper is transparent: the conformance suite passes.
func TestSuiteWithoutFaults(t *testing.T) {
	testsuite.Run(t, func(t *testing.T) driver.StorageDriver {
		return base.New(New(inmemory.New(), 1, nil))
	})
}

// Delays alone change timing, never results.
func TestSuiteWithDelays(t *testing.T) {
	testsuite.Run(t, func(t *testing.T) driver.StorageDriver {
		return base.New(New(inmemory.New(), 2, map[string]Rule{Any: {Delay: 0.2, DelayFor: time.Millisecond}}))
	})
}

func TestErrorsAreNotNotFound(t *testing.T) {
	ctx := context.Background()
	d := New(inmemory.New(), 3, map[string]Rule{Any: {Error: 1}})
	checks := map[string]error{}
	_, checks[GetContent] = d.GetContent(ctx, "/missing")
	_, checks[Stat] = d.Stat(ctx, "/missing")
	_, checks[List] = d.List(ctx, "/missing")
	_, checks[Reader] = d.Reader(ctx, "/missing", 0)
	checks[Delete] = d.Delete(ctx, "/missing")
	checks[Move] = d.Move(ctx, "/missing", "/b")
	checks[PutContent] = d.PutContent(ctx, "/a", []byte("x"))
	checks[Walk] = d.Walk(ctx, "/", func(driver.FileInfo) error { return nil })
	for m, err := range checks {
		var de *driver.Error
		if !errors.As(err, &de) || !errors.Is(err, ErrInjected) || driver.IsNotFound(err) {
			t.Errorf("%s: err = %v, want a *driver.Error wrapping ErrInjected", m, err)
		}
	}
	if got := d.Counts().Injected[KindError]; got != int64(len(checks)) {
		t.Errorf("counted %d errors, want %d", got, len(checks))
	}
	// Failed before the call: nothing was written.
	d.Disable()
	if _, err := d.Stat(ctx, "/a"); !driver.IsNotFound(err) {
		t.Errorf("PutContent that failed before the call left an object: %v", err)
	}
}

func TestErrorAfterDoesTheWork(t *testing.T) {
	ctx := context.Background()
	d := New(inmemory.New(), 4, map[string]Rule{PutContent: {ErrorAfter: 1}})
	if err := d.PutContent(ctx, "/a", []byte("x")); !errors.Is(err, ErrInjected) {
		t.Fatalf("PutContent: %v, want the injected error", err)
	}
	if b, err := d.GetContent(ctx, "/a"); err != nil || string(b) != "x" {
		t.Errorf("after a lost answer the object is %q, %v; want it written", b, err)
	}
	if got := d.Counts().Injected[KindErrorAfter]; got != 1 {
		t.Errorf("error-after count %d, want 1", got)
	}
}

func TestShortWrites(t *testing.T) {
	ctx := context.Background()
	inner := inmemory.New()
	d := New(inner, 5, map[string]Rule{Write: {Error: 1}})
	w, err := d.Writer(ctx, "/w", false)
	if err != nil {
		t.Fatal(err)
	}
	n, err := w.Write(bytes.Repeat([]byte("a"), 1000))
	if !errors.Is(err, ErrInjected) || n >= 1000 {
		t.Fatalf("Write = %d, %v; want a short write with the injected error", n, err)
	}
	if w.Size() != int64(n) {
		t.Errorf("Size %d after a short write of %d", w.Size(), n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := d.Counts().Injected[KindShortWrite]; got != 1 {
		t.Errorf("short-write count %d, want 1", got)
	}
}

// A stream with Short faults ends early or fails, and every byte it did
// return is right.
func TestShortStreams(t *testing.T) {
	ctx := context.Background()
	inner := inmemory.New()
	content := make([]byte, 300<<10)
	for i := range content {
		content[i] = byte(i * 7)
	}
	if err := inner.PutContent(ctx, "/blob", content); err != nil {
		t.Fatal(err)
	}
	d := New(inner, 6, map[string]Rule{Read: {Short: 1, ShortWithin: 200 << 10}})
	var eofs, errs int
	for i := 0; i < 40; i++ {
		rc, err := d.Reader(ctx, "/blob", 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, content[:len(got)]) {
			t.Fatalf("stream %d returned wrong bytes", i)
		}
		switch {
		case err == nil && len(got) < len(content):
			eofs++
		case errors.Is(err, ErrInjected):
			errs++
		default:
			t.Fatalf("stream %d: %d bytes, %v: want a cut stream", i, len(got), err)
		}
	}
	c := d.Counts()
	if int64(eofs) != c.Injected[KindEarlyEOF] || int64(errs) != c.Injected[KindStreamError] || eofs == 0 || errs == 0 {
		t.Errorf("saw %d early EOFs and %d stream errors; counted %v", eofs, errs, c.Injected)
	}
}

func TestDelayEndsWithContext(t *testing.T) {
	d := New(inmemory.New(), 7, map[string]Rule{Stat: {Delay: 1, DelayFor: time.Hour}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := d.Stat(ctx, "/a")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stat = %v, want the context's deadline", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("delay ignored the context")
	}
	if d.Counts().Injected[KindDelay] != 1 {
		t.Errorf("counts: %v", d.Counts())
	}
}

// The same seed draws the same faults.
func TestSeedReproduces(t *testing.T) {
	run := func() []bool {
		d := New(inmemory.New(), 42, map[string]Rule{Any: {Error: 0.5}})
		var out []bool
		for i := 0; i < 64; i++ {
			_, err := d.Stat(context.Background(), "/x")
			out = append(out, errors.Is(err, ErrInjected))
		}
		return out
	}
	a, b := run(), run()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("call %d differs between runs with the same seed", i)
		}
	}
}

func TestSkip(t *testing.T) {
	d := New(inmemory.New(), 8, map[string]Rule{Stat: {Error: 1, Skip: 2}})
	var got []bool
	for i := 0; i < 4; i++ {
		_, err := d.Stat(context.Background(), "/x")
		got = append(got, errors.Is(err, ErrInjected))
	}
	if want := []bool{false, false, true, true}; !slices.Equal(got, want) {
		t.Errorf("injected = %v, want %v", got, want)
	}
}
