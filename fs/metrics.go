package fs

import (
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"bazil.org/fuse"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metrics. The FS's counters are one source with two views: .regfs/stats
// (Stats, JSON) and Prometheus (Collector, read at scrape time). Most are
// the atomics of counters; the FUSE request latencies are a histogram
// vector, which Stats reads back for its per-operation totals.
//
// Requests are timed from bazil's debug hook, the one place that sees
// every request and its response, in order, with the request's id: it is
// called with the request before the handler runs and with the response
// just before it is sent. Its message types are unexported, so their
// exported fields are read by reflection; TestStatsCountFuseOps fails if a
// bazil upgrade changes them.

// opTimer times FUSE requests by operation.
type opTimer struct {
	latency *prometheus.HistogramVec
	errors  *prometheus.CounterVec

	mu sync.Mutex
	// started holds the operation and start of each request in flight, by
	// request id. Guarded by mu.
	started map[fuse.RequestID]opStart
	// byType holds the *opMetrics of each request type seen.
	byType sync.Map
}

type opStart struct {
	m  *opMetrics
	at time.Time
}

// opMetrics are one operation's name and metrics, looked up once per
// request type (opTimer.byType) rather than by label on every request.
type opMetrics struct {
	op      string
	latency prometheus.Observer
	errors  prometheus.Counter
}

// latencyBuckets spans a cached getattr (tens of microseconds) to a
// commit of a large layer on S3 (tens of seconds).
var latencyBuckets = prometheus.ExponentialBuckets(25e-6, 4, 11)

func newOpTimer() *opTimer {
	return &opTimer{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "regfs_fuse_request_duration_seconds",
			Help:    "Time from a FUSE request's arrival to its response, by operation; its count is the requests served.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regfs_fuse_request_errors_total",
			Help: "FUSE requests answered with an error, by operation.",
		}, []string{"op"}),
		started: map[fuse.RequestID]opStart{},
	}
}

// observe is bazil's debug hook: it notes a request's start and times its
// response.
func (t *opTimer) observe(msg any) {
	v := reflect.ValueOf(msg)
	if v.Kind() != reflect.Struct {
		return
	}
	switch v.Type().Name() {
	case "request":
		in, ok := fieldOf(v, "In").(fuse.Request)
		if !ok {
			return
		}
		m := t.metricsOf(reflect.TypeOf(in))
		t.mu.Lock()
		t.started[in.Hdr().ID] = opStart{m: m, at: time.Now()}
		t.mu.Unlock()
	case "response":
		hdr := fieldValue(v, "Request")
		if !hdr.IsValid() {
			return
		}
		id, ok := fieldOf(hdr, "ID").(fuse.RequestID)
		if !ok {
			return
		}
		t.mu.Lock()
		s, ok := t.started[id]
		delete(t.started, id)
		t.mu.Unlock()
		if !ok {
			return
		}
		s.m.latency.Observe(time.Since(s.at).Seconds())
		if errno, _ := fieldOf(v, "Errno").(string); errno != "" {
			s.m.errors.Inc()
		}
	}
}

// metricsOf returns the metrics of requests of type rt (a pointer to one
// of bazil's *Request types).
func (t *opTimer) metricsOf(rt reflect.Type) *opMetrics {
	if m, ok := t.byType.Load(rt); ok {
		return m.(*opMetrics)
	}
	op := rt
	if op.Kind() == reflect.Pointer {
		op = op.Elem()
	}
	name := strings.TrimSuffix(op.Name(), "Request")
	m, _ := t.byType.LoadOrStore(rt, &opMetrics{op: name, latency: t.latency.WithLabelValues(name), errors: t.errors.WithLabelValues(name)})
	return m.(*opMetrics)
}

// fieldOf returns the exported field name of struct v, or nil.
func fieldOf(v reflect.Value, name string) any {
	f := fieldValue(v, name)
	if !f.IsValid() || !f.CanInterface() {
		return nil
	}
	return f.Interface()
}

