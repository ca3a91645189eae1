package cache

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	benchSize   = 64 << 20  // bytes in the benchmark file
	benchChunk  = 128 << 10 // bytes per read, as FUSE sends them
	benchBudget = 32 << 20  // half the file: the pass evicts
)

// benchFile writes a file of benchSize random bytes in a temporary directory
// the benchmark removes, and returns it open.
func benchFile(b *testing.B) *os.File {
	b.Helper()
	data := make([]byte, benchSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(data); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	path := filepath.Join(b.TempDir(), "blob")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// readPass reads [0, benchSize) from r in benchChunk requests with the given
// number of requests in flight, in order of issue as FUSE does, and returns
// how long it took.
func readPass(b *testing.B, r io.ReaderAt, inFlight int) time.Duration {
	b.Helper()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, benchChunk)
			for {
				off := next.Add(benchChunk) - benchChunk
				if off >= benchSize {
					return
				}
				if n, err := r.ReadAt(p, off); n != len(p) || (err != nil && err != io.EOF) {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("read: %v", err)
	}
	return time.Since(start)
}

// benchSequential times a sequential pass through a fresh cache against one
// directly on the file, and reports both throughputs and their ratio
// (x-direct above 1 means the cache was faster).
func benchSequential(b *testing.B, inFlight int) {
	f := benchFile(b)
	open := func(_ context.Context, off int64) (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(f, off, benchSize-off)), nil
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	var direct, cached time.Duration
	for b.Loop() {
		direct += readPass(b, f, inFlight)
		c := New(benchBudget, 0)
		r := c.NewReader("blob", benchSize, open)
		cached += readPass(b, r, inFlight)
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		if s := c.Stats(); s.MaxBytes > s.Budget {
			b.Fatalf("MaxBytes %d > Budget %d", s.MaxBytes, s.Budget)
		}
	}
	mb := float64(b.N) * benchSize / 1e6
	b.ReportMetric(mb/direct.Seconds(), "direct-MB/s")
	b.ReportMetric(mb/cached.Seconds(), "cached-MB/s")
	b.ReportMetric(direct.Seconds()/cached.Seconds(), "x-direct")
}

// BenchmarkSequential reads the file one request at a time, as cat does
// without FUSE.
func BenchmarkSequential(b *testing.B) { benchSequential(b, 1) }

// BenchmarkSequentialFUSE keeps four requests in flight, as the kernel does
// for a cat through the mount.
func BenchmarkSequentialFUSE(b *testing.B) { benchSequential(b, 4) }

// BenchmarkSequentialWarm reads the file through a cache that already holds
// all of it, against direct reads: the cost of the hit path.
func BenchmarkSequentialWarm(b *testing.B) {
	f := benchFile(b)
	open := func(_ context.Context, off int64) (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(f, off, benchSize-off)), nil
	}
	c := New(2*benchSize, 0)
	r := c.NewReader("blob", benchSize, open)
	b.Cleanup(func() { r.Close() })
	readPass(b, r, 1)
	loads := c.Stats().Loads
	b.SetBytes(benchSize)
	b.ResetTimer()
	var direct, cached time.Duration
	for b.Loop() {
		direct += readPass(b, f, 4)
		cached += readPass(b, r, 4)
	}
	if s := c.Stats(); s.Loads != loads {
		b.Fatalf("warm passes loaded %d blocks", s.Loads-loads)
	}
	mb := float64(b.N) * benchSize / 1e6
	b.ReportMetric(mb/direct.Seconds(), "direct-MB/s")
	b.ReportMetric(mb/cached.Seconds(), "cached-MB/s")
	b.ReportMetric(direct.Seconds()/cached.Seconds(), "x-direct")
}
