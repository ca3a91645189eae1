package fs

import (
	"encoding/json"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/gc"
)

// counters are the FS's own statistics.
type counters struct {
	bytesRead         atomic.Int64
	bytesWritten      atomic.Int64
	reads             atomic.Int64
	writes            atomic.Int64
	uploadsCommitted  atomic.Int64
	uploadsRejected   atomic.Int64
	manifestsStored   atomic.Int64
	manifestsRejected atomic.Int64
	// manifestLoads counts revisions read into a new shared buffer;
	// manifestOpensRefused the opens refused for want of budget.
	manifestLoads        atomic.Int64
	manifestOpensRefused atomic.Int64

	mu sync.Mutex
	// errnos counts errors returned to the kernel by errno name. Guarded
	// by mu.
	errnos map[string]int64
}

func (c *counters) countErrno(e syscall.Errno) {
	c.mu.Lock()
	c.errnos[errnoName(e)]++
	c.mu.Unlock()
}

// Stats is the content of .regfs/stats.
type Stats struct {
	// Version is regfs's, GoVersion the Go it was built with,
	// FuseProtocol the FUSE protocol version the kernel negotiated.
	Version           string `json:"version,omitempty"`
	GoVersion         string `json:"go_version"`
	FuseProtocol      string `json:"fuse_protocol,omitempty"`
	Driver            string `json:"driver,omitempty"`
	UptimeSeconds     int64  `json:"uptime_seconds"`
	ReadOnly          bool   `json:"read_only"`
	BytesRead         int64  `json:"bytes_read"`
	BytesWritten      int64  `json:"bytes_written"`
	Reads             int64  `json:"reads"`
	Writes            int64  `json:"writes"`
	UploadsInFlight   int    `json:"uploads_in_flight"`
	UploadsCommitted  int64  `json:"uploads_committed"`
	UploadsRejected   int64  `json:"uploads_rejected"`
	ManifestsStored   int64  `json:"manifests_stored"`
	ManifestsRejected int64  `json:"manifests_rejected"`
	// ManifestBuffers and ManifestBufferBytes are the revisions open for
	// reading now, each held once however many descriptors read it, and
	// their bytes (charged to the cache budget). ManifestLoads counts the
	// buffers made, ManifestOpensRefused the opens refused (ENOMEM)
	// because open manifests held their share of the budget.
	ManifestBuffers      int              `json:"manifest_buffers"`
	ManifestBufferBytes  int64            `json:"manifest_buffer_bytes"`
	ManifestLoads        int64            `json:"manifest_loads"`
	ManifestOpensRefused int64            `json:"manifest_opens_refused"`
	ErrorsByErrno        map[string]int64 `json:"errors_by_errno"`
	Cache                *CacheStats      `json:"cache,omitempty"`
	// DriverCalls counts the storage driver calls by method: what the
	// operations so far cost the backend.
	DriverCalls map[string]int64 `json:"driver_calls"`
	// DriverLatency is how long those calls took, by method: their count
	// and total seconds here, the histogram in the metrics
	// (regfs_driver_call_duration_seconds).
	DriverLatency map[string]store.Latency `json:"driver_latency,omitempty"`
	// BadLinks counts the links that stayed empty, short or malformed
	// after their re-reads (another writer's crash, tampering): each was
	// left out of its listing and logged with its path.
	BadLinks int64 `json:"bad_links"`
	// GC summarises the collections --gc-interval ran inside the mount;
	// absent before the first.
	GC *gc.Summary `json:"gc,omitempty"`
	// FuseOps counts the FUSE requests served by operation (Lookup,
	// Getattr, Read, ...), those answered with an error, and the seconds
	// spent on them.
	FuseOps map[string]OpStats `json:"fuse_ops"`
}

// CacheStats is the block cache part of Stats.
type CacheStats struct {
	Hits       int64 `json:"hits"`
	Misses     int64 `json:"misses"`
	Loads      int64 `json:"loads"`
	ReadAheads int64 `json:"read_aheads"`
	Evictions  int64 `json:"evictions"`
	// Forgotten counts the blocks dropped because their blob was
	// deleted from storage (by gc in this process, or found gone).
	Forgotten int64 `json:"forgotten"`
	Bytes     int64 `json:"bytes"`
	MaxBytes  int64 `json:"max_bytes"`
	Budget    int64 `json:"budget"`
}

// Stats returns the FS's counters now.
func (f *FS) Stats() Stats {
	s := Stats{
		Version:              f.opts.Version,
		GoVersion:            runtime.Version(),
		Driver:               f.opts.Driver,
		FuseOps:              f.ops.ops(),
		UptimeSeconds:        int64(time.Since(f.started).Seconds()),
		ReadOnly:             f.opts.ReadOnly,
		BytesRead:            f.stats.bytesRead.Load(),
		BytesWritten:         f.stats.bytesWritten.Load(),
		Reads:                f.stats.reads.Load(),
		Writes:               f.stats.writes.Load(),
		UploadsCommitted:     f.stats.uploadsCommitted.Load(),
		UploadsRejected:      f.stats.uploadsRejected.Load(),
		ManifestsStored:      f.stats.manifestsStored.Load(),
		ManifestsRejected:    f.stats.manifestsRejected.Load(),
		ManifestLoads:        f.stats.manifestLoads.Load(),
		ManifestOpensRefused: f.stats.manifestOpensRefused.Load(),
		ErrorsByErrno:        map[string]int64{},
	}
	if p := f.protocol.Load(); p != nil {
		s.FuseProtocol = *p
	}
	f.stats.mu.Lock()
	for k, v := range f.stats.errnos {
		s.ErrorsByErrno[k] = v
	}
	f.stats.mu.Unlock()
	f.mu.Lock()
	s.UploadsInFlight = len(f.uploads)
	f.mu.Unlock()
	s.ManifestBuffers, s.ManifestBufferBytes = f.openManifestBuffers()
	if f.opts.GC != nil {
		s.GC = f.opts.GC()
	}
	if sr, ok := f.st.(store.StatsReporter); ok {
		st := sr.Stats()
		s.DriverCalls = st.DriverCalls
		s.DriverLatency = st.DriverLatency
		s.BadLinks = st.BadLinks
	}
	if c := f.opts.Cache; c != nil {
		cs := c.Stats()
		s.Cache = &CacheStats{
			Hits: cs.Hits, Misses: cs.Misses, Loads: cs.Loads, ReadAheads: cs.ReadAheads,
			Evictions: cs.Evictions, Forgotten: cs.Forgotten, Bytes: cs.Bytes, MaxBytes: cs.MaxBytes, Budget: cs.Budget,
		}
	}
	return s
}

func (f *FS) statsJSON() []byte {
	b, err := json.MarshalIndent(f.Stats(), "", "  ")
	if err != nil {
		// Stats holds only numbers and strings; this cannot happen.
		return []byte("{}\n")
	}
	return append(b, '\n')
}
