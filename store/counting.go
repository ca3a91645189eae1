package store

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/regfs/regfs/driver"
)

// Driver methods counted by callCounter, in the order DriverCalls
// reports them.
const (
	opGetContent = iota
	opPutContent
	opReader
	opWriter
	opStat
	opList
	opMove
	opDelete
	opWalk
	numOps
)

var opNames = [numOps]string{
	opGetContent: "GetContent",
	opPutContent: "PutContent",
	opReader:     "Reader",
	opWriter:     "Writer",
	opStat:       "Stat",
	opList:       "List",
	opMove:       "Move",
	opDelete:     "Delete",
	opWalk:       "Walk",
}

// latencyBuckets are the upper bounds, in seconds, of the buckets of
// Stats.DriverLatency: from a local disk's tenth of a millisecond to an
// object store's slowest seconds.
var latencyBuckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

const numBuckets = len(latencyBuckets)

// Latency is a histogram of the durations of one driver method's calls.
type Latency struct {
	// Count is the number of calls timed, Seconds their total duration.
	Count   uint64  `json:"count"`
	Seconds float64 `json:"seconds"`
	// Buckets counts, by upper bound in seconds (a tenth of a millisecond
	// to ten seconds), the calls that took at most that long (cumulative,
	// as Prometheus has them).
	Buckets map[float64]uint64 `json:"-"`
}

// latency is the live form of a Latency: a count per bucket (the last for
// the calls slower than every bound) and the total in nanoseconds.
type latency struct {
	buckets [numBuckets + 1]atomic.Uint64
	nanos   atomic.Int64
}

func (l *latency) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < numBuckets && s > latencyBuckets[i] {
		i++
	}
	l.buckets[i].Add(1)
	l.nanos.Add(int64(d))
}

func (l *latency) snapshot() Latency {
	out := Latency{Buckets: make(map[float64]uint64, numBuckets)}
	var cum uint64
	for i := range l.buckets {
		cum += l.buckets[i].Load()
		if i < numBuckets {
			out.Buckets[latencyBuckets[i]] = cum
		}
	}
	out.Count = cum
	out.Seconds = time.Duration(l.nanos.Load()).Seconds()
	return out
}

// callCounter counts and times the calls of each method of the driver it
// wraps. An atomic add per call and a clock read cost nothing next to the
// call itself. The time of Reader and Writer is that of opening the
// stream, not of moving its bytes; the time of Walk is the whole walk.
type callCounter struct {
	driver.StorageDriver
	calls   [numOps]atomic.Int64
	latency [numOps]latency
}

// start counts a call of op and returns the function that times it.
func (c *callCounter) start(op int) func() {
	c.calls[op].Add(1)
	t := time.Now()
	return func() { c.latency[op].observe(time.Since(t)) }
}

func newCallCounter(d driver.StorageDriver) *callCounter {
	return &callCounter{StorageDriver: d}
}

// Stats implements StatsReporter.
func (s *storage) Stats() Stats {
	calls := make(map[string]int64, numOps)
	lat := make(map[string]Latency, numOps)
	for op, name := range opNames {
		calls[name] = s.calls.calls[op].Load()
		lat[name] = s.calls.latency[op].snapshot()
	}
	return Stats{DriverCalls: calls, DriverLatency: lat, BadLinks: s.badLinks.Load()}
}

func (c *callCounter) GetContent(ctx context.Context, path string) ([]byte, error) {
	defer c.start(opGetContent)()
	return c.StorageDriver.GetContent(ctx, path)
}

func (c *callCounter) PutContent(ctx context.Context, path string, content []byte) error {
	defer c.start(opPutContent)()
	return c.StorageDriver.PutContent(ctx, path, content)
}

func (c *callCounter) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	defer c.start(opReader)()
	return c.StorageDriver.Reader(ctx, path, offset)
}

// StageWriter forwards driver.Stager, counted as a Writer.
func (c *callCounter) StageWriter(ctx context.Context, dst, state string, append bool) (driver.FileWriter, error) {
	st, ok := c.StorageDriver.(driver.Stager)
	if !ok {
		return nil, driver.UnsupportedMethodError{Method: "StageWriter", Driver: c.Name()}
	}
	t := time.Now()
	w, err := st.StageWriter(ctx, dst, state, append)
	var unsupported driver.UnsupportedMethodError
	if !errors.As(err, &unsupported) {
		// A driver that does not stage made no call.
		c.calls[opWriter].Add(1)
		c.latency[opWriter].observe(time.Since(t))
	}
	return w, err
}

func (c *callCounter) Writer(ctx context.Context, path string, append bool) (driver.FileWriter, error) {
	defer c.start(opWriter)()
	return c.StorageDriver.Writer(ctx, path, append)
}

func (c *callCounter) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	defer c.start(opStat)()
	return c.StorageDriver.Stat(ctx, path)
}

func (c *callCounter) List(ctx context.Context, path string) ([]string, error) {
	defer c.start(opList)()
	return c.StorageDriver.List(ctx, path)
}

func (c *callCounter) Move(ctx context.Context, src, dst string) error {
	defer c.start(opMove)()
	return c.StorageDriver.Move(ctx, src, dst)
}

func (c *callCounter) Delete(ctx context.Context, path string) error {
	defer c.start(opDelete)()
	return c.StorageDriver.Delete(ctx, path)
}

func (c *callCounter) Walk(ctx context.Context, path string, fn driver.WalkFn) error {
	defer c.start(opWalk)()
	return c.StorageDriver.Walk(ctx, path, fn)
}
