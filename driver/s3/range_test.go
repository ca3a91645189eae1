package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/regfs/regfs/driver"
)

// rangeRecorder is an HTTP transport that counts the connections it dials
// and records the Range header of every GET.
type rangeRecorder struct {
	t      *http.Transport
	dials  atomic.Int64
	mu     sync.Mutex
	ranges []string
}

func newRangeRecorder() *rangeRecorder {
	rr := &rangeRecorder{}
	var d net.Dialer
	rr.t = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			rr.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 4,
	}
	return rr
}

func (rr *rangeRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet {
		rr.mu.Lock()
		rr.ranges = append(rr.ranges, req.Header.Get("Range"))
		rr.mu.Unlock()
	}
	return rr.t.RoundTrip(req)
}

func (rr *rangeRecorder) takeRanges() []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	r := rr.ranges
	rr.ranges = nil
	return r
}

// TestReaderReadLength checks that a Reader opened under
// driver.WithReadLength asks for that range only, ends after it, and
// leaves its connection to the next GET; and that without it the GET runs
// to the end of the object, as before.
func TestReaderReadLength(t *testing.T) {
	requireServer(t)
	rr := newRangeRecorder()
	p := testParams
	p.RootDirectory = "t-" + strings.ToLower(rand.Text())
	p.HTTPClient = &http.Client{Transport: rr}
	d, err := newImpl(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.t.CloseIdleConnections()
	t.Cleanup(func() { checkEmpty(t, d) })
	ctx := context.Background()
	data := randomBytes(1<<20+123, 7)
	if err := d.PutContent(ctx, "/obj", data); err != nil {
		t.Fatal(err)
	}
	defer d.Delete(ctx, "/obj")
	if err := d.PutContent(ctx, "/empty", nil); err != nil {
		t.Fatal(err)
	}
	defer d.Delete(ctx, "/empty")
	rr.takeRanges()

	read := func(path string, off, n int64) []byte {
		t.Helper()
		rctx := ctx
		if n > 0 {
			rctx = driver.WithReadLength(ctx, n)
		}
		rc, err := d.Reader(rctx, path, off)
		if err != nil {
			t.Fatalf("Reader(%s, %d, length %d): %v", path, off, n, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("reading %s at %d, length %d: %v", path, off, n, err)
		}
		return b
	}

	const part = 1 << 16
	dialsBefore := rr.dials.Load()
	for off := int64(0); off < int64(len(data)); off += part {
		got := read("/obj", off, part)
		want := data[off:min(off+part, int64(len(data)))]
		if !bytes.Equal(got, want) {
			t.Fatalf("range at %d: %d bytes, want %d (the same bytes)", off, len(got), len(want))
		}
	}
	ranges := rr.takeRanges()
	if len(ranges) != (len(data)+part-1)/part || ranges[0] != "bytes=0-65535" || ranges[1] != "bytes=65536-131071" {
		t.Errorf("Range headers sent: %q..., want one bounded range per read", ranges[:min(3, len(ranges))])
	}
	if n := rr.dials.Load() - dialsBefore; n > 1 {
		t.Errorf("%d ranged reads read to their end dialled %d connections, want them to reuse one", len(ranges), n)
	}

	// At the end, and on an empty object: a reader at EOF, as without a
	// length. Beyond the end: InvalidOffsetError.
	if got := read("/obj", int64(len(data)), part); len(got) != 0 {
		t.Errorf("at the end: %d bytes", len(got))
	}
	if got := read("/empty", 0, part); len(got) != 0 {
		t.Errorf("empty object: %d bytes", len(got))
	}
	var ioe driver.InvalidOffsetError
	if _, err := d.Reader(driver.WithReadLength(ctx, part), "/obj", int64(len(data))+1); !errors.As(err, &ioe) {
		t.Errorf("beyond the end: %v, want InvalidOffsetError", err)
	}

	// Without a length: open-ended, from 0 with no Range at all.
	rr.takeRanges()
	if got := read("/obj", 5, 0); !bytes.Equal(got, data[5:]) {
		t.Error("open-ended read at 5: wrong bytes")
	}
	if got := read("/obj", 0, 0); !bytes.Equal(got, data) {
		t.Error("open-ended read at 0: wrong bytes")
	}
	if r := rr.takeRanges(); len(r) != 2 || r[0] != "bytes=5-" || r[1] != "" {
		t.Errorf("open-ended reads sent Range %q, want [bytes=5- \"\"]", r)
	}
}
