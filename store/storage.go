package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
)

// Options configures New.
type Options struct {
	// Cache serves blob reads. When nil a store-private cache of
	// DefaultCacheBudget bytes is made, so reads still go through blocks.
	Cache *cache.Cache
	// Logger receives the store's log records; nil means slog.Default().
	Logger *slog.Logger
	// SigningKey signs schema1 manifests that were stored without
	// signatures; generated (ECDSA P-256) when nil.
	SigningKey libtrust.PrivateKey
}

// Defaults used when Options leaves them unset.
const (
	DefaultCacheBudget    = 64 << 20
	DefaultCacheBlockSize = 1 << 20
)

// storage is the Store implementation. It holds only what is shared by every
// per-use service value; it is safe for concurrent use.
type storage struct {
	// driver is the driver New was given, its calls counted and its errors
	// translated into the store's.
	driver driver.StorageDriver
	calls  *callCounter
	// badLinks counts the links found corrupt (Stats.BadLinks).
	badLinks atomic.Int64
	// healed counts, by digest, the damaged blobs replaced by verified
	// bytes (a *atomic.Int64 each); part of the blob's cache key.
	healed sync.Map
	// forgets counts the blobs found deleted or replaced (forgetBlob,
	// replaced): first bytes fetched before a change are not served after
	// it (LayerInfo.first).
	forgets atomic.Int64
	// sizeReports says whether the driver tells an object's size with its
	// first bytes (driver.WithSizeReport): 0 not known yet, 1 it does, -1
	// it does not, and LookupFirst states the data instead.
	sizeReports atomic.Int32
	cache       *cache.Cache
	log         *slog.Logger
	key         libtrust.PrivateKey
	// manifests caches Get results by repository and digest. Revisions are
	// immutable, so entries never go stale; caching also keeps the
	// signature of a re-signed schema1 manifest stable within the process.
	manifests *manifestCache
	// writes fences a collector in this process off what the store's
	// writers have in flight (fence.go).
	writes *writeTracker
}

