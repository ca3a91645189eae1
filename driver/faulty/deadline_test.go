package faulty

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
	"github.com/regfs/regfs/driver/inmemory"
)

// The deadlines of driver/base, tested here on stalls the faulty driver
// makes: a stalled call fails with a *driver.Error wrapping
// context.DeadlineExceeded in about the deadline, instead of hanging.

const (
	testTimeout = 100 * time.Millisecond
	// stall is longer than any deadline: a call that waits for it hangs.
	stall = time.Hour
)

// stalled returns a base-wrapped faulty driver over an in-memory one
// holding /blob, where method always stalls.
func stalled(t *testing.T, method string) (*base.Base, *Driver, []byte) {
	t.Helper()
	inner := inmemory.New()
	content := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	if err := inner.PutContent(context.Background(), "/blob", content); err != nil {
		t.Fatal(err)
	}
	f := New(inner, 9, map[string]Rule{method: {Delay: 1, DelayFor: stall}})
	return base.NewWithOptions(f, base.Options{Timeout: testTimeout, IdleTimeout: testTimeout}), f, content
}

func wantTimeout(t *testing.T, what string, start time.Time, err error) {
	t.Helper()
	var de *driver.Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &de) {
		t.Errorf("%s: err = %v, want a *driver.Error wrapping context.DeadlineExceeded", what, err)
	}
	if driver.IsNotFound(err) {
		t.Errorf("%s: a timeout reads as not found", what)
	}
	if el := time.Since(start); el > 20*testTimeout {
		t.Errorf("%s: took %v with a deadline of %v", what, el, testTimeout)
	}
}

// bounded runs call and fails the test if it hangs (without deadlines it
// would wait for the hour-long stall).
func bounded(t *testing.T, call func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- call() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(50 * testTimeout):
		t.Fatalf("the stalled call did not return within %v", 50*testTimeout)
		return nil
	}
}

func TestStalledCallsTimeOut(t *testing.T) {
	ctx := context.Background()
	calls := map[string]func(d driver.StorageDriver) error{
		GetContent: func(d driver.StorageDriver) error { _, err := d.GetContent(ctx, "/blob"); return err },
		PutContent: func(d driver.StorageDriver) error { return d.PutContent(ctx, "/x", []byte("x")) },
		Stat:       func(d driver.StorageDriver) error { _, err := d.Stat(ctx, "/blob"); return err },
		List:       func(d driver.StorageDriver) error { _, err := d.List(ctx, "/"); return err },
		Move:       func(d driver.StorageDriver) error { return d.Move(ctx, "/blob", "/moved") },
		Delete:     func(d driver.StorageDriver) error { return d.Delete(ctx, "/blob") },
		Reader:     func(d driver.StorageDriver) error { _, err := d.Reader(ctx, "/blob", 0); return err },
		Writer:     func(d driver.StorageDriver) error { _, err := d.Writer(ctx, "/w", false); return err },
		Walk: func(d driver.StorageDriver) error {
			return d.Walk(ctx, "/", func(driver.FileInfo) error { return nil })
		},
		Read: func(d driver.StorageDriver) error {
			rc, err := d.Reader(ctx, "/blob", 0)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.ReadAll(rc)
			return err
		},
		Write: func(d driver.StorageDriver) error {
			w, err := d.Writer(ctx, "/w", false)
			if err != nil {
				return err
			}
			defer w.Close()
			_, err = w.Write([]byte("abc"))
			return err
		},
		Commit: func(d driver.StorageDriver) error {
			w, err := d.Writer(ctx, "/w", false)
			if err != nil {
				return err
			}
			defer w.Close()
			return w.Commit(ctx)
		},
		Close: func(d driver.StorageDriver) error {
			w, err := d.Writer(ctx, "/w", false)
			if err != nil {
				return err
			}
			return w.Close()
		},
	}
	for method, call := range calls {
		t.Run(method, func(t *testing.T) {
			d, f, _ := stalled(t, method)
			start := time.Now()
			wantTimeout(t, method, start, bounded(t, func() error { return call(d) }))
			if f.Counts().Injected[KindDelay] == 0 {
				t.Errorf("no delay was injected")
			}
		})
	}
}

// A stalled Read after good ones fails; the bytes before it were right.
func TestStreamStallsAfterData(t *testing.T) {
	d, f, content := stalled(t, "none")
	rc, err := d.Reader(context.Background(), "/blob", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(rc, buf); err != nil || !bytes.Equal(buf, content[:1000]) {
		t.Fatalf("first read: %v", err)
	}
	f.SetRule(Read, Rule{Delay: 1, DelayFor: stall})
	start := time.Now()
	err = bounded(t, func() error { _, err := rc.Read(buf); return err })
	wantTimeout(t, "Read", start, err)
	// The stream stays dead.
	f.Disable()
	if _, err := rc.Read(buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Read after a timeout: %v, want the timeout again", err)
	}
}

// Time between Reads, Writes and walk entries is the caller's and does not
// count against the idle deadline; slow but moving calls succeed.
func TestIdleTimeIsNotCounted(t *testing.T) {
	ctx := context.Background()
	d, f, content := stalled(t, "none")
	f.SetRule(Any, Rule{Delay: 1, DelayFor: testTimeout / 4})
	rc, err := d.Reader(ctx, "/blob", 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for i := 0; i < 3; i++ {
		if _, err := io.ReadFull(rc, buf); err != nil || !bytes.Equal(buf, content[i*100:(i+1)*100]) {
			t.Fatalf("read %d: %v", i, err)
		}
		time.Sleep(2 * testTimeout)
	}
	rc.Close()
	w, err := d.Writer(ctx, "/w", false)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := w.Write([]byte("abc")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		time.Sleep(2 * testTimeout)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = d.Walk(ctx, "/", func(driver.FileInfo) error {
		n++
		time.Sleep(2 * testTimeout)
		return nil
	})
	if err != nil || n != 2 {
		t.Errorf("slow walk: %d entries, %v", n, err)
	}
}

// A caller's own cancellation stays a cancellation, not a timeout.
func TestCallerCancelIsNotTimeout(t *testing.T) {
	d, _, _ := stalled(t, Stat)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, err := d.Stat(ctx, "/blob")
	if !errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stat cancelled by the caller: %v, want context.Canceled", err)
	}
}
