// Package remote is a store.Store over a running registry's HTTP API (the
// OCI distribution API): regfs mount --registry URL. It is the second
// implementation of the store's interfaces, beside the storage-backed one;
// fs does not know which one it serves.
//
// # Mapping
//
// Repositories come from /v2/_catalog (paginated by its Link header); where
// the catalog is disabled or partial a repository appears when it is looked
// up by name (a tags/list that answers). Tags are tags/list, revisions the
// manifests reachable from tags (and the children of indexes) plus those
// this process pushed or saw. A layer is stat'ed with HEAD and read with
// ranged GETs through the block cache. The API has no listing of a
// repository's blobs: _layers lists the blobs its manifests reference, plus
// those this process uploaded or linked.
//
// Uploads are the API's chunked uploads: POST starts one, each chunk is a
// PATCH with Content-Range, and Commit checks the digest locally before the
// final PUT ?digest=. The session's URL, offset and hash state are kept in a
// local state directory (Options.StateDir), so an upload resumes after a
// crash: a GET of the session gives the registry's offset, and the smaller
// of the two is trusted. The API cannot list uploads either: an upload
// exists for regfs while its state file does.
//
// # Errors
//
// Every failure is a store error: a 404 the sentinel of the thing missing
// (ErrBlobUnknown, ErrManifestUnknown, ...), 401 and 403 a *StorageError
// wrapping EACCES, a rejected manifest a *ManifestVerificationError with a
// problem per error code the registry sent. 429, 5xx and transport
// failures are retried with exponential backoff, then are a
// *StorageError (EIO); a registry that makes no progress for
// Options.Timeout is a timeout (ETIMEDOUT). Messages name methods and
// paths, never queries, headers or credentials.
package remote

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/store"
)

// Defaults for Options left zero.
const (
	// DefaultTimeout bounds how long a call may go without progress:
	// connecting, the response's headers, or any read of its body.
	DefaultTimeout = 30 * time.Second
	// DefaultAttempts is how many times a call failing with 429, 5xx or
	// a transport error is tried.
	DefaultAttempts = 4
	// DefaultRetryDelay is the backoff before the second attempt, doubled
	// after each further one.
	DefaultRetryDelay = 200 * time.Millisecond
	// DefaultChunkSize is the size of an upload's PATCH chunks (at least
	// the registry's OCI-Chunk-Min-Length).
	DefaultChunkSize = 16 << 20
	// catalogPage and tagsPage are the n= of paginated listings.
	catalogPage = 1000
	tagsPage    = 1000
)

// Options configure New.
type Options struct {
	// URL is the registry's base URL, http:// or https://, host and port.
	URL string
	// CAFile is a PEM file of CA certificates trusted beside the
	// system's; Insecure skips verification of the registry's certificate.
	CAFile   string
	Insecure bool
	// Keychain finds credentials; nil means go-containerregistry's
	// default (docker's config.json and its credential helpers, then
	// $REGISTRY_AUTH_FILE or containers' auth.json).
	Keychain authn.Keychain
	// StateDir keeps the state of uploads in progress (required for
	// writes; uploads are refused without it).
	StateDir string
	// Cache serves blob reads; it should be Ranged (each block one GET).
	// Nil: a private one.
	Cache *cache.Cache
	// Logger receives the store's records; nil means slog.Default().
	Logger *slog.Logger
	// Timeout, Attempts and RetryDelay: see the defaults.
	Timeout    time.Duration
	Attempts   int
	RetryDelay time.Duration
	// ChunkSize is the upload chunk size (DefaultChunkSize if 0).
	ChunkSize int
	// CatalogTTL is how long a fetched catalog answers for the
	// repositories (a registry walks its storage for each one; a walk of
	// the tree would ask for it per directory). Repositories another
	// client adds show within it. DefaultCatalogTTL if 0.
	CatalogTTL time.Duration
	// AttrTTL is how long a repository's tag list, a tag's digest and a
	// revision's existence are reused (see recent); DefaultAttrTTL if 0,
	// none if negative.
	AttrTTL time.Duration
}

// DefaultAttrTTL is Options.AttrTTL's default, the kernel attribute
// time of a mount.
const DefaultAttrTTL = time.Second

