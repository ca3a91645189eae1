package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/regfs/regfs/driver"
)

// WalkEntry is one entry of the storage tree, as WalkBlobs and
// WalkRepositories yield it.
type WalkEntry struct {
	driver.FileInfo
	// Location is where the entry is in the layout; zero when Err wraps
	// ErrNotInLayout.
	Location Location
	// Err is nil for an entry in its place. Otherwise it is either an
	// error wrapping ErrNotInLayout (the entry has no place in the layout:
	// a name that is not a digest, tag or upload ID where one belongs, an
	// object where a directory belongs or the other way round; the walk
	// does not descend into it), or the driver's error for a directory
	// that could not be listed (its children are not visited; the
	// directory itself may have been yielded before, without Err).
	Err error
}

// Unreadable tells an entry whose directory could not be listed.
func (e WalkEntry) Unreadable() bool {
	return e.Err != nil && !errors.Is(e.Err, ErrNotInLayout)
}

// WalkOptions configures WalkBlobs and WalkRepositories.
type WalkOptions struct {
	// Workers is how many subtrees are walked at once; zero means
	// DefaultWalkWorkers.
	Workers int
}

// DefaultWalkWorkers is how many subtrees are walked at once by default: a
// few concurrent listings hide a disk's or an object store's latency
// without flooding either.
const DefaultWalkWorkers = 4

// WalkFunc is called for each entry of a walk. Returning driver.ErrSkipDir
// for a directory skips its children; any other error stops the walk and
// is returned by it.
type WalkFunc func(WalkEntry) error

// WalkBlobs calls fn for every entry below blobs/sha256/ (the prefix
// directories, the blob directories and their data), in walk order within
// each prefix directory. See WalkRepositories for how it runs.
func WalkBlobs(ctx context.Context, d driver.StorageDriver, opts WalkOptions, fn WalkFunc) error {
	return walkTree(ctx, d, mustPath(blobsPathSpec{}), opts, fn)
}

// WalkRepositories calls fn for every entry below repositories/:
// repositories at any depth (and the namespaces holding them), their
// _layers, _manifests (revisions with their signatures, tags with current
// and index) and _uploads.
//
// Each directory directly below the root is walked as a whole by one
// goroutine, up to opts.Workers of them at once: fn is called
// concurrently, but the entries below one of those directories (so every
// entry of one repository) come from one goroutine, parents before
// children, siblings in name order. Symbolic links are yielded (with
// FileInfo.Symlink) and never descended into.
//
// A directory that cannot be listed is yielded with its error in Err and
// the walk goes on with what comes after it; a missing root yields
// nothing. The returned error is fn's, or the context's.
func WalkRepositories(ctx context.Context, d driver.StorageDriver, opts WalkOptions, fn WalkFunc) error {
	return walkTree(ctx, d, mustPath(repositoriesRootPathSpec{}), opts, fn)
}

// fnError carries an error returned by a WalkFunc through a driver's Walk,
// so that it is told from the driver's own failures.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// walker is one walk of a tree.
type walker struct {
	d  driver.StorageDriver
	fn WalkFunc
	// mu guards first, the first error of a worker.
	mu    sync.Mutex
	first error
}