// fieldValue is struct v's field name, or the zero Value.
func fieldValue(v reflect.Value, name string) reflect.Value {
	i := fieldIndex(v.Type(), name)
	if i == nil {
		return reflect.Value{}
	}
	return v.FieldByIndex(i)
}

// fieldIndexes caches fieldIndex's answers by fieldKey.
var fieldIndexes sync.Map

type fieldKey struct {
	t    reflect.Type
	name string
}

// fieldIndex is the index of struct type t's field name (nil if none),
// found by name once per type: the debug hook reads the same few fields of
// every request.
func fieldIndex(t reflect.Type, name string) []int {
	k := fieldKey{t, name}
	if i, ok := fieldIndexes.Load(k); ok {
		return i.([]int)
	}
	var idx []int
	if f, ok := t.FieldByName(name); ok {
		idx = f.Index
	}
	fieldIndexes.Store(k, idx)
	return idx
}

// OpStats is one FUSE operation's part of Stats.
type OpStats struct {
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
}

// ops reads the per-operation totals back from the metrics.
func (t *opTimer) ops() map[string]OpStats {
	out := map[string]OpStats{}
	for _, m := range collect(t.latency) {
		op := labelValue(m, "op")
		s := out[op]
		s.Requests = int64(m.GetHistogram().GetSampleCount())
		s.Seconds = m.GetHistogram().GetSampleSum()
		out[op] = s
	}
	for _, m := range collect(t.errors) {
		op := labelValue(m, "op")
		s := out[op]
		s.Errors = int64(m.GetCounter().GetValue())
		out[op] = s
	}
	return out
}

// collect gathers c's metrics as protocol buffers.
func collect(c prometheus.Collector) []*dto.Metric {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var out []*dto.Metric
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil {
			out = append(out, &d)
		}
	}
	return out
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Collector returns the FS's metrics for a Prometheus registry: what
// .regfs/stats shows, read from the same counters at each scrape.
func (f *FS) Collector() prometheus.Collector { return fsCollector{f} }

type fsCollector struct{ f *FS }

func metricDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics Collector makes from Stats.
var (
	descInfo             = metricDesc("regfs_info", "Always 1; the labels say which regfs serves the mount.", "version", "go_version", "fuse_protocol", "driver")
	descStart            = metricDesc("regfs_start_time_seconds", "When the mount was made, in seconds since the epoch.")
	descBytes            = metricDesc("regfs_fuse_bytes_total", "Bytes read and written through the mount, by operation.", "op")
	descErrnos           = metricDesc("regfs_errors_total", "Errors returned to the kernel, by errno name.", "errno")
	descUploadsInFlight  = metricDesc("regfs_uploads_in_flight", "Uploads open for writing now.")
	descUploadsCommitted = metricDesc("regfs_uploads_committed_total", "Uploads committed as blobs.")
	descUploadsRejected  = metricDesc("regfs_uploads_rejected_total", "Uploads refused at commit (digest or size mismatch).")
	descManifestsStored  = metricDesc("regfs_manifests_stored_total", "Manifests stored.")
	descManifestsRej     = metricDesc("regfs_manifests_rejected_total", "Manifests refused (invalid, unknown references).")
	descManifestBuffers  = metricDesc("regfs_manifest_buffers", "Manifest revisions open for reading now.")
	descManifestBufBytes = metricDesc("regfs_manifest_buffer_bytes", "Bytes of the manifest revisions open for reading, charged to the cache budget.")
	descManifestRefused  = metricDesc("regfs_manifest_opens_refused_total", "Manifest opens refused (ENOMEM) for want of cache budget.")
	descDriverCalls      = metricDesc("regfs_driver_calls_total", "Storage driver calls, by driver and method.", "driver", "method")
	descDriverLatency    = metricDesc("regfs_driver_call_duration_seconds", "How long storage driver calls took, by driver and method (Reader and Writer: opening the stream; Walk: the whole walk).", "driver", "method")
	descBadLinks         = metricDesc("regfs_bad_links_total", "Links left out of listings because they stayed empty, short or malformed.")
	descGCRuns           = metricDesc("regfs_gc_runs_total", "Collections run by --gc-interval inside the mount.")
	descGCReclaimed      = metricDesc("regfs_gc_reclaimed_bytes_total", "Bytes the mount's collections deleted.")
	descGCLastProblems   = metricDesc("regfs_gc_last_problems", "Problems the last collection inside the mount reported.")
	descCacheHits        = metricDesc("regfs_cache_hits_total", "Block cache lookups served from memory.")
	descCacheMisses      = metricDesc("regfs_cache_misses_total", "Block cache lookups that loaded from storage.")
	descCacheLoads       = metricDesc("regfs_cache_loads_total", "Blocks loaded from storage.")
	descCacheReadAheads  = metricDesc("regfs_cache_read_aheads_total", "Blocks loaded ahead of reads.")
	descCacheEvictions   = metricDesc("regfs_cache_evictions_total", "Blocks evicted from the cache.")
	descCacheBytes       = metricDesc("regfs_cache_bytes", "Bytes held by the block cache now.")
	descCacheBudget      = metricDesc("regfs_cache_budget_bytes", "The block cache's budget in bytes.")
)

