package fs

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestDriverLatencyMetrics: /metrics has a histogram of driver call
// durations per driver and method, a sample per call counted in
// regfs_driver_calls_total that has ended.
func TestDriverLatencyMetrics(t *testing.T) {
	m := newMount(t, mountConfig{})
	d := m.pushBlob("r", randomBytes(t, 1<<20))
	m.readFile(m.path("r/_layers", d.String()))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.fs.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() == "regfs_driver_calls_total" {
			for _, mt := range mf.GetMetric() {
				calls[labelValue(mt, "method")] = uint64(mt.GetCounter().GetValue())
			}
		}
	}
	seen := 0
	for _, mf := range mfs {
		if mf.GetName() != "regfs_driver_call_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			method := labelValue(mt, "method")
			h := mt.GetHistogram()
			if h.GetSampleCount() > calls[method] || len(h.GetBucket()) == 0 {
				t.Errorf("%s: %d samples in %d buckets, %d calls", method, h.GetSampleCount(), len(h.GetBucket()), calls[method])
			}
			if method == "Reader" && (h.GetSampleCount() == 0 || h.GetSampleSum() <= 0) {
				t.Errorf("the blob read's Reader calls are not timed: %v", h)
			}
			seen++
		}
	}
	if seen != len(calls) || seen == 0 {
		t.Fatalf("%d latency series, want one per method (%d)", seen, len(calls))
	}
}
