package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/gc"
)

// mountGC is the summary of the last collection a mount's --gc-interval
// ran, for .regfs/stats.
var mountGC gc.Last

// startGCInMount runs a collection every cfg.GCInterval on the mount's
// store until ctx is done or the returned stop is called (which waits for
// the run in progress to end). Each run is fenced off the store's own
// writers: what the mount is uploading, committing or linking is live
// whatever its age. collected, when set, is given each run's report (also
// a partial one), so that the mount drops the names the run removed from
// the kernel's caches. Nothing runs when the interval is zero.
func startGCInMount(ctx context.Context, cfg Config, st store.Store, d driver.StorageDriver, log *slog.Logger, collected func(*gc.Report)) (stop func()) {
	if cfg.GCInterval <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cfg.GCInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fence, release := store.TakeFence(st)
			opts := gc.Options{Grace: cfg.GCGrace, Logger: log}
			if fence != nil {
				opts.Fence = fence
			}
			started := time.Now()
			rep, err := gc.Run(ctx, st, d, opts)
			release()
			if rep != nil && collected != nil {
				collected(rep)
			}
			if ctx.Err() != nil {
				return
			}
			mountGC.Record(started, rep, err)
			switch {
			case err != nil:
				log.Warn("gc stopped", "error", err)
			case !rep.OK():
				log.Warn("gc finished with problems", "problems", rep.Problems)
			default:
				log.Info("gc finished", "blobs", rep.Total.Blobs, "bytes", rep.Total.Bytes,
					"uploads", rep.Total.Uploads, "elapsed", rep.Elapsed.Round(time.Millisecond))
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
