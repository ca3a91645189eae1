package filesystem

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/driver"
)

// Writes into a directory that is being deleted at the same time (a tag
// pushed while it is untagged) must either land or lose to the delete, and
// a delete must not fail because a write refilled the directory: neither
// may fail with a raw rename or unlink error.
func TestWritesRaceDeleteOfTheirDirectory(t *testing.T) {
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	const rounds = 400
	wg.Go(func() {
		for i := 0; i < rounds; i++ {
			if err := d.PutContent(ctx, "/tags/t/index/sha256/x/link", []byte("x")); err != nil {
				errc <- err
				return
			}
		}
	})
	wg.Go(func() {
		for i := 0; i < rounds/4; i++ {
			if err := d.PutContent(ctx, "/tags/t/src", []byte("y")); err != nil {
				errc <- err
				return
			}
			if err := d.Move(ctx, "/tags/t/src", "/tags/t/current/link"); err != nil && !driver.IsNotFound(err) {
				errc <- err
				return
			}
			w, err := d.Writer(ctx, "/tags/t/w/data", false)
			if err != nil {
				errc <- err
				return
			}
			w.Close()
		}
	})
	wg.Go(func() {
		for i := 0; i < rounds/4; i++ {
			// A pause between deletes, as between two untags: a write
			// retries a bounded number of times and must get through.
			time.Sleep(5 * time.Millisecond)
			if err := d.Delete(ctx, "/tags/t"); err != nil && !driver.IsNotFound(err) {
				errc <- err
				return
			}
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		var de *driver.Error
		t.Errorf("racing a delete: %v (driver error: %v)", err, errors.As(err, &de))
	}
}

// A Clean running in a second driver on the same root (another regfs, or
// fsck --repair) while the first writes must take none of the writes in
// progress: their staging entries are locked.
func TestCleanRacesWrites(t *testing.T) {
	root := t.TempDir()
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	j := other.(driver.Janitor)
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := j.Clean(ctx); err != nil {
				t.Errorf("Clean: %v", err)
				return
			}
			// A janitor in a loop with no pause at all can take a
			// write's staging entry between its creation and its lock
			// every time, which the write survives (it is never lost,
			// see below) but retries only so often.
			time.Sleep(200 * time.Microsecond)
		}
	})
	for i := range 300 {
		p := fmt.Sprintf("/tags/t%d/current/link", i)
		if err := d.PutContent(ctx, p, []byte(p)); err != nil {
			t.Errorf("PutContent(%s) beside a Clean: %v", p, err)
			break
		}
		w, err := d.Writer(ctx, fmt.Sprintf("/uploads/u%d/data", i), false)
		if err != nil {
			t.Errorf("Writer beside a Clean: %v", err)
			break
		}
		w.Write([]byte("data"))
		w.Close()
		if err := d.Delete(ctx, fmt.Sprintf("/uploads/u%d", i)); err != nil {
			t.Errorf("Delete beside a Clean: %v", err)
			break
		}
	}
	close(stop)
	wg.Wait()
	for i := range 300 {
		p := fmt.Sprintf("/tags/t%d/current/link", i)
		if b, err := d.GetContent(ctx, p); err != nil || string(b) != p {
			t.Errorf("GetContent(%s) = %q, %v", p, b, err)
		}
	}
}
