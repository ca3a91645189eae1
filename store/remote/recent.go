package remote

import (
	"sync"
	"time"
)

// recent keeps answers of the registry for a short time (Options.AttrTTL),
// so that one ls -l, which lists a repository's tags and revisions and
// then stats each name, costs one tags/list and one manifest GET per tag
// instead of a request per step. What another client changes shows within
// the time, as the kernel's own attribute cache already allows.
type recent struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]recentEntry // guarded by mu
}

type recentEntry struct {
	v  any
	at time.Time
}

// maxRecent bounds the entries kept; past it the map starts over.
const maxRecent = 1 << 16

func newRecent(ttl time.Duration) *recent {
	return &recent{ttl: ttl, m: map[string]recentEntry{}}
}

func (r *recent) get(key string) (any, bool) {
	if r.ttl <= 0 {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[key]
	if !ok || time.Since(e.at) >= r.ttl {
		return nil, false
	}
	return e.v, true
}

func (r *recent) put(key string, v any) {
	if r.ttl <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) >= maxRecent {
		clear(r.m)
	}
	r.m[key] = recentEntry{v: v, at: time.Now()}
}

// dropPrefix forgets every key starting with prefix.
func (r *recent) dropPrefix(prefix string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.m {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			delete(r.m, k)
		}
	}
}