// DefaultCatalogTTL is Options.CatalogTTL's default.
const DefaultCatalogTTL = 10 * time.Second

// remoteStore is the Store. It is safe for concurrent use.
type remoteStore struct {
	c     *client
	cache *cache.Cache
	log   *slog.Logger
	state *stateDir
	chunk int

	mu sync.Mutex
	// seen are the repositories found by name or created here (the
	// catalog may be disabled or partial); guarded by mu.
	seen map[string]bool
	// unlisted are the names in seen that catalogSorted lacks (what
	// known adds to the catalog); guarded by mu.
	unlisted map[string]bool
	// revs and layers are, per repository, the revisions and blobs this
	// process pushed, linked or saw; guarded by mu.
	revs   map[string]map[digest.Digest]bool
	layers map[string]map[digest.Digest]bool
	// from is a repository each blob was seen in, the source of a
	// cross-repository mount; guarded by mu.
	from map[digest.Digest]string
	// manifests caches manifests by digest (they never change); guarded
	// by mu.
	manifests     map[digest.Digest]cachedManifest
	manifestBytes int // the bytes in manifests; guarded by mu
	// catalogSorted, catalogOK and catalogAt are the last catalog (its
	// names sorted) and when it was fetched; guarded by mu.
	catalogSorted []string
	catalogOK     bool
	catalogAt     time.Time
	catalogTTL    time.Duration
	recent        *recent
	ahead         *ahead
}

type cachedManifest struct {
	content   []byte
	mediaType string
	// blobs and children are what the manifest references (parseManifest).
	blobs, children []digest.Digest
}

// maxCachedManifestBytes bounds the bytes of the manifest cache (a
// manifest is at most 4 MiB, most are a few KiB).
const maxCachedManifestBytes = 32 << 20

