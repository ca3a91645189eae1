package store

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// manifestCacheBudget bounds the bytes of the manifests the store keeps
// as served by Get. Manifests are usually a few KiB; a budget in bytes
// rather than entries keeps a run of 4 MiB manifests from holding hundreds
// of MiB outside the block cache's budget (cmd/regfs's memory headroom
// counts this budget).
const manifestCacheBudget = 8 << 20

// manifestCache is a byte-budgeted LRU of manifests by repository and
// digest. It is safe for concurrent use.
type manifestCache struct {
	mu     sync.Mutex
	lru    *simplelru.LRU[string, cachedManifest] // guarded by mu
	bytes  int64                                  // guarded by mu
	budget int64
}

type cachedManifest struct {
	content   []byte
	mediaType string
}

func newManifestCache(budget int64) *manifestCache {
	c := &manifestCache{budget: budget}
	// The entry bound is only a backstop: the byte budget decides.
	l, err := simplelru.NewLRU[string, cachedManifest](1<<16, func(_ string, v cachedManifest) {
		c.bytes -= int64(len(v.content))
	})
	if err != nil {
		panic(err) // only for a non-positive size
	}
	c.lru = l
	return c
}

// Get returns the cached entry; callers must not modify its content.
func (c *manifestCache) Get(key string) (cachedManifest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Get(key)
}

// Add caches v under key, evicting the least recently used entries until
// the budget holds; a manifest larger than the whole budget is not kept.
func (c *manifestCache) Add(key string, v cachedManifest) {
	n := int64(len(v.content))
	if n > c.budget {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(key)
	c.lru.Add(key, v)
	c.bytes += n
	for c.bytes > c.budget {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// Remove drops key.
func (c *manifestCache) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(key)
}

// Bytes is what the cached manifests hold now.
func (c *manifestCache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
