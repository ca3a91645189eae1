package store

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store/internal/drivertest"
)

// walkAll runs both walks and returns the entries by path, failing on
// any path yielded twice without an error.
func walkAll(t *testing.T, d driver.StorageDriver, workers int) map[string]WalkEntry {
	t.Helper()
	var mu sync.Mutex
	got := map[string]WalkEntry{}
	var errs []WalkEntry
	fn := func(e WalkEntry) error {
		mu.Lock()
		defer mu.Unlock()
		if e.Unreadable() {
			errs = append(errs, e)
			return nil
		}
		if _, dup := got[e.Path]; dup {
			t.Errorf("%s yielded twice", e.Path)
		}
		got[e.Path] = e
		return nil
	}
	ctx := context.Background()
	for _, walk := range []func(context.Context, driver.StorageDriver, WalkOptions, WalkFunc) error{WalkBlobs, WalkRepositories} {
		if err := walk(ctx, d, WalkOptions{Workers: workers}, fn); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range errs {
		got["unreadable:"+e.Path] = e
	}
	return got
}

// TestWalkYieldsTheTree checks that the walks yield every directory and
// object below blobs/sha256 and repositories/ once, parsed, on both
// drivers, with any number of workers.
func TestWalkYieldsTheTree(t *testing.T) {
	for _, dc := range drivers {
		for _, workers := range []int{1, 3} {
			td := dc.new(t, testdataRoot)
			want := map[string]bool{}
			for p := range snapshot(t, td) {
				if strings.HasPrefix(p, mustPath(blobsPathSpec{})+"/") || strings.HasPrefix(p, mustPath(repositoriesRootPathSpec{})+"/") {
					want[p] = true
				}
			}
			if dc.name == "inmemory" && len(want) < 40 {
				t.Fatalf("testdata has only %d paths", len(want))
			}
			got := walkAll(t, td, workers)
			for p, e := range got {
				if !want[p] {
					t.Errorf("%s/%d: yielded %s, not in the tree", dc.name, workers, p)
					continue
				}
				if e.Err != nil {
					t.Errorf("%s: %v", p, e.Err)
				}
				if back, err := e.Location.Path(); err != nil || back != p {
					t.Errorf("%s parsed as %+v, whose path is %q, %v", p, e.Location, back, err)
				}
			}
			for p := range want {
				if _, ok := got[p]; !ok {
					t.Errorf("%s/%d: %s not yielded", dc.name, workers, p)
				}
			}
		}
	}
}

// TestWalkOrderWithinARepository checks the order consumers rely on:
// within one repository, parents before children and siblings sorted, so
// revisions come before tags.
func TestWalkOrderWithinARepository(t *testing.T) {
	td := drivers[0].new(t, testdataRoot)
	var mu sync.Mutex
	byRepo := map[string][]string{}
	err := WalkRepositories(context.Background(), td, WalkOptions{Workers: 4}, func(e WalkEntry) error {
		mu.Lock()
		defer mu.Unlock()
		byRepo[e.Location.Repository] = append(byRepo[e.Location.Repository], e.Path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for repo, paths := range byRepo {
		if !slices.IsSortedFunc(paths, func(a, b string) int {
			if walkedBefore(a, b) {
				return -1
			}
			return 1
		}) {
			t.Errorf("%s: entries out of walk order: %v", repo, paths)
		}
	}
	if len(byRepo["library/ubuntu"]) == 0 || len(byRepo["hello"]) == 0 {
		t.Errorf("repositories walked: %v", slices.Collect(maps.Keys(byRepo)))
	}
}

func TestWalkedBefore(t *testing.T) {
	order := []string{"/a", "/a/b", "/a/b/c", "/a/b-c", "/a/b.d", "/a/ba", "/a0", "/b"}
	for i := range order {
		for j := range order {
			if got := walkedBefore(order[i], order[j]); got != (i < j) {
				t.Errorf("walkedBefore(%s, %s) = %v", order[i], order[j], got)
			}
		}
	}
}

// TestWalkUnexpectedEntries checks that entries with no place in the
// layout are yielded with ErrNotInLayout and not descended into.
func TestWalkUnexpectedEntries(t *testing.T) {
	td := drivers[0].new(t, testdataRoot)
	ctx := context.Background()
	layers := mustPath(layersPathSpec{name: "hello"})
	for _, p := range []string{
		layers + "/latest/link",                                                       // a directory not named by a digest
		mustPath(blobsPathSpec{}) + "/zz/x/data",                                      // a prefix that is no hex
		mustPath(repositoryPathSpec{name: "hello"}) + "/_x/y",                         // an unknown reserved name
		mustPath(manifestTagCurrentLinkPathSpec{name: "hello", tag: "new"}) + "/data", // link as a directory
	} {
		if err := td.PutContent(ctx, p, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	got := walkAll(t, td, 2)
	for _, p := range []string{
		layers + "/latest",
		mustPath(blobsPathSpec{}) + "/zz",
		mustPath(repositoryPathSpec{name: "hello"}) + "/_x",
		mustPath(manifestTagCurrentLinkPathSpec{name: "hello", tag: "new"}),
	} {
		e, ok := got[p]
		if !ok || !errors.Is(e.Err, ErrNotInLayout) || e.Location.Kind != 0 {
			t.Errorf("%s: %+v", p, e)
		}
		for q := range got {
			if strings.HasPrefix(q, p+"/") {
				t.Errorf("walked below the unexpected %s: %s", p, q)
			}
		}
	}
}

// TestWalkGoesOnAfterAnUnreadableDirectory checks that a directory that
// cannot be listed is yielded with its error, and everything else still
// is, wherever the directory is.
func TestWalkGoesOnAfterAnUnreadableDirectory(t *testing.T) {
	for _, dc := range drivers {
		full := walkAll(t, dc.new(t, testdataRoot), 1)
		for _, bad := range []string{
			mustPath(manifestRevisionsPathSpec{name: "library/ubuntu"}),
			mustPath(repositoryPathSpec{name: "library"}),
			mustPath(blobDataPathSpec{digest: tdConfig})[:len(mustPath(blobsPathSpec{}))+3],
			mustPath(layerPathSpec{name: "hello", digest: tdLayerHello}),
			mustPath(blobsPathSpec{}),
		} {
			for _, workers := range []int{1, 4} {
				d := &drivertest.Driver{StorageDriver: dc.new(t, testdataRoot), Unreadable: []string{bad}}
				got := walkAll(t, d, workers)
				e, ok := got["unreadable:"+bad]
				if !ok || !errors.Is(e.Err, drivertest.ErrPermission) || !e.IsDir {
					t.Errorf("%s: unreadable %s yielded as %+v", dc.name, bad, e)
				}
				var missing []string
				for p := range full {
					if _, ok := got[p]; !ok && !strings.HasPrefix(p, bad+"/") && p != bad {
						missing = append(missing, p)
					}
				}
				for p := range got {
					if strings.HasPrefix(p, bad+"/") {
						t.Errorf("%s: yielded %s below the unreadable %s", dc.name, p, bad)
					}
				}
				sort.Strings(missing)
				if len(missing) > 0 {
					t.Errorf("%s/%d: with %s unreadable, not yielded: %v", dc.name, workers, bad, missing)
				}
			}
		}
	}
}

// TestWalkSymlinks checks that a symbolic link is yielded as one and
// nothing below it is visited.
func TestWalkSymlinks(t *testing.T) {
	repoDir := mustPath(repositoryPathSpec{name: "library/ubuntu"})
	data := mustPath(blobDataPathSpec{digest: tdLayerHello})
	d := &drivertest.Driver{StorageDriver: drivers[0].new(t, testdataRoot), Symlinks: []string{repoDir, data}}
	got := walkAll(t, d, 2)
	for _, p := range []string{repoDir, data} {
		if e := got[p]; !e.Symlink || e.IsDir || e.Err != nil {
			t.Errorf("%s: %+v", p, e)
		}
	}
	for p := range got {
		if strings.HasPrefix(p, repoDir+"/") {
			t.Errorf("walked below the link %s: %s", repoDir, p)
		}
	}
}

// TestWalkStopsOnFnError checks that fn's error ends the walk and is
// returned as is, with every worker.
func TestWalkStopsOnFnError(t *testing.T) {
	stop := errors.New("stop")
	for _, workers := range []int{1, 4} {
		td := drivers[0].new(t, testdataRoot)
		err := WalkRepositories(context.Background(), td, WalkOptions{Workers: workers}, func(e WalkEntry) error {
			if e.Location.Kind == PathTagCurrentLink {
				return stop
			}
			return nil
		})
		if err != stop {
			t.Errorf("workers %d: %v, want fn's error", workers, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WalkRepositories(ctx, drivers[0].new(t, testdataRoot), WalkOptions{}, func(WalkEntry) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
