package store

import (
	"context"
	"io"
	"sync/atomic"

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

// callCounter counts the calls of each method of the driver it wraps.
// An atomic add per call costs nothing next to the call itself.
type callCounter struct {
	driver.StorageDriver
	calls [numOps]atomic.Int64
}

func newCallCounter(d driver.StorageDriver) *callCounter {
	return &callCounter{StorageDriver: d}
}

// Stats implements StatsReporter.
func (s *storage) Stats() Stats {
	calls := make(map[string]int64, numOps)
	for op, name := range opNames {
		calls[name] = s.calls.calls[op].Load()
	}
	return Stats{DriverCalls: calls, BadLinks: s.badLinks.Load()}
}

func (c *callCounter) GetContent(ctx context.Context, path string) ([]byte, error) {
	c.calls[opGetContent].Add(1)
	return c.StorageDriver.GetContent(ctx, path)
}

func (c *callCounter) PutContent(ctx context.Context, path string, content []byte) error {
	c.calls[opPutContent].Add(1)
	return c.StorageDriver.PutContent(ctx, path, content)
}

func (c *callCounter) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	c.calls[opReader].Add(1)
	return c.StorageDriver.Reader(ctx, path, offset)
}

func (c *callCounter) Writer(ctx context.Context, path string, append bool) (driver.FileWriter, error) {
	c.calls[opWriter].Add(1)
	return c.StorageDriver.Writer(ctx, path, append)
}

func (c *callCounter) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	c.calls[opStat].Add(1)
	return c.StorageDriver.Stat(ctx, path)
}

func (c *callCounter) List(ctx context.Context, path string) ([]string, error) {
	c.calls[opList].Add(1)
	return c.StorageDriver.List(ctx, path)
}

func (c *callCounter) Move(ctx context.Context, src, dst string) error {
	c.calls[opMove].Add(1)
	return c.StorageDriver.Move(ctx, src, dst)
}

func (c *callCounter) Delete(ctx context.Context, path string) error {
	c.calls[opDelete].Add(1)
	return c.StorageDriver.Delete(ctx, path)
}

func (c *callCounter) Walk(ctx context.Context, path string, fn driver.WalkFn) error {
	c.calls[opWalk].Add(1)
	return c.StorageDriver.Walk(ctx, path, fn)
}