// New returns a Store over the registry at o.URL. It does not call the
// registry: the first request authenticates.
func New(o Options) (store.Store, error) {
	c, err := newClient(o)
	if err != nil {
		return nil, err
	}
	s := &remoteStore{
		c:          c,
		cache:      o.Cache,
		log:        o.Logger,
		chunk:      o.ChunkSize,
		seen:       map[string]bool{},
		unlisted:   map[string]bool{},
		revs:       map[string]map[digest.Digest]bool{},
		layers:     map[string]map[digest.Digest]bool{},
		from:       map[digest.Digest]string{},
		manifests:  map[digest.Digest]cachedManifest{},
		catalogTTL: o.CatalogTTL,
		ahead:      newAhead(),
	}
	attrTTL := o.AttrTTL
	if attrTTL == 0 {
		attrTTL = DefaultAttrTTL
	}
	s.recent = newRecent(attrTTL)
	if s.catalogTTL <= 0 {
		s.catalogTTL = DefaultCatalogTTL
	}
	if s.cache == nil {
		s.cache = cache.NewWithOptions(cache.Options{Budget: store.DefaultCacheBudget, BlockSize: 4 << 20, Ranged: true})
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.chunk <= 0 {
		s.chunk = DefaultChunkSize
	}
	if o.StateDir != "" {
		if s.state, err = openStateDir(o.StateDir, c.base.String()); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// catalog refreshes the registry's repositories (catalogSorted) unless
// they were fetched less than catalogTTL ago. A walk of the tree asks on
// every lookup of a directory, so a fresh catalog costs no copy.
func (s *remoteStore) catalog(ctx context.Context) error {
	s.mu.Lock()
	fresh := !s.catalogAt.IsZero() && time.Since(s.catalogAt) < s.catalogTTL
	s.mu.Unlock()
	if fresh {
		return nil
	}
	names, ok, err := s.fetchCatalog(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	slices.Sort(names)
	s.catalogSorted, s.catalogOK, s.catalogAt = names, ok, time.Now()
	clear(s.unlisted)
	for n := range s.seen {
		s.markSeen(n)
	}
	s.mu.Unlock()
	return nil
}

// fetchCatalog lists the registry's repositories, every page. A registry
// whose catalog is off (404, 401, 403, UNSUPPORTED) lists none: ok is
// false.
func (s *remoteStore) fetchCatalog(ctx context.Context) (names []string, ok bool, err error) {
	next := "/v2/_catalog"
	q := map[string][]string{"n": {itoa(catalogPage)}}
	for next != "" {
		resp, body, err := s.c.do(ctx, &request{method: http.MethodGet, path: next, query: q, scopes: []string{catalogScope()}, want: []int{http.StatusOK}})
		if err != nil {
			if isStatus(err, http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden, http.StatusMethodNotAllowed) ||
				(httpErr(err) != nil && httpErr(err).has("UNSUPPORTED")) {
				return nil, false, nil
			}
			return nil, false, err
		}
		var page struct {
			Repositories []string `json:"repositories"`
		}
		if err := decodeJSON(body, &page, "catalog"); err != nil {
			return nil, false, err
		}
		names = append(names, page.Repositories...)
		next, q = nextLink(resp), nil
	}
	return names, true, nil
}

// markSeen records that name exists; its caller holds s.mu.
func (s *remoteStore) markSeen(name string) {
	s.seen[name] = true
	if _, ok := slices.BinarySearch(s.catalogSorted, name); !ok {
		s.unlisted[name] = true
	}
}

// known is the catalog plus the repositories seen, sorted. The slice may
// be shared: callers do not change it. A walk of the tree asks for it on
// every lookup of a directory, so the catalog's sorted copy is reused as
// it is when nothing is to be added.
func (s *remoteStore) known(ctx context.Context) ([]string, error) {
	if err := s.catalog(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	names := s.catalogSorted
	var extra []string
	for n := range s.unlisted {
		extra = append(extra, n)
	}
	s.mu.Unlock()
	if s.state != nil {
		// A repository with an upload in progress (and nothing else yet)
		// exists for regfs, also after a restart.
		for _, n := range s.state.repos() {
			if _, ok := slices.BinarySearch(names, n); !ok {
				extra = append(extra, n)
			}
		}
	}
	if len(extra) == 0 {
		return names, nil
	}
	names = append(slices.Clone(names), extra...)
	sort.Strings(names)
	return slices.Compact(names), nil
}

// Children implements store.Store.
func (s *remoteStore) Children(ctx context.Context, prefix string) ([]string, error) {
	names, err := s.known(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	p := prefix
	if p != "" {
		p += "/"
	}
	// names is sorted: those under p are one run, from the first >= p.
	i, _ := slices.BinarySearch(names, p)
	for _, n := range names[i:] {
		if !strings.HasPrefix(n, p) {
			break
		}
		rest := n[len(p):]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest = rest[:i]
		}
		if rest != "" && rest[0] != '_' {
			out = append(out, rest)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// IsRepository implements store.Store: a name in the catalog, else one
// whose tags/list answers (a registry without a catalog).
func (s *remoteStore) IsRepository(ctx context.Context, name string) (bool, error) {
	if err := store.ValidateRepositoryName(name); err != nil {
		return false, nil
	}
	s.lookedUp(ctx, name)
	s.mu.Lock()
	seen := s.seen[name]
	s.mu.Unlock()
	if seen || (s.state != nil && slices.Contains(s.state.repos(), name)) {
		return true, nil
	}
	if err := s.catalog(ctx); err != nil {
		return false, err
	}
	s.mu.Lock()
	names, ok := s.catalogSorted, s.catalogOK
	s.mu.Unlock()
	if ok {
		if _, found := slices.BinarySearch(names, name); found {
			return true, nil
		}
		// A namespace of listed repositories is not one itself (the
		// catalog lists every repository that has one); those under it
		// sort right after name+"/".
		if i, _ := slices.BinarySearch(names, name+"/"); i < len(names) && strings.HasPrefix(names[i], name+"/") {
			return false, nil
		}
	}
	// Not listed (no catalog, or made since it was fetched): a repository
	// whose tags/list answers. The list is kept for the readdir that
	// usually follows.
	if _, err := (&tagService{&repository{s: s, name: name}}).list(ctx); err != nil {
		if isStatus(err, http.StatusNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// IsDirectory implements store.Store: a namespace of the repositories the
// mount knows of, or a repository.
func (s *remoteStore) IsDirectory(ctx context.Context, name string) (bool, error) {
	kids, err := s.Children(ctx, name)
	if err != nil || len(kids) > 0 {
		return len(kids) > 0, err
	}
	return s.IsRepository(ctx, name)
}

// sawRepo records that name exists.
func (s *remoteStore) sawRepo(name string) {
	s.mu.Lock()
	s.markSeen(name)
	s.mu.Unlock()
}

// Repositories implements store.Store.
func (s *remoteStore) Repositories(ctx context.Context) ([]string, error) {
	names, err := s.known(ctx)
	return slices.Clone(names), err
}

// Repository implements store.Store.
func (s *remoteStore) Repository(name string) (store.Repository, error) {
	if err := store.ValidateRepositoryName(name); err != nil {
		return nil, err
	}
	return &repository{s: s, name: name}, nil
}

// RemoveRepository implements store.Store. The API cannot remove a
// repository: one with tags, revisions or uploads left is
// ErrRepositoryNotEmpty; an empty one is forgotten here (a registry keeps
// listing it in its catalog until its own garbage collection).
func (s *remoteStore) RemoveRepository(ctx context.Context, name string) error {
	r := &repository{s: s, name: name}
	tags, err := r.Tags().List(ctx)
	if err != nil && !isNotFoundErr(err) {
		return err
	}
	ups, err := r.Uploads().List(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	revs := len(s.revs[name])
	s.mu.Unlock()
	if len(tags) > 0 || len(ups) > 0 || revs > 0 {
		return store.ErrRepositoryNotEmpty
	}
	s.mu.Lock()
	delete(s.seen, name)
	delete(s.unlisted, name)
	delete(s.layers, name)
	s.mu.Unlock()
	return nil
}

// Stats implements store.StatsReporter: the requests sent, by method and
// endpoint ("GET blobs", "HEAD manifests", ...).
func (s *remoteStore) Stats() store.Stats {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	calls := make(map[string]int64, len(s.c.calls))
	for k, v := range s.c.calls {
		calls[k] = v
	}
	return store.Stats{DriverCalls: calls}
}

// Usage implements store.Store: a registry does not say.
func (s *remoteStore) Usage(ctx context.Context) (store.Usage, error) {
	return store.Usage{}, store.ErrUnsupported
}

// repository is one repository of the registry; a cheap value per use.
type repository struct {
	s    *remoteStore
	name string
}

func (r *repository) Name() string                     { return r.name }
func (r *repository) Layers() store.LayerService       { return &layerService{r} }
func (r *repository) Uploads() store.UploadService     { return &uploadService{r} }
func (r *repository) Manifests() store.ManifestService { return &manifestService{r} }
func (r *repository) Tags() store.TagService           { return &tagService{r} }

// path is the API path of the repository's endpoint kind ("tags/list",
// "blobs/<digest>", ...).
func (r *repository) path(rest string) string { return "/v2/" + r.name + "/" + rest }

// note records d as a revision (rev) or blob of the repository.
func (s *remoteStore) note(repo string, d digest.Digest, rev bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markSeen(repo)
	m := s.layers
	if rev {
		m = s.revs
	}
	if m[repo] == nil {
		m[repo] = map[digest.Digest]bool{}
	}
	m[repo][d] = true
	if !rev {
		s.from[d] = repo
	}
}

// forget drops d from what the repository is known to hold.
func (s *remoteStore) forget(repo string, d digest.Digest, rev bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev {
		delete(s.revs[repo], d)
	} else {
		delete(s.layers[repo], d)
		if s.from[d] == repo {
			delete(s.from, d)
		}
	}
}

// noted returns the digests noted for the repository.
func (s *remoteStore) noted(repo string, rev bool) []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.layers
	if rev {
		m = s.revs
	}
	out := make([]digest.Digest, 0, len(m[repo]))
	for d := range m[repo] {
		out = append(out, d)
	}
	return out
}

// isNotFoundErr tells whether err says something is missing.
func isNotFoundErr(err error) bool {
	return err != nil && (isStatus(err, http.StatusNotFound) || errorsIsAny(err, store.ErrNotFound, store.ErrRepositoryUnknown,
		store.ErrTagUnknown, store.ErrManifestUnknown, store.ErrBlobUnknown, store.ErrUploadUnknown))
}