// Describe implements prometheus.Collector.
func (c fsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descStart, descBytes, descErrnos,
		descUploadsInFlight, descUploadsCommitted, descUploadsRejected,
		descManifestsStored, descManifestsRej, descManifestBuffers, descManifestBufBytes, descManifestRefused,
		descDriverCalls, descDriverLatency, descBadLinks, descGCRuns, descGCReclaimed, descGCLastProblems, descCacheHits, descCacheMisses, descCacheLoads, descCacheReadAheads,
		descCacheEvictions, descCacheBytes, descCacheBudget} {
		ch <- d
	}
	c.f.ops.latency.Describe(ch)
	c.f.ops.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c fsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.f.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descInfo, 1, s.Version, s.GoVersion, s.FuseProtocol, s.Driver)
	gauge(descStart, float64(c.f.started.UnixNano())/1e9)
	counter(descBytes, s.BytesRead, "read")
	counter(descBytes, s.BytesWritten, "write")
	for _, e := range sortedKeys(s.ErrorsByErrno) {
		counter(descErrnos, s.ErrorsByErrno[e], e)
	}
	gauge(descUploadsInFlight, float64(s.UploadsInFlight))
	counter(descUploadsCommitted, s.UploadsCommitted)
	counter(descUploadsRejected, s.UploadsRejected)
	counter(descManifestsStored, s.ManifestsStored)
	counter(descManifestsRej, s.ManifestsRejected)
	gauge(descManifestBuffers, float64(s.ManifestBuffers))
	gauge(descManifestBufBytes, float64(s.ManifestBufferBytes))
	counter(descManifestRefused, s.ManifestOpensRefused)
	for _, m := range sortedKeys(s.DriverCalls) {
		counter(descDriverCalls, s.DriverCalls[m], s.Driver, m)
	}
	for _, m := range sortedKeys(s.DriverCalls) {
		if l, ok := s.DriverLatency[m]; ok {
			ch <- prometheus.MustNewConstHistogram(descDriverLatency, l.Count, l.Seconds, l.Buckets, s.Driver, m)
		}
	}
	counter(descBadLinks, s.BadLinks)
	if g := s.GC; g != nil {
		counter(descGCRuns, g.Runs)
		counter(descGCReclaimed, g.ReclaimedBytesTotal)
		gauge(descGCLastProblems, float64(g.Problems))
	}
	if cs := s.Cache; cs != nil {
		counter(descCacheHits, cs.Hits)
		counter(descCacheMisses, cs.Misses)
		counter(descCacheLoads, cs.Loads)
		counter(descCacheReadAheads, cs.ReadAheads)
		counter(descCacheEvictions, cs.Evictions)
		gauge(descCacheBytes, float64(cs.Bytes))
		gauge(descCacheBudget, float64(cs.Budget))
	}
	c.f.ops.latency.Collect(ch)
	c.f.ops.errors.Collect(ch)
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
