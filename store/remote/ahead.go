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
const (
	// aheadRepos is how many repositories after the one listed are
	// fetched ahead.
	aheadRepos = 16
	// aheadParallel bounds the fetches in flight across the store.
	aheadParallel = 4
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
	// last is the catalog index of the repository listed last (-1: none).
	last int
	// inflight holds a channel per repository being fetched, closed when
	// the fetch ends.
	inflight map[string]chan struct{}
	// fetched is when each repository was last fetched ahead.
	fetched map[string]time.Time
	sem     chan struct{}
}

func newAhead() *ahead {
	return &ahead{last: -1, inflight: map[string]chan struct{}{}, fetched: map[string]time.Time{}, sem: make(chan struct{}, aheadParallel)}
}

// listed is called when repo's tags are listed: it waits for a fetch of
// repo in flight, and when repo follows the repository listed before it in
// the catalog, starts fetching the ones after it.
func (s *remoteStore) listed(ctx context.Context, repo string) {
	if ctx.Value(aheadKey{}) != nil || s.recent.ttl <= 0 {
		return
	}
	s.mu.Lock()
	a := s.ahead
	wait := a.inflight[repo]
	var start []string
	if fresh := !s.catalogAt.IsZero() && time.Since(s.catalogAt) < s.catalogTTL; fresh && s.catalogOK {
		names := s.catalogSorted
		if i, ok := slices.BinarySearch(names, repo); ok {
			if a.last >= 0 && i > a.last && i <= a.last+aheadRepos+1 {
				for _, n := range names[i+1 : min(i+1+aheadRepos, len(names))] {
					if a.inflight[n] != nil || time.Since(a.fetched[n]) < s.recent.ttl/2 {
						continue
					}
					a.inflight[n] = make(chan struct{})
					start = append(start, n)
				}
			}
			if i != a.last {
				a.last = i
			}
		}
	}
	s.mu.Unlock()
	for _, n := range start {
		go s.fetchAhead(n)
	}
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
		}
	}
}

// fetchAhead lists repo's tags and resolves them (bounded), as a listing
// of the repository would, with the answers kept in recent.
func (s *remoteStore) fetchAhead(repo string) {
	a := s.ahead
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
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
