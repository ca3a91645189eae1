package fs

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// FUSE requests are counted and timed by operation, from bazil's debug
// hook; .regfs/stats and the Prometheus collector show the same counters.
func TestStatsCountFuseOps(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 1<<20)
	d := m.pushBlob("r", content)
	m.readFile(m.path("r/_layers", d.String()))
	_, _ = m.stat(m.path("r/_layers/nope"))

	var s Stats
	if err := json.Unmarshal(m.readFile(m.path(".regfs/stats")), &s); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.FuseProtocol, "7.") || s.GoVersion == "" {
		t.Errorf("fuse_protocol %q, go_version %q", s.FuseProtocol, s.GoVersion)
	}
	for _, op := range []string{"Lookup", "Open", "Read", "Getattr"} {
		if s.FuseOps[op].Requests == 0 || s.FuseOps[op].Seconds <= 0 {
			t.Errorf("%s: %+v, want requests and time counted (all: %v)", op, s.FuseOps[op], s.FuseOps)
		}
	}
	if s.FuseOps["Lookup"].Errors == 0 {
		t.Errorf("the ENOENT lookup is not counted as an error: %+v", s.FuseOps["Lookup"])
	}
	m.fs.ops.mu.Lock()
	inFlight := len(m.fs.ops.started)
	m.fs.ops.mu.Unlock()
	if inFlight > 1 { // only the stats read's own release may be in flight
		t.Errorf("%d requests still noted as in flight", inFlight)
	}

	// The collector reads the same counters: quiet the mount, then compare.
	s = m.fs.Stats()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.fs.Collector())
	if n, err := testutil.GatherAndCount(reg, "regfs_fuse_request_duration_seconds"); err != nil || n == 0 {
		t.Fatalf("latency histograms: %d series, %v", n, err)
	}
	c := m.fs.Collector()
	for name, want := range map[string]float64{
		"regfs_fuse_bytes_total":        float64(s.BytesRead + s.BytesWritten),
		"regfs_uploads_committed_total": float64(s.UploadsCommitted),
		"regfs_cache_misses_total":      float64(s.Cache.Misses),
		"regfs_errors_total":            float64(s.ErrorsByErrno["ENOENT"]),
	} {
		if got := sumMetric(t, c, name); got != want {
			t.Errorf("%s = %v, .regfs/stats says %v", name, got, want)
		}
	}
}

// sumMetric sums the values of every series of the metric name c collects.
func sumMetric(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	var sum float64
	found := false
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		found = true
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if !found {
		t.Errorf("no metric %s", name)
	}
	return sum
}
