package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/testsuite"
)

// TestLookupFirst: on a driver that tells an object's size with its
// first bytes, LookupFirst is the link's Stat and one Reader, whose bytes
// a read of the blob's start through OpenFound gets without a driver call;
// a read past them goes to the block cache. A blob shorter than the bytes
// asked for is read whole. Missing links and data are ErrBlobUnknown as
// with Lookup. On a driver that does not tell sizes, the first LookupFirst
// states the data too, and later ones only state it.
func TestLookupFirst(t *testing.T) {
	ctx := context.Background()
	for _, dc := range drivers {
		for _, reports := range []bool{true, false} {
			name := dc.name
			if reports {
				name += "/reports-size"
			}
			t.Run(name, func(t *testing.T) {
				var d driver.StorageDriver = dc.new(t, "")
				if reports {
					d = testsuite.SizeReporting{StorageDriver: d}
				}
				s := newStore(t, d)
				r := repo(t, s, "team/app")
				content := bytes.Repeat([]byte("0123456789"), 1000)
				l1 := pushBlob(t, r, content)
				fl := r.Layers().(FirstBytesLookuper)

				for i, want := range []map[string]int64{
					map[bool]map[string]int64{true: {"Stat": 1, "Reader": 1}, false: {"Stat": 2, "Reader": 1}}[reports],
					map[bool]map[string]int64{true: {"Stat": 1, "Reader": 1}, false: {"Stat": 2}}[reports],
				} {
					before := s.(StatsReporter).Stats().DriverCalls
					info, err := fl.LookupFirst(ctx, l1, 100)
					if err != nil || info.Digest != l1 || info.Size != int64(len(content)) {
						t.Fatalf("LookupFirst = %+v, %v", info.Descriptor, err)
					}
					if got := callsSince(s, before); !maps.Equal(got, want) {
						t.Errorf("LookupFirst %d made the driver calls %v, want %v", i+1, got, want)
					}
					if lt, err := r.Layers().LinkTime(ctx, l1); err != nil || !info.ModTime.Equal(lt) {
						t.Errorf("LookupFirst's time %v, LinkTime %v, %v", info.ModTime, lt, err)
					}
					br := r.Layers().OpenFound(info)
					before = s.(StatsReporter).Stats().DriverCalls
					buf := make([]byte, 100)
					if n, err := br.ReadAt(buf, 0); n != 100 || err != nil || !bytes.Equal(buf, content[:100]) {
						t.Fatalf("ReadAt(100, 0) = %d, %v", n, err)
					}
					calls := callsSince(s, before)
					if reports && len(calls) != 0 {
						t.Errorf("a read within the first bytes made the driver calls %v", calls)
					}
					if !reports && i == 0 && calls["Reader"] < 1 {
						t.Errorf("a read with no first bytes fetched made the driver calls %v, want a Reader", calls)
					}
					got, err := io.ReadAll(br)
					br.Close()
					if err != nil || !bytes.Equal(got, content) {
						t.Fatalf("read %d bytes, %v", len(got), err)
					}
				}

				short := []byte("short layer")
				l2 := pushBlob(t, r, short)
				info, err := fl.LookupFirst(ctx, l2, 100)
				if err != nil || info.Size != int64(len(short)) {
					t.Fatalf("LookupFirst of a short layer = %+v, %v", info.Descriptor, err)
				}
				br := r.Layers().OpenFound(info)
				before := s.(StatsReporter).Stats().DriverCalls
				buf := make([]byte, 100)
				n, err := br.ReadAt(buf, 2)
				if n != len(short)-2 || err != io.EOF || !bytes.Equal(buf[:n], short[2:]) {
					t.Fatalf("ReadAt(100, 2) of a short layer = %d %q, %v", n, buf[:n], err)
				}
				if calls := callsSince(s, before); reports && len(calls) != 0 {
					t.Errorf("reading a layer fetched whole made the driver calls %v", calls)
				}
				br.Close()

				if _, err := fl.LookupFirst(ctx, digest.FromString("not linked"), 100); !errors.Is(err, ErrBlobUnknown) {
					t.Errorf("LookupFirst of a layer not linked: %v", err)
				}
				if err := d.Delete(ctx, mustPath(blobDataPathSpec{digest: l2})); err != nil {
					t.Fatal(err)
				}
				if _, err := fl.LookupFirst(ctx, l2, 100); !errors.Is(err, ErrBlobUnknown) {
					t.Errorf("LookupFirst of a layer whose data is gone: %v", err)
				}
			})
		}
	}
}

// TestFirstBytesNotServedOnceGone: a reader opened with a lookup's first
// bytes serves them only until the store learns that a blob is gone (the
// same rule as for the block cache, TestBlobDeletedElsewhereLeavesTheCache).
func TestFirstBytesNotServedOnceGone(t *testing.T) {
	ctx := context.Background()
	d := testsuite.SizeReporting{StorageDriver: drivers[0].new(t, "")}
	s := newStore(t, d)
	r := repo(t, s, "a")
	content := []byte("first bytes, then deleted by another process")
	dgst := pushBlob(t, r, content)
	info, err := r.Layers().(FirstBytesLookuper).LookupFirst(ctx, dgst, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	br := r.Layers().OpenFound(info)
	defer br.Close()
	buf := make([]byte, len(content))
	if _, err := br.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	deletedElsewhere(t, d, r, dgst, br, buf)
}

// failingReader is a driver whose Reader fails (not with not-found) and
// does not tell sizes.
type failingReader struct{ driver.StorageDriver }

func (failingReader) Reader(context.Context, string, int64) (io.ReadCloser, error) {
	return nil, errors.New("no readers here")
}

// TestLookupFirstReaderFails: on a driver not known to tell sizes, a
// Reader that fails leaves the lookup to the data's Stat, as Lookup.
func TestLookupFirstReaderFails(t *testing.T) {
	s := newStore(t, failingReader{drivers[0].new(t, "")})
	r := repo(t, s, "a")
	content := []byte("layer")
	dgst := pushBlob(t, r, content)
	info, err := r.Layers().(FirstBytesLookuper).LookupFirst(context.Background(), dgst, 100)
	if err != nil || info.Size != int64(len(content)) {
		t.Fatalf("LookupFirst = %+v, %v", info.Descriptor, err)
	}
}
