package remote

import (
	"context"
	"slices"
	"time"
)

// Listing read-ahead. A walk of the tree (ls -l of many repositories, find,
// du) lists one repository's tags and revisions after another, in name
// order, and each listing costs a tags/list and a GET per tag, asked one
// after the other as the kernel sends them. When a repository is listed
// right after its predecessor in the catalog, the store fetches the next
// aheadRepos repositories' listings in the background, aheadParallel at a
// time, into the recent cache (so they are kept for Options.AttrTTL, as
// any answer is); a listing that arrives while its fetch is in flight
// waits for it instead of asking again.
//
// A walk may look the repositories up before it lists any: ls -l of many
// directories stats every argument first, a few FUSE requests each and no
// registry request, while the registry idles. Lookups of repositories in
// catalog order therefore fetch ahead as listings do, but no further than
// aheadLookupRepos past where their run began or the walk last listed, so
// that a long run of lookups cannot fetch more than the listings that
// follow use while the answers are fresh.
//
// The fetches queue for at most aheadParallel workers, which exit when the
// queue is empty: a goroutine per repository would start cold each time,
// and its stack would grow anew to the depth of an HTTP request.
const (
	// aheadRepos is how many repositories after the one listed are
	// fetched ahead.
	aheadRepos = 16
	// aheadParallel bounds the fetches in flight across the store.
	aheadParallel = 4
	// aheadLookupRepos bounds how far lookups alone fetch ahead.
	aheadLookupRepos = 256
	// aheadWaitMax bounds how long a listing waits for its repository's
	// fetch in flight before it asks itself: a request the registry never
	// answers holds the fetch for the whole timeout (Options.Timeout), and
	// should not hold the listing as long.
	aheadWaitMax = time.Second
	// aheadMaxTags is the most tags of a repository whose digests a fetch
	// ahead resolves (a GET each); one with more has only its tag list
	// fetched.
	aheadMaxTags = 8
)

// aheadKey marks the context of a fetch ahead: it neither waits for
// itself nor starts more.
type aheadKey struct{}

// ahead is the read-ahead's state; its fields are guarded by
// remoteStore.mu.
type ahead struct {
	// last is the catalog index of the repository listed or looked up
	// last (-1: none).
	last int
	// anchor is the catalog index lookups fetch ahead from: of the last
	// listing, or where the current run of lookups began.
	anchor int
	// inflight holds a channel per repository being fetched, closed when
	// the fetch ends.
	inflight map[string]chan struct{}
	// fetched is when each repository was last fetched ahead.
	fetched map[string]time.Time
	// queue holds the repositories waiting for a worker, in order;
	// workers is how many are running.
	queue   []string
	workers int
}

func newAhead() *ahead {
	return &ahead{last: -1, inflight: map[string]chan struct{}{}, fetched: map[string]time.Time{}}
}

// listed is called when repo's tags are listed: it waits for a fetch of
// repo in flight (at most aheadWaitMax), and moves the read-ahead to repo
// (step). A fetch still queued is dropped instead, and the listing asks
// itself rather than wait for the fetches queued before it.
func (s *remoteStore) listed(ctx context.Context, repo string) {
	if ctx.Value(aheadKey{}) != nil || s.recent.ttl <= 0 {
		return
	}
	s.mu.Lock()
	a := s.ahead
	wait := a.inflight[repo]
	if i := slices.Index(a.queue, repo); i >= 0 {
		a.queue = slices.Delete(a.queue, i, i+1)
		close(wait)
		delete(a.inflight, repo)
		wait = nil
	}
	s.step(repo, true)
	s.mu.Unlock()
	if wait != nil {
		t := time.NewTimer(aheadWaitMax)
		select {
		case <-wait:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// lookedUp is called when repo is looked up: it moves the read-ahead to
// repo (step), without waiting.
func (s *remoteStore) lookedUp(ctx context.Context, repo string) {
	if ctx.Value(aheadKey{}) != nil || s.recent.ttl <= 0 {
		return
	}
	s.mu.Lock()
	s.step(repo, false)
	s.mu.Unlock()
}

// step moves the read-ahead to repo, listed or looked up: when repo
// follows the repository listed or looked up before it in the catalog, it
// queues the fetches of the ones after it. Its caller holds s.mu.
func (s *remoteStore) step(repo string, listing bool) {
	a := s.ahead
	if s.catalogAt.IsZero() || time.Since(s.catalogAt) >= s.catalogTTL || !s.catalogOK {
		return
	}
	names := s.catalogSorted
	i, ok := slices.BinarySearch(names, repo)
	if !ok || i == a.last {
		return
	}
	seq := a.last >= 0 && i > a.last && i <= a.last+aheadRepos+1
	if listing || !seq {
		a.anchor = i
	}
	if seq {
		end := i + 1 + aheadRepos
		if !listing {
			end = min(end, a.anchor+aheadLookupRepos+1)
		}
		for _, n := range names[i+1 : max(i+1, min(end, len(names)))] {
			if a.inflight[n] != nil || time.Since(a.fetched[n]) < s.recent.ttl/2 {
				continue
			}
			a.inflight[n] = make(chan struct{})
			a.queue = append(a.queue, n)
		}
	}
	a.last = i
	for ; a.workers < min(aheadParallel, len(a.queue)); a.workers++ {
		go s.aheadWorker()
	}
}

// aheadWorker fetches the queued repositories until none is left.
func (s *remoteStore) aheadWorker() {
	a := s.ahead
	for {
		s.mu.Lock()
		if len(a.queue) == 0 {
			a.workers--
			s.mu.Unlock()
			return
		}
		repo := a.queue[0]
		a.queue = a.queue[1:]
		s.mu.Unlock()
		s.fetchAhead(repo)
	}
}

// fetchAhead lists repo's tags and resolves them (bounded), as a listing
// of the repository would, with the answers kept in recent.
func (s *remoteStore) fetchAhead(repo string) {
	a := s.ahead
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), aheadKey{}, true), s.c.timeout)
	defer cancel()
	defer func() {
		s.mu.Lock()
		close(a.inflight[repo])
		delete(a.inflight, repo)
		a.fetched[repo] = time.Now()
		if len(a.fetched) > maxRecent {
			clear(a.fetched)
		}
		s.mu.Unlock()
	}()
	tags, err := (&tagService{&repository{s: s, name: repo}}).list(ctx)
	if err != nil || len(tags) > aheadMaxTags {
		return
	}
	_, _, _ = s.reachable(ctx, repo)
}
