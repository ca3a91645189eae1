package s3

import (
	"context"
	"io"
	"math"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
)

// gated holds every UploadPart request until the test opens the gate, and
// counts those held; it can fail one UploadPart, by its rank, with a 403
// the SDK does not retry. Other requests pass.
type gated struct {
	mu       sync.Mutex
	cond     sync.Cond
	open     bool
	inFlight int // UploadParts sent and not answered
	most     int // the most in flight at once
	parts    int // UploadParts seen
	failRank int // the UploadPart to fail (1 for the first); 0 for none
}

func newGated() *gated {
	g := &gated{open: true}
	g.cond.L = &g.mu
	return g
}

func (g *gated) RoundTrip(req *http.Request) (*http.Response, error) {
	if opOf(req) != "UploadPart" {
		return http.DefaultTransport.RoundTrip(req)
	}
	g.mu.Lock()
	g.parts++
	fail := g.parts == g.failRank
	g.inFlight++
	g.most = max(g.most, g.inFlight)
	g.cond.Broadcast()
	for !g.open {
		g.cond.Wait()
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inFlight--
		g.mu.Unlock()
	}()
	if fail {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
		body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>failed by the test</Message></Error>`
		return &http.Response{
			StatusCode: http.StatusForbidden, Status: "403 Forbidden", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/xml"}},
			Body:   io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
			Request: req,
		}, nil
	}
	return http.DefaultTransport.RoundTrip(req)
}

// setOpen opens or closes the gate.
func (g *gated) setOpen(open bool) {
	g.mu.Lock()
	g.open = open
	g.cond.Broadcast()
	g.mu.Unlock()
}

// waitInFlight waits until n UploadParts are held, or fails after a minute.
func (g *gated) waitInFlight(t *testing.T, n int) {
	t.Helper()
	deadline := time.AfterFunc(time.Minute, func() {
		g.mu.Lock()
		g.inFlight = -1 << 30 // wakes the loop below, which fails
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer deadline.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.inFlight != n {
		if g.inFlight < 0 {
			t.Fatalf("%d UploadParts never were in flight at once", n)
		}
		g.cond.Wait()
	}
}

// gatedDriver is smallParts (5 MiB parts) with requests through g.
func gatedDriver(t *testing.T, g *gated) driver.StorageDriver {
	d := newTestDriver(t, func(d *impl) { d.writePartMin, d.writePartMax = 5<<20, 5<<20 })
	p := testParams
	p.HTTPClient = &http.Client{Transport: g}
	client, err := newClient(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	d.client = client
	return base.New(d)
}

// TestWriterPartsInFlight: a writer sends its full parts in the background
// while Write takes the next bytes, partsInFlight at most: with the server
// holding every part, Write returns after handing over four parts, and the
// one that would start a fifth waits until a part is answered. The object
// is then whole and in order.
func TestWriterPartsInFlight(t *testing.T) {
	g := newGated()
	d := gatedDriver(t, g)
	ctx := t.Context()
	const parts = 7
	data := randomBytes(parts*5<<20+123, 11)
	w, err := d.Writer(ctx, "/obj", false)
	if err != nil {
		t.Fatal(err)
	}
	g.setOpen(false)
	wrote := make(chan int, parts+1)
	go func() {
		defer close(wrote)
		for off := 0; off < len(data); {
			n := min(len(data)-off, 5<<20)
			m, err := w.Write(data[off : off+n])
			if err != nil || m != n {
				t.Errorf("Write = %d, %v; want %d", m, err, n)
				return
			}
			off += n
			wrote <- off
		}
	}()
	g.waitInFlight(t, partsInFlight)
	// Parts 1-4 are held; the writer filled the fifth and, at the next
	// byte, waits for a free send.
	for range partsInFlight + 1 {
		<-wrote
	}
	select {
	case off := <-wrote:
		t.Errorf("Write returned at %d bytes with %d parts held and a fifth full", off, partsInFlight)
	case <-time.After(200 * time.Millisecond):
	}
	g.setOpen(true)
	for range wrote {
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	most := g.most
	g.mu.Unlock()
	if most != partsInFlight {
		t.Errorf("at most %d parts were in flight, want %d", most, partsInFlight)
	}
	wantContent(t, d, "/obj", data)
	if err := d.Delete(ctx, "/obj"); err != nil {
		t.Fatal(err)
	}
}

// TestWriterPartFailureKeepsBytes: a part that fails in the background is
// reported once, by the next Write, which takes none of its bytes; the bytes
// taken before, the failed part's included, are still the writer's: the
// writer sends the part again and Close makes the whole object. Size is
// what Write took all along.
func TestWriterPartFailureKeepsBytes(t *testing.T) {
	for _, rank := range []int{1, 2, 4} {
		g := newGated()
		g.failRank = rank
		d := gatedDriver(t, g)
		ctx := t.Context()
		data := randomBytes(6*5<<20+7, uint64(12+rank))
		w, err := d.Writer(ctx, "/obj", false)
		if err != nil {
			t.Fatal(err)
		}
		failures := 0
		for off := 0; off < len(data); {
			n := min(len(data)-off, 1<<20+3)
			m, err := w.Write(data[off : off+n])
			off += m
			if w.Size() != int64(off) {
				t.Fatalf("part %d failing: Size() = %d after %d bytes taken", rank, w.Size(), off)
			}
			if err != nil {
				failures++
				if m != 0 {
					t.Errorf("part %d failing: the Write that reported it took %d bytes", rank, m)
				}
			}
		}
		// The failure is returned once, by the first Write after the
		// part's answer, if there is one before Close.
		if failures > 1 {
			t.Errorf("part %d failing: %d Writes failed, want at most 1", rank, failures)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("part %d failing: Close: %v", rank, err)
		}
		wantContent(t, d, "/obj", data)
		g.mu.Lock()
		if g.parts != 8 { // 7 parts and the one sent again
			t.Errorf("part %d failing: %d UploadParts, want 8", rank, g.parts)
		}
		g.mu.Unlock()
		if err := d.Delete(ctx, "/obj"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriterCancelWaitsForParts: Cancel with parts still being sent aborts
// the upload only once they are answered, so that none lands after the
// abort (newTestDriver's cleanup fails the test if an upload is left).
func TestWriterCancelWaitsForParts(t *testing.T) {
	g := newGated()
	d := gatedDriver(t, g)
	ctx := t.Context()
	w, err := d.Writer(ctx, "/obj", false)
	if err != nil {
		t.Fatal(err)
	}
	g.setOpen(false)
	data := randomBytes(3*5<<20+1, 20)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	g.waitInFlight(t, 3)
	cancelled := make(chan error)
	go func() { cancelled <- w.Cancel(ctx) }()
	select {
	case err := <-cancelled:
		t.Fatalf("Cancel returned with parts in flight: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	g.setOpen(true)
	if err := <-cancelled; err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := d.Stat(ctx, "/obj"); !driver.IsNotFound(err) {
		t.Errorf("Stat after Cancel = %v, want not found", err)
	}
}

// TestWriterChargesMemoryLimit: while a writer holds part buffers beyond
// its first, the Go memory limit is raised by their size, and it is back
// where it was once the writer is closed or cancelled; without a limit
// nothing changes.
func TestWriterChargesMemoryLimit(t *testing.T) {
	const base = 1 << 40
	old := debug.SetMemoryLimit(base)
	defer debug.SetMemoryLimit(old)
	g := newGated()
	d := gatedDriver(t, g)
	ctx := t.Context()
	for _, cancel := range []bool{false, true} {
		w, err := d.Writer(ctx, "/obj", false)
		if err != nil {
			t.Fatal(err)
		}
		g.setOpen(false)
		if _, err := w.Write(randomBytes(3*5<<20+1, 21)); err != nil {
			t.Fatal(err)
		}
		g.waitInFlight(t, 3)
		// Three parts held by the server and a fourth filling: three
		// buffers beyond the first.
		if got := debug.SetMemoryLimit(-1) - base; got != 3*5<<20 {
			t.Errorf("memory limit raised by %d with four buffers, want %d", got, 3*5<<20)
		}
		g.setOpen(true)
		if cancel {
			err = w.Cancel(ctx)
			w.Close()
		} else {
			err = w.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := debug.SetMemoryLimit(-1); got != base {
			t.Errorf("memory limit %d after the writer is done (cancelled: %v), want %d", got, cancel, base)
		}
	}
	if err := d.Delete(ctx, "/obj"); err != nil && !driver.IsNotFound(err) {
		t.Fatal(err)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	w, err := d.Writer(ctx, "/obj", false)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, randomBytes(3*5<<20+1, 22))
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit %d without a limit set, want none", got)
	}
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
}
