package remote

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/store"
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

// TestLookupAhead: looking repositories up one after another in catalog
// order, as ls -l of many directories does before it lists any, fetches
// the following ones' listings in the background, no further than
// aheadLookupRepos past where the lookups began; the listings that follow
// send no request for what was fetched.
func TestLookupAhead(t *testing.T) {
	f := newFakeRegistry()
	n := aheadLookupRepos + 40
	name := func(i int) string { return fmt.Sprintf("r%03d/app", i) }
	for i := range n {
		f.tag(name(i), "v1", []byte(fmt.Sprint("layer ", i)))
	}
	st := newTestStore(t, f, Options{CatalogTTL: time.Hour, AttrTTL: time.Hour})
	ctx := context.Background()
	if _, err := st.Children(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if ok, err := st.IsRepository(ctx, name(i)); err != nil || !ok {
			t.Fatalf("IsRepository(%s) = %v, %v", name(i), ok, err)
		}
	}
	// The first lookup starts no run; the second fetches from the third
	// on, up to aheadLookupRepos past the first.
	last := aheadLookupRepos
	for deadline := time.Now().Add(20 * time.Second); f.logged("GET /v2/"+name(last)+"/manifests/v1") == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%s's tag was not fetched ahead", name(last))
		}
		time.Sleep(time.Millisecond)
	}
	s := st.(*remoteStore)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		busy := len(s.ahead.inflight)
		s.mu.Unlock()
		if busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fetches ahead still in flight", busy)
		}
	}
	for i := range n {
		want := 0
		if i >= 2 && i <= last {
			want = 1
		}
		if got := f.logged("GET /v2/" + name(i) + "/tags/list"); got != want {
			t.Errorf("%s: %d tags/list requests after the lookups, want %d", name(i), got, want)
		}
	}
	// Listing what was fetched sends nothing.
	f.mu.Lock()
	before := len(f.log)
	f.mu.Unlock()
	for i := 2; i <= last; i++ {
		r, _ := st.Repository(name(i))
		if revs, err := r.Manifests().List(ctx); err != nil || len(revs) != 1 {
			t.Fatalf("%s: revisions %v, %v", name(i), revs, err)
		}
	}
	f.mu.Lock()
	sent := slices.Clone(f.log[before:])
	f.mu.Unlock()
	for _, l := range sent {
		for i := 2; i <= last; i++ {
			if strings.Contains(l, "/"+name(i)+"/") {
				t.Errorf("listing %s after its fetch ahead sent %q", name(i), l)
			}
		}
	}
}

// TestReadmeAhead: the README's account of the read-ahead gives the
// numbers the code uses (TestListAhead and TestLookupAhead show the
// behaviour).
func TestReadmeAhead(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := strings.Join(strings.Fields(string(b)), " ")
	for _, want := range []string{
		fmt.Sprintf("after two listings of repositories in a row, the next %d;", aheadRepos),
		fmt.Sprintf("up to %d past the first of them or the last listing.", aheadLookupRepos),
		fmt.Sprintf("waits at most %d s for its own", aheadWaitMax/time.Second),
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md does not say %q", want)
		}
	}
}

// walkRepo names the repositories of stalledWalk.
func walkRepo(i int) string { return fmt.Sprintf("r%02d/app", i) }

// stalledWalk makes a store over n repositories (walkRepo) behind a fake
// registry that answers no tags/list request for whose path stall is true
// until the test ends, and looks the first two repositories up in catalog
// order, which starts the read-ahead.
func stalledWalk(t *testing.T, n int, stall func(path string) bool) store.Store {
	t.Helper()
	f := newFakeRegistry()
	for i := range n {
		f.tag(walkRepo(i), "v1", []byte(fmt.Sprint("layer ", i)))
	}
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/tags/list") && stall(r.URL.Path) {
			<-release
		}
		f.ServeHTTP(w, r)
	})
	st := newTestStore(t, h, Options{CatalogTTL: time.Hour, AttrTTL: time.Hour})
	t.Cleanup(func() { close(release) })
	ctx := context.Background()
	if _, err := st.Children(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if ok, err := st.IsRepository(ctx, walkRepo(i)); err != nil || !ok {
			t.Fatalf("IsRepository(%s) = %v, %v", walkRepo(i), ok, err)
		}
	}
	return st
}

// listWithin lists repo's revisions, failing the test if that takes 10 s
// or fails; it returns how long it took.
func listWithin(t *testing.T, st store.Store, repo string) time.Duration {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		r, _ := st.Repository(repo)
		revs, err := r.Manifests().List(context.Background())
		if err == nil && len(revs) != 1 {
			err = fmt.Errorf("revisions %v", revs)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	case <-time.After(10 * time.Second):
		t.Fatalf("listing %s took over 10 s", repo)
		return 0
	}
}

// TestListingSkipsQueue: a listing of a repository whose fetch ahead is
// still queued behind others asks the registry itself instead of waiting
// for the fetches before it (here stalled).
func TestListingSkipsQueue(t *testing.T) {
	// The first fetches ahead (r02 to r05, one per worker) stall.
	st := stalledWalk(t, 30, func(path string) bool {
		for i := 2; i < 2+aheadParallel; i++ {
			if path == "/v2/"+walkRepo(i)+"/tags/list" {
				return true
			}
		}
		return false
	})
	// r10 is queued behind the stalled fetches.
	s := st.(*remoteStore)
	s.mu.Lock()
	queued := slices.Contains(s.ahead.queue, walkRepo(10))
	s.mu.Unlock()
	if !queued {
		t.Fatalf("%s is not queued for a fetch ahead", walkRepo(10))
	}
	listWithin(t, st, walkRepo(10))
}

// TestListingOutwaitsStalledFetch: a listing whose repository's fetch
// ahead is in flight but gets no answer asks the registry itself after
// aheadWaitMax instead of waiting for the fetch's timeout.
func TestListingOutwaitsStalledFetch(t *testing.T) {
	// The first tags/list of each repository (the fetch ahead's) stalls;
	// later ones are answered.
	var mu sync.Mutex
	seen := map[string]bool{}
	st := stalledWalk(t, 10, func(path string) bool {
		mu.Lock()
		defer mu.Unlock()
		first := !seen[path]
		seen[path] = true
		return first
	})
	// r02's fetch ahead is in flight and stalled.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		started := seen["/v2/"+walkRepo(2)+"/tags/list"]
		mu.Unlock()
		if started {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's fetch ahead did not start", walkRepo(2))
		}
	}
	s := st.(*remoteStore)
	s.mu.Lock()
	inflight := s.ahead.inflight[walkRepo(2)] != nil && !slices.Contains(s.ahead.queue, walkRepo(2))
	s.mu.Unlock()
	if !inflight {
		t.Fatalf("%s's fetch ahead is not in flight", walkRepo(2))
	}
	if d := listWithin(t, st, walkRepo(2)); d < aheadWaitMax/2 {
		t.Errorf("the listing took %v: it did not wait for the fetch in flight", d)
	}
}
