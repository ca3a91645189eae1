package s3

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/regfs/regfs/driver"
)

// TestReaderReportsSize: a Reader opened under driver.WithSizeReport tells
// the whole object's size, from a bounded range, an open-ended one, no
// range at all, an empty object and the end of one, through the base
// wrapper, with no request besides the GET (and the HEAD an empty
// object's range always costs).
func TestReaderReportsSize(t *testing.T) {
	requireServer(t)
	p := testParams
	p.RootDirectory = "t-" + strings.ToLower(rand.Text())
	d, err := New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := randomBytes(100<<10+7, 3)
	if err := d.PutContent(ctx, "/obj", data); err != nil {
		t.Fatal(err)
	}
	defer d.Delete(ctx, "/obj")
	if err := d.PutContent(ctx, "/empty", nil); err != nil {
		t.Fatal(err)
	}
	defer d.Delete(ctx, "/empty")
	for _, c := range []struct {
		path   string
		off, n int64
		want   int64
	}{
		{"/obj", 0, 1 << 10, int64(len(data))},
		{"/obj", 0, 1 << 20, int64(len(data))},
		{"/obj", 5, 0, int64(len(data))},
		{"/obj", 0, 0, int64(len(data))},
		{"/obj", int64(len(data)), 1 << 10, int64(len(data))},
		{"/empty", 0, 1 << 10, 0},
	} {
		got := int64(-1)
		rctx := driver.WithSizeReport(ctx, func(n int64) { got = n })
		if c.n > 0 {
			rctx = driver.WithReadLength(rctx, c.n)
		}
		rc, err := d.Reader(rctx, c.path, c.off)
		if err != nil {
			t.Fatalf("Reader(%s, %d, length %d): %v", c.path, c.off, c.n, err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		if got != c.want {
			t.Errorf("Reader(%s, %d, length %d) reported the size %d, want %d", c.path, c.off, c.n, got, c.want)
		}
	}
}

// TestRangeTotal: the size of a Content-Range, or none.
func TestRangeTotal(t *testing.T) {
	for in, want := range map[string]int64{"bytes 0-99/1234": 1234, "bytes 5-5/6": 6, "bytes 0-99/*": -1, "garbage": -1, "bytes 0-0/-3": -1} {
		n, ok := rangeTotal(in)
		if (want < 0 && ok) || (want >= 0 && (!ok || n != want)) {
			t.Errorf("rangeTotal(%q) = %d, %v, want %d", in, n, ok, want)
		}
	}
}

// TestNewOpensConnections: New leaves as many connections open as a
// layer's lookup uses at once, so that the first lookup after a mount
// dials none.
func TestNewOpensConnections(t *testing.T) {
	requireServer(t)
	rr := newRangeRecorder()
	defer rr.t.CloseIdleConnections()
	p := testParams
	p.HTTPClient = &http.Client{Transport: rr}
	if _, err := New(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if n := rr.dials.Load(); n != 2 {
		t.Errorf("New dialled %d connections, want 2 (a lookup makes two requests at once)", n)
	}
}