// New returns a Store on d in docker/distribution's v2 layout below
// /docker/registry/v2.
func New(d driver.StorageDriver, opts Options) (Store, error) {
	if d == nil {
		return nil, errors.New("store: nil driver")
	}
	counted := newCallCounter(d)
	s := &storage{driver: translated{counted}, calls: counted, cache: opts.Cache, log: opts.Logger, key: opts.SigningKey, writes: newWriteTracker()}
	if s.cache == nil {
		s.cache = cache.New(DefaultCacheBudget, DefaultCacheBlockSize)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.key == nil {
		k, err := libtrust.GenerateECP256PrivateKey()
		if err != nil {
			return nil, fmt.Errorf("store: generating schema1 signing key: %w", err)
		}
		s.key = k
	}
	s.manifests = newManifestCache(manifestCacheBudget)
	return s, nil
}

// reservedRepoChildren are the children whose presence makes a directory a
// repository.
var reservedRepoChildren = map[string]bool{
	layersDirName:    true,
	manifestsDirName: true,
	uploadsDirName:   true,
}

// Children implements Store. A prefix that does not exist in storage has no
// children (nil, nil): namespaces only exist through the repositories in
// them. Directory names that are not valid path components are skipped.
func (s *storage) Children(ctx context.Context, prefix string) ([]string, error) {
	dir, err := pathFor(repositoriesRootPathSpec{prefix: prefix})
	if err != nil {
		return nil, err
	}
	// One Walk that never descends lists the children with their kinds in
	// a single listing, where List would need a Stat per entry.
	var out []string
	err = s.driver.Walk(driver.WithChildrenWalk(ctx), dir, func(fi driver.FileInfo) error {
		base := path.Base(fi.Path)
		if fi.IsDir && !strings.HasPrefix(base, "_") && checkRepositoryName(base) == nil {
			out = append(out, base)
		}
		if fi.IsDir {
			return driver.ErrSkipDir
		}
		return nil
	})
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

// IsRepository implements Store.
func (s *storage) IsRepository(ctx context.Context, name string) (bool, error) {
	dir, err := pathFor(repositoryPathSpec{name: name})
	if err != nil {
		return false, err
	}
	return s.hasRepoMarker(ctx, dir)
}

// IsDirectory implements Store. A List answers with the directory's
// entries or not-found, on every driver in one request for a repository
// (three entries at most); a Stat costs an object store two (a HEAD, then
// a listing of one key), and the entries are not needed.
func (s *storage) IsDirectory(ctx context.Context, name string) (bool, error) {
	dir, err := pathFor(repositoryPathSpec{name: name})
	if err != nil {
		return false, err
	}
	if _, err := s.driver.List(ctx, dir); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// hasRepoMarker tells whether the directory has a _layers, _manifests or
// _uploads child.
func (s *storage) hasRepoMarker(ctx context.Context, dir string) (bool, error) {
	entries, err := s.driver.List(ctx, dir)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
	for _, e := range entries {
		if reservedRepoChildren[path.Base(e)] {
			return true, nil
		}
	}
	return false, nil
}

// Repositories implements Store. Like the registry's catalog it walks
// repositories/ without descending into reserved directories; a directory
// counts when it has a _layers (the catalog's rule), _manifests or _uploads
// child.
func (s *storage) Repositories(ctx context.Context) ([]string, error) {
	root := mustPath(repositoriesRootPathSpec{})
	seen := map[string]bool{}
	err := s.driver.Walk(ctx, root, func(fi driver.FileInfo) error {
		if !fi.IsDir {
			return nil
		}
		base := path.Base(fi.Path)
		if !strings.HasPrefix(base, "_") {
			return nil
		}
		if reservedRepoChildren[base] {
			name := strings.TrimPrefix(path.Dir(fi.Path), root+"/")
			if checkRepositoryName(name) == nil {
				seen[name] = true
			}
		}
		return driver.ErrSkipDir
	})
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// Repository implements Store.
func (s *storage) Repository(name string) (Repository, error) {
	if err := checkRepositoryName(name); err != nil {
		return nil, err
	}
	return &repository{s: s, name: name}, nil
}

// RemoveRepository implements Store. A repository holding a nested
// repository (a/b below a) is not empty: deleting its directory would take
// the nested one with it. For the same reason a namespace directory that
// holds repositories but is none itself is ErrRepositoryNotEmpty, which is
// what rmdir of it must report.
func (s *storage) RemoveRepository(ctx context.Context, name string) error {
	dir, err := pathFor(repositoryPathSpec{name: name})
	if err != nil {
		return err
	}
	entries, err := s.driver.List(ctx, dir)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: %s", ErrRepositoryUnknown, name)
		}
		return err
	}
	if len(entries) == 0 {
		// A directory holding nothing: a namespace whose last repository
		// was removed, on a driver that keeps directories. It goes too.
		if err := s.driver.Delete(ctx, dir); err != nil && !isNotFound(err) {
			return err
		}
		return nil
	}
	isRepo := false
	for _, e := range entries {
		base := path.Base(e)
		switch {
		case reservedRepoChildren[base]:
			isRepo = true
		case !strings.HasPrefix(base, "_"):
			return fmt.Errorf("%w: %s holds %s", ErrRepositoryNotEmpty, name, base)
		}
	}
	if !isRepo {
		return fmt.Errorf("%w: %s", ErrRepositoryUnknown, name)
	}
	r := &repository{s: s, name: name}
	checks := []struct {
		what string
		list func(context.Context) (int, error)
	}{
		{"layers", func(ctx context.Context) (int, error) { l, err := r.Layers().List(ctx); return len(l), err }},
		{"manifests", func(ctx context.Context) (int, error) { l, err := r.Manifests().List(ctx); return len(l), err }},
		{"tags", func(ctx context.Context) (int, error) { l, err := r.Tags().List(ctx); return len(l), err }},
		{"uploads", func(ctx context.Context) (int, error) { l, err := r.Uploads().List(ctx); return len(l), err }},
	}
	for _, c := range checks {
		n, err := c.list(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %s has %s", ErrRepositoryNotEmpty, name, c.what)
		}
	}
	if err := s.driver.Delete(ctx, dir); err != nil && !isNotFound(err) {
		return err
	}
	s.log.Debug("repository removed", "repository", name)
	return nil
}

// Usage implements Store. The driver the store was given is asked
// directly: the wrappers around it (counting, error translation) do not
// carry optional interfaces.
func (s *storage) Usage(ctx context.Context) (Usage, error) {
	u, ok := s.calls.StorageDriver.(driver.UsageReporter)
	if !ok {
		return Usage{}, fmt.Errorf("%w: usage", ErrUnsupported)
	}
	du, err := u.Usage(ctx)
	if err != nil {
		return Usage{}, storageErr("Usage", "/", err)
	}
	return Usage(du), nil
}

// list returns the base names of a directory's children; a missing
// directory has none.
func (s *storage) list(ctx context.Context, dir string) ([]string, error) {
	entries, err := s.driver.List(ctx, dir)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = path.Base(e)
	}
	return out, nil
}

// listLinked returns the digests of the <hex> directories below a sha256/
// directory that hold a link file, sorted. The registry deletes a layer or
// a revision by removing only its link file and leaves the directory, so a
// directory alone does not count. One Walk that stops below <hex>/ does it
// without a Stat per entry. A link whose size is not a digest's is re-read
// (it may be being rewritten); one that stays bad is skipped, logged and
// counted, so it never hides the others.
func (s *storage) listLinked(ctx context.Context, dir string) ([]digest.Digest, error) {
	ls, err := s.listLinkedTimes(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := make([]digest.Digest, len(ls))
	for i, l := range ls {
		out[i] = l.Digest
	}
	return out, nil
}

// listLinkedTimes is listLinked with each link's modification time, which
// the walk's FileInfo carries: no driver call per entry.
func (s *storage) listLinkedTimes(ctx context.Context, dir string) ([]Linked, error) {
	var out []Linked
	type link struct {
		path  string
		dgst  digest.Digest
		mtime time.Time
	}
	var suspect []link
	err := s.driver.Walk(ctx, dir, func(fi driver.FileInfo) error {
		l, err := ParsePath(fi.Path)
		switch {
		case err != nil:
			return skipIfDir(fi)
		case l.Kind.IsLink() && !fi.IsDir:
			if fi.Size != int64(linkSize) {
				suspect = append(suspect, link{fi.Path, l.LinkTarget(), fi.ModTime})
				return nil
			}
			out = append(out, Linked{Digest: l.LinkTarget(), ModTime: fi.ModTime})
		case fi.IsDir && (l.Kind == PathLayer || l.Kind == PathRevision || l.Kind == PathSignature):
			return nil
		}
		return skipIfDir(fi) // signatures/ and the like
	})
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	for _, l := range suspect {
		_, err := s.readLink(ctx, l.path)
		switch {
		case err == nil:
			out = append(out, Linked{Digest: l.dgst, ModTime: l.mtime})
		case isNotFound(err):
		case s.skipBadLink(err):
		default:
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// linkTime returns the modification time of the link file p (when it was
// written: a link is never changed in place by regfs, and the registry
// rewrites a tag's current link on every push), with one driver Stat.
// A missing link is a *StorageError of Kind ErrNotFound.
func (s *storage) linkTime(ctx context.Context, p string) (time.Time, error) {
	fi, err := s.driver.Stat(ctx, p)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime, nil
}

// skipBadLink tells whether err is a corrupt link, which a listing leaves
// out, and logs it when it is (readLink counted it).
func (s *storage) skipBadLink(err error) bool {
	var bad *CorruptLinkError
	if !errors.As(err, &bad) {
		return false
	}
	s.log.Warn("corrupt link skipped", "path", bad.Path, "error", err)
	return true
}

// linkRereads are the pauses between the reads of a link that is empty,
// short or not a digest, before it is declared corrupt. The registry
// rewrites a tag's link in place (truncate, then write), so a reader can
// catch it empty for the moment between the two. On a loaded machine the
// registry can be descheduled between the two for tens of milliseconds
// (the co-tenancy soak saw a 15 ms budget run out), so the pauses double up
// to 255 ms in all; a link that reads well costs nothing, and one that
// stays bad costs the wait once per read.
var linkRereads = []time.Duration{1 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 8 * time.Millisecond,
	16 * time.Millisecond, 32 * time.Millisecond, 64 * time.Millisecond, 128 * time.Millisecond}

// readLink reads a link file and parses the digest in it. A missing link is
// a *StorageError of Kind ErrNotFound (isNotFound) for the caller to
// translate. A link that stays empty, short or malformed over the re-reads
// is a *CorruptLinkError, counted in Stats.BadLinks.
func (s *storage) readLink(ctx context.Context, p string) (digest.Digest, error) {
	for i := 0; ; i++ {
		b, err := s.driver.GetContent(ctx, p)
		if err != nil {
			return "", err
		}
		d := digest.Digest(b)
		if checkStoredDigest(d) == nil {
			return d, nil
		}
		if i == len(linkRereads) {
			s.badLinks.Add(1)
			return "", &CorruptLinkError{Path: p, Content: b}
		}
		t := time.NewTimer(linkRereads[i])
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", storageErr("GetContent", p, context.Cause(ctx))
		}
	}
}

// writeLink writes a link file: the digest string, 71 bytes, no newline.
func (s *storage) writeLink(ctx context.Context, p string, d digest.Digest) error {
	return s.driver.PutContent(ctx, p, []byte(d.String()))
}

// exists tells whether an object or directory exists; errors other than
// not-found are returned.
func (s *storage) exists(ctx context.Context, p string) (bool, error) {
	_, err := s.driver.Stat(ctx, p)
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, err
}

// isNotFound tells a driver's PathNotFoundError from other failures.
func isNotFound(err error) bool { return driver.IsNotFound(err) }

// repository is the Repository implementation: a name and the shared store.
type repository struct {
	s    *storage
	name string
}

func (r *repository) Name() string               { return r.name }
func (r *repository) Layers() LayerService       { return &layerService{repo: r} }
func (r *repository) Uploads() UploadService     { return &uploadService{repo: r} }
func (r *repository) Manifests() ManifestService { return &manifestService{repo: r} }
func (r *repository) Tags() TagService           { return &tagService{repo: r} }
