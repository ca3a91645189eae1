package store

import (
	"context"
	"testing"
	"time"

	"github.com/regfs/regfs/driver/inmemory"
)

// TestLatencyBuckets: a call's duration lands in the first bucket whose
// bound it does not exceed; the buckets are cumulative, and the ones
// slower than the last bound count only in Count.
func TestLatencyBuckets(t *testing.T) {
	var l latency
	for _, d := range []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 3 * time.Millisecond, 20 * time.Second} {
		l.observe(d)
	}
	s := l.snapshot()
	if s.Count != 4 || s.Seconds < 20.003 || s.Seconds > 20.0032 {
		t.Fatalf("count %d, seconds %v", s.Count, s.Seconds)
	}
	for bound, want := range map[float64]uint64{0.0001: 2, 0.00025: 2, 0.0025: 2, 0.005: 3, 10: 3} {
		if got := s.Buckets[bound]; got != want {
			t.Errorf("bucket <= %vs: %d, want %d", bound, got, want)
		}
	}
	if len(s.Buckets) != numBuckets {
		t.Errorf("%d buckets, want %d", len(s.Buckets), numBuckets)
	}
}

// TestDriverLatencyCountsEveryCall: every driver call the store makes is
// timed, under its method.
func TestDriverLatencyCountsEveryCall(t *testing.T) {
	s := newStore(t, inmemory.New())
	pushBlob(t, repo(t, s, "app"), []byte("a layer"))
	if _, err := repo(t, s, "app").Layers().List(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := s.(StatsReporter).Stats()
	if len(st.DriverLatency) != numOps {
		t.Fatalf("DriverLatency has %d methods, want %d", len(st.DriverLatency), numOps)
	}
	for m, n := range st.DriverCalls {
		if l := st.DriverLatency[m]; l.Count != uint64(n) {
			t.Errorf("%s: %d calls, %d timed", m, n, l.Count)
		}
	}
	if st.DriverCalls["PutContent"] == 0 || st.DriverCalls["List"] == 0 {
		t.Fatalf("calls %v", st.DriverCalls)
	}
}
