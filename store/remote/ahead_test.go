package remote

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// logged counts the requests of the fake's log that start with prefix.
func (f *fakeRegistry) logged(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range f.log {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// TestListAhead: listing repositories one after another in catalog order
// fetches the following ones' tags and tag digests in the background, so
// that their own listings send no request; a listing out of order starts
// nothing.
func TestListAhead(t *testing.T) {
	f := newFakeRegistry()
	const n = 40
	for i := range n {
		f.tag(fmt.Sprintf("r%02d/app", i), "v1", []byte(fmt.Sprint("layer ", i)))
	}
	st := newTestStore(t, f, Options{CatalogTTL: time.Hour, AttrTTL: time.Hour})
	ctx := context.Background()
	list := func(i int) {
		t.Helper()
		r, _ := st.Repository(fmt.Sprintf("r%02d/app", i))
		revs, err := r.Manifests().List(ctx)
		if err != nil || len(revs) != 1 {
			t.Fatalf("r%02d: revisions %v, %v", i, revs, err)
		}
	}
	if _, err := st.Children(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// Out of order (10, then 5): nothing fetched ahead.
	list(10)
	list(5)
	s := st.(*remoteStore)
	s.mu.Lock()
	started := len(s.ahead.inflight) + len(s.ahead.fetched)
	s.mu.Unlock()
	if started != 0 {
		t.Fatalf("%d repositories fetched ahead after listings out of order", started)
	}

	// In order (6, 7, ...): the aheadRepos after 6 are fetched.
	list(6)
	for i := 7; i <= 6+aheadRepos; i++ {
		for deadline := time.Now().Add(10 * time.Second); f.logged(fmt.Sprintf("GET /v2/r%02d/app/manifests/v1", i)) == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("r%02d's tag was not fetched ahead", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := 7; i < 6+aheadRepos; i++ {
		f.mu.Lock()
		before := len(f.log)
		f.mu.Unlock()
		list(i)
		f.mu.Lock()
		sent := f.log[before:]
		f.mu.Unlock()
		// Listing i fetches one more ahead (i+aheadRepos), nothing of i.
		for _, l := range sent {
			if strings.Contains(l, fmt.Sprintf("/r%02d/", i)) {
				t.Errorf("listing r%02d after its fetch ahead sent %q", i, l)
			}
		}
	}
	for i := 7; i <= 6+aheadRepos; i++ {
		if got := f.logged(fmt.Sprintf("GET /v2/r%02d/app/tags/list", i)); got != 1 {
			t.Errorf("r%02d: %d tags/list requests, want 1", i, got)
		}
	}
}
