package fs

import (
	"bytes"
	"runtime"
	"testing"
)

// Large reads are answered with the cache's own bytes (blobHandle.Read,
// cache.Reader.Lend): the bytes read are the blob's, a blob larger than
// the cache reads through it, and every loan ends once bazil is done with
// the answers.
func TestReadLendsBlocks(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 40<<20+12345) // 2.5 x the test cache
	d := m.pushBlob("lend", content)
	p := m.path("lend", "_layers", d.String())
	if got := m.readFile(p); !bytes.Equal(got, content) {
		t.Fatalf("read %d bytes, not the blob's %d", len(got), len(content))
	}
	if s := m.cache.Stats(); s.Lends < int64(len(content))/(256<<10) || s.Uncached > 0 {
		t.Errorf("%d reads lent; %d reads around the cache", s.Lends, s.Uncached)
	}
	m.eventually("every loan ended", func() bool {
		runtime.GC()
		return m.cache.Stats().Loans == 0
	})
}
