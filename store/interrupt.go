package store

import (
	"context"
	"sync"
)

// GuardWrites returns the context for one request that may change storage
// (a FUSE link, unlink, rename, mkdir, ...), given the request's own
// context, which an interrupt (FUSE_INTERRUPT, sent when a signal reaches
// the blocked caller) cancels.
//
// The interrupt cancels the returned context only while the store has not
// yet started to change storage for the request. Once the first write has
// begun, the request runs to its end uncancelled: an interrupted request
// either changed nothing and fails with EINTR, or finished. Otherwise a
// caller could get EINTR for a tag that was written (the interrupt landing
// between the write and the check after it), and the retry every libc and
// Go make on EINTR would then fail with EEXIST.
func GuardWrites(req context.Context) context.Context {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(req))
	g := &writeGate{}
	context.AfterFunc(req, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.started {
			cancel(context.Cause(req))
		}
	})
	return context.WithValue(ctx, writeGateKey{}, g)
}

type writeGateKey struct{}

// writeGate records whether a guarded request has begun to write.
type writeGate struct {
	mu      sync.Mutex
	started bool
}

// beginWrite is called before every storage change. Under GuardWrites it
// fails if the request was interrupted already, and otherwise marks the
// request as writing, which no interrupt undoes. Elsewhere it only checks
// the context.
func beginWrite(ctx context.Context) error {
	g, _ := ctx.Value(writeGateKey{}).(*writeGate)
	if g == nil {
		return context.Cause(ctx)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	g.started = true
	return nil
}