func walkTree(ctx context.Context, d driver.StorageDriver, root string, opts WalkOptions, fn WalkFunc) error {
	if opts.Workers <= 0 {
		opts.Workers = DefaultWalkWorkers
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &walker{d: d, fn: fn}
	var units []string
	children, err := w.children(ctx, root)
	if err != nil {
		if driver.IsNotFound(err) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return w.unwrap(w.yield(WalkEntry{FileInfo: driver.FileInfo{Path: root, IsDir: true}, Location: mustParse(root), Err: err}))
	}
	for _, c := range children {
		switch err := w.visit(c); {
		case err == driver.ErrSkipDir:
		case err != nil:
			return w.unwrap(err)
		case c.IsDir:
			units = append(units, c.Path)
		}
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(opts.Workers, len(units)) {
		wg.Go(func() {
			for u := range work {
				if err := w.walkDir(ctx, u); err != nil {
					w.fail(err)
					cancel()
				}
			}
		})
	}
feed:
	for _, u := range units {
		select {
		case work <- u:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first != nil {
		return w.unwrap(w.first)
	}
	return ctx.Err()
}

func (w *walker) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first == nil {
		w.first = err
	}
}

func (w *walker) unwrap(err error) error {
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	return err
}

// yield calls fn, wrapping its error.
func (w *walker) yield(e WalkEntry) error {
	switch err := w.fn(e); {
	case err == nil:
		return nil
	case err == driver.ErrSkipDir:
		return err
	default:
		return fnError{err}
	}
}

// visit parses fi, yields it, and tells the driver's Walk whether to
// descend.
func (w *walker) visit(fi driver.FileInfo) error {
	l, err := ParsePath(fi.Path)
	if err == nil && fi.IsDir != l.Kind.isDir() && !fi.Symlink {
		what := "an object where a directory belongs"
		if fi.IsDir {
			what = "a directory where an object belongs"
		}
		l, err = Location{}, fmt.Errorf("%w: %s: %s", ErrNotInLayout, fi.Path, what)
	}
	if yerr := w.yield(WalkEntry{FileInfo: fi, Location: l, Err: err}); yerr != nil {
		return yerr
	}
	if err != nil || fi.Symlink {
		return skipIfDir(fi)
	}
	return nil
}

// walkDir yields everything below dir, which was yielded already.
func (w *walker) walkDir(ctx context.Context, dir string) error {
	last := ""
	err := w.d.Walk(ctx, dir, func(fi driver.FileInfo) error {
		last = fi.Path
		return w.visit(fi)
	})
	var fe fnError
	switch {
	case err == nil, driver.IsNotFound(err):
		return nil
	case errors.As(err, &fe), ctx.Err() != nil:
		return err
	}
	return w.resume(ctx, dir, last)
}

// resume goes on with a walk of dir that a failed listing stopped after
// last ("" when nothing was yielded): dir is listed on its own, what was
// visited is skipped, the directories holding last are resumed the same
// way, and what comes after is walked anew. A directory that cannot be
// listed is yielded with the error. Each step goes one level deeper, so a
// failure that stays ends the recursion.
func (w *walker) resume(ctx context.Context, dir, last string) error {
	children, err := w.children(ctx, dir)
	if err != nil {
		if driver.IsNotFound(err) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l, _ := ParsePath(dir)
		return w.yield(WalkEntry{FileInfo: driver.FileInfo{Path: dir, IsDir: true}, Location: l, Err: err})
	}
	for _, c := range children {
		switch {
		case last != "" && (c.Path == last || strings.HasPrefix(last, c.Path+"/")):
			// Yielded already; the failure is below it.
			if c.IsDir && !c.Symlink {
				if err := w.resume(ctx, c.Path, last); err != nil {
					return err
				}
			}
		case last != "" && walkedBefore(c.Path, last):
			// Visited with all its children.
		default:
			switch err := w.visit(c); {
			case err == driver.ErrSkipDir || !c.IsDir:
			case err != nil:
				return err
			default:
				if err := w.walkDir(ctx, c.Path); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// children lists dir one level deep, with each child's FileInfo.
func (w *walker) children(ctx context.Context, dir string) ([]driver.FileInfo, error) {
	var out []driver.FileInfo
	err := w.d.Walk(ctx, dir, func(fi driver.FileInfo) error {
		out = append(out, fi)
		return skipIfDir(fi)
	})
	return out, err
}

// walkedBefore tells whether a comes before b in a walk: parents before
// children, siblings in name order.
func walkedBefore(a, b string) bool {
	for {
		ca, ra, moreA := strings.Cut(a, "/")
		cb, rb, moreB := strings.Cut(b, "/")
		if ca != cb {
			return ca < cb
		}
		if !moreA || !moreB {
			return !moreA && moreB
		}
		a, b = ra, rb
	}
}

// mustParse parses a path the walk starts at.
func mustParse(p string) Location {
	l, err := ParsePath(p)
	if err != nil {
		panic(fmt.Sprintf("store: walk root %s: %v", p, err))
	}
	return l
}

// isDir tells the kinds that are directories.
func (k PathKind) isDir() bool {
	switch k {
	case PathBlobData, PathLayerLink, PathRevisionLink, PathSignatureLink, PathTagCurrentLink, PathTagIndexEntryLink,
		PathUploadData, PathUploadStartedAt, PathUploadExpected, PathUploadHashState, PathUploadStaged:
		return false
	}
	return true
}
