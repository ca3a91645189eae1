package store

import (
	"bytes"
	"fmt"
	"testing"
)

func TestManifestCacheBoundedByBytes(t *testing.T) {
	const budget = 10 << 10
	c := newManifestCache(budget)
	for i := range 100 {
		c.Add(fmt.Sprint(i), cachedManifest{content: bytes.Repeat([]byte{'x'}, 3<<10)})
		if b := c.Bytes(); b > budget {
			t.Fatalf("after %d adds the cache holds %d bytes, budget %d", i+1, b, budget)
		}
	}
	if _, ok := c.Get("99"); !ok {
		t.Error("the newest entry was evicted")
	}
	if _, ok := c.Get("0"); ok {
		t.Error("the oldest entry is still cached past the budget")
	}
	// Re-adding a key replaces it without counting it twice.
	for range 5 {
		c.Add("99", cachedManifest{content: make([]byte, 3<<10)})
	}
	if b := c.Bytes(); b != 9<<10 {
		t.Errorf("bytes = %d after re-adding one key, want %d", b, 9<<10)
	}
	c.Add("huge", cachedManifest{content: make([]byte, budget+1)})
	if _, ok := c.Get("huge"); ok {
		t.Error("a manifest larger than the budget was cached")
	}
	c.Remove("99")
	if b := c.Bytes(); b != 6<<10 {
		t.Errorf("bytes = %d after Remove, want %d", b, 6<<10)
	}
}
