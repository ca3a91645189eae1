package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// TestCotenancyRegistryCache shows why a registry that shares its storage
// with regfs must run without its blob descriptor cache, which Debian's
// default /etc/docker/registry/config.yml turns on ("blobdescriptor:
// inmemory"): two registries serve one root, one with the cache and one
// without; after `rm _layers/<digest>` through the mount, the one without
// answers 404 for the blob, and the one with the cache keeps answering 200
// (and serving the bytes) from its memory.
func TestCotenancyRegistryCache(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	root := t.TempDir()
	plain := startRegistry(t, root)
	cached := startRegistryWith(t, root, registryOptions{BlobDescriptorCache: true})
	img := newTestImage(t, platformAMD64, layerSpec{60, 3000})
	l := newOCILayout(t)
	l.addImage("v1", img)
	skopeoCopy(t, "oci:"+l.Dir+":v1", plain.ref("cache/app", "v1"))
	layer := img.Layers[0].Desc.Digest
	for _, r := range []*registry{plain, cached} {
		if status, _ := r.headBlob("cache/app", layer); status != http.StatusOK {
			t.Fatalf("HEAD blob before the rm: %d", status)
		}
	}
	m := startMount(t, "filesystem", mountOpts{Root: root})
	sh(t, "rm "+shellQuote(m.path("cache/app/_layers", layer.String())))
	if status, _ := plain.headBlob("cache/app", layer); status != http.StatusNotFound {
		t.Errorf("registry without the cache: HEAD of the unlinked blob answers %d, want 404", status)
	}
	status, _ := cached.headBlob("cache/app", layer)
	getStatus, _ := cached.getBlob("cache/app", layer)
	t.Logf("registry with blobdescriptor: inmemory, after rm of the link through the mount: HEAD %d, GET %d", status, getStatus)
	if status != http.StatusOK || getStatus != http.StatusOK {
		t.Errorf("registry with the cache: HEAD %d, GET %d of the unlinked blob; the documented hazard (it keeps serving it) did not show", status, getStatus)
	}
}

// TestCotenancy runs Debian's docker-registry and regfs (the race-enabled
// binary) on one storage root and has both sides work at the same time:
//
//   - the registry side (HTTP and skopeo) pushes, deletes manifests and
//     blobs, pulls every repository, and re-tags the "stable" tags of
//     co/stable in place (the registry rewrites current/link in place);
//   - the mount side uploads layers, pushes manifests, re-tags with ln,
//     removes tags, revisions and layers, and links layers across
//     repositories, pushing the same digests under the same tags as the
//     registry does in co/shared;
//   - readers hash every layer through the mount and read the stable tags
//     through it continuously;
//   - a poller lists the registry's /v2/_catalog and every tags/list;
//   - the test itself kills regfs with SIGKILL at random moments and mounts
//     again.
//
// It requires: no name listed by the registry that is not a repository or
// tag the test made (nothing starting with "." or holding "#"); no error
// reading a stable tag through the mount (no tag is ever missing, so EINVAL
// or ENOENT there is a torn read of a link being rewritten); every pull
// byte-exact; every layer hashing to its name; and at the end every listed
// tag resolving through both sides with the same bytes, every blob on disk
// hashing to its name, `regfs fsck` clean and no race in the daemon's log.
//
// The registry runs without its blob descriptor cache, as co-tenancy needs
// (TestCotenancyRegistryCache). The run lasts 75 s; REGFS_SOAK=10m runs
// longer. The kill times and every actor's choices come from a seeded
// generator whose seed is logged; REGFS_COTENANCY_SEED=<seed> repeats the
// choices (the interleaving depends on timing).
func TestCotenancy(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	if testing.Short() {
		t.Skip("a 75 s soak; skipped with -short")
	}
	dur := 75 * time.Second
	if v := os.Getenv("REGFS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("REGFS_SOAK=%q: want a duration such as 10m", v)
		}
		dur = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("REGFS_COTENANCY_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("REGFS_COTENANCY_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (REGFS_COTENANCY_SEED=%d repeats the choices), run of %v (REGFS_SOAK)", seed, seed, dur)

	root := t.TempDir()
	c := &coRun{
		t:     t,
		root:  root,
		seed:  seed,
		r:     startRegistry(t, root),
		tmp:   t.TempDir(),
		known: map[digest.Digest][]byte{},
		stats: map[string]int{},

		failKinds: map[string]int{},
	}
	// Listings of what the registry changes show within --dir-cache-time
	// (README, "Caching"); beside a live registry a short one, so that the
	// end's comparison of both sides' listings waits only that long.
	c.m = startMount(t, "filesystem", mountOpts{Root: root, Extra: []string{"--dir-cache-time", coDirCacheTime.String()}})
	c.setUp()
	c.run(dur)
	c.final()
	c.logStats()
}

// The repositories of TestCotenancy, by who writes them.
const (
	coStable = "co/stable" // the registry re-tags in place; the mount reads
	coReg    = "co/reg"    // the registry pushes and deletes; the mount links its layers out
	coShared = "co/shared" // both push the same images under the same tags; both delete
	coFS     = "co/fs"     // the mount alone writes; the registry pulls
	coLn     = "co/ln"     // layers linked in from co/stable through the mount
	coLnReg  = "co/lnreg"  // layers linked in from co/reg, racing the registry's deletes
)

var coRepos = []string{coStable, coReg, coShared, coFS, coLn, coLnReg}

// coTags are the tags each repository can ever have.
var coTags = map[string][]string{
	coStable: {"s0", "s1", "s2", "s3"},
	coReg:    {"r0", "r1", "r2"},
	coShared: {"x0", "x1", "x2"},
	coFS:     {"f0", "f1", "f2", "f3"},
}

// The name grammars of distribution/reference.
var (
	coRepoRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*)*$`)
	coTagRE  = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
)

// coRun is one TestCotenancy.
type coRun struct {
	t    *testing.T
	r    *registry
	m    *mount
	root string
	seed uint64
	tmp  string // skopeo homes and pulled images

	// imgs are the images both sides push; imgs[0] and imgs[1] are the
	// two revisions the stable tags move between. They and known (every
	// blob and manifest built, by digest) are read-only once setUp is done.
	imgs   []testImage
	layout string // OCI layout holding imgs[i] as tag i<i>
	known  map[digest.Digest][]byte

	// gen counts the daemon's deaths and rebirths: odd while it is down.
	// An operation through the mount during which gen moved may have
	// been cut by a kill, so its failure is the kill's, not a defect.
	gen      atomic.Uint64
	failures atomic.Int64

	mu        sync.Mutex
	stats     map[string]int // guarded by mu
	failKinds map[string]int // failures by format; guarded by mu
}

// count adds one to the named statistic.
func (c *coRun) count(name string) {
	c.mu.Lock()
	c.stats[name]++
	c.mu.Unlock()
}

// fail reports a failure. Each kind (format) is reported 5 times, then
// only counted, so that a defect hit a thousand times neither buries the
// log nor hides the others.
func (c *coRun) fail(format string, args ...any) {
	c.failures.Add(1)
	c.mu.Lock()
	c.failKinds[format]++
	n := c.failKinds[format]
	c.mu.Unlock()
	switch {
	case n <= 5:
		c.t.Errorf(format, args...)
	case n == 6:
		c.t.Errorf("more failures like the above (%q) follow; only counted", format)
	}
}

func (c *coRun) logStats() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for k := range c.stats {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, "\n  %-40s %d", k, c.stats[k])
	}
	c.t.Logf("counts (%d failures):%s", c.failures.Load(), b.String())
}

// onMount waits until the daemon is up, runs f, and reports whether a
// kill happened while f ran.
func (c *coRun) onMount(ctx context.Context, f func() error) (killed bool, err error) {
	for c.gen.Load()%2 == 1 {
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		time.Sleep(5 * time.Millisecond)
	}
	g := c.gen.Load()
	err = f()
	// An odd g means the kill began between the wait and the load: f may
	// have run on the dying daemon or on the bare mountpoint.
	return g%2 == 1 || c.gen.Load() != g, err
}

// errnoName names err's errno ("EINVAL"), or "" if it has none.
func errnoName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return ""
}

// setUp builds the images, pushes the stable pair and a first image into
// co/reg and co/shared through the registry, and makes the repositories the
// mount writes.
func (c *coRun) setUp() {
	t := c.t
	for i := 0; i < 6; i++ {
		size := 64<<10 + i*40<<10
		if i == 2 {
			size = 1 << 20
		}
		c.imgs = append(c.imgs, newTestImage(t, platformAMD64, layerSpec{300, 48 << 10}, layerSpec{uint64(301 + i), size}))
	}
	l := newOCILayout(t)
	for i, img := range c.imgs {
		l.addImage(fmt.Sprintf("i%d", i), img)
		for _, b := range append(img.blobs(), img.Manifest) {
			c.known[b.Desc.Digest] = b.Data
		}
	}
	c.layout = l.Dir
	ctx := context.Background()
	for _, p := range []struct {
		img       int
		repo, tag string
	}{{0, coStable, "s0"}, {1, coStable, "s1"}, {2, coReg, "r0"}, {3, coShared, "x0"}} {
		if err := c.skopeo(ctx, "copy", fmt.Sprintf("oci:%s:i%d", c.layout, p.img), c.r.ref(p.repo, p.tag)); err != nil {
			t.Fatal(err)
		}
	}
	for i, tag := range []string{"s2", "s3"} {
		if status, err := c.putManifest(ctx, coStable, tag, c.imgs[i].Manifest); err != nil || status != http.StatusCreated {
			t.Fatalf("PUT %s:%s: %d %v", coStable, tag, status, err)
		}
	}
	for _, repo := range []string{coFS, coLn, coLnReg} {
		if err := os.MkdirAll(c.m.path(repo), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// skopeo runs skopeo with args (copy or delete) against the plain-HTTP
// test registry, with a home of its own.
func (c *coRun) skopeo(ctx context.Context, args ...string) error {
	home, err := os.MkdirTemp(c.tmp, "home-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	all := []string{"--insecure-policy", args[0]}
	if args[0] == "copy" {
		all = append(all, "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false")
	} else {
		all = append(all, "--tls-verify=false")
	}
	all = append(all, args[1:]...)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "skopeo", all...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_RUNTIME_DIR="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("skopeo %s: %v: %s", strings.Join(all, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// request sends one request to the registry and reads the answer.
func (c *coRun) request(ctx context.Context, method, path string, header http.Header, body []byte) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.r.url(path), rd)
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.r.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// putManifest tags a manifest in repo through the registry.
func (c *coRun) putManifest(ctx context.Context, repo, tag string, mf blob) (int, error) {
	resp, err := c.request(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+tag,
		http.Header{"Content-Type": {mf.Desc.MediaType}}, mf.Data)
	return resp.Status, err
}

// getManifest fetches repo's manifest by tag or digest from the registry.
func (c *coRun) getManifest(ctx context.Context, repo, ref string) (response, error) {
	return c.request(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, http.Header{"Accept": manifestAccept}, nil)
}

// listJSON GETs a registry list (catalog or tags) and decodes it into v.
func (c *coRun) listJSON(ctx context.Context, path string, v any) (int, error) {
	resp, err := c.request(ctx, http.MethodGet, path, nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		return resp.Status, err
	}
	return resp.Status, json.Unmarshal(resp.Body, v)
}

// run starts the actors, kills and remounts regfs at random moments for
// dur, then stops the actors and leaves the daemon mounted.
func (c *coRun) run(dur time.Duration) {
	t := c.t
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop) // before the mount's and the registry's cleanups
	actors := []func(context.Context, *rand.Rand){
		c.stableRetagger, c.stableReader, c.hasher, c.poller,
		c.registryActor, c.mountWriterFS, c.mountWriterShared,
	}
	for i, a := range actors {
		rng := rand.New(rand.NewPCG(c.seed, uint64(i+1)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			a(ctx, rng)
		}()
	}
	rng := rand.New(rand.NewPCG(c.seed, 0))
	deadline := time.Now().Add(dur)
	for {
		wait := time.Second + time.Duration(rng.Int64N(int64(4*time.Second)))
		if time.Now().Add(wait).After(deadline) {
			time.Sleep(time.Until(deadline))
			break
		}
		time.Sleep(wait)
		c.gen.Add(1)
		c.m.kill()
		time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
		c.m.restart()
		c.gen.Add(1)
		c.count("kill -9 and remount")
	}
	stop()
}

// stableRetagger moves the stable tags between the two stable revisions
// through the registry, as fast as it answers: each PUT rewrites the tag's
// current/link in place.
func (c *coRun) stableRetagger(ctx context.Context, rng *rand.Rand) {
	tags := coTags[coStable]
	for ctx.Err() == nil {
		tag := tags[rng.IntN(len(tags))]
		status, err := c.putManifest(ctx, coStable, tag, c.imgs[rng.IntN(2)].Manifest)
		if ctx.Err() != nil {
			return
		}
		if err != nil || status != http.StatusCreated {
			c.fail("registry PUT %s:%s (re-tag in place): %d %v", coStable, tag, status, err)
			continue
		}
		c.count("registry: stable re-tags in place")
		time.Sleep(2 * time.Millisecond)
	}
}

// stableReader reads the stable tags through the mount without pause: they
// always exist, so every read must give one of the two stable manifests;
// and every listing of _manifests must hold every stable tag.
func (c *coRun) stableReader(ctx context.Context, rng *rand.Rand) {
	tags := coTags[coStable]
	a, b := c.imgs[0].Manifest, c.imgs[1].Manifest
	dir := c.m.path(coStable, "_manifests")
	for i := 0; ctx.Err() == nil; i++ {
		tag := tags[rng.IntN(len(tags))]
		var got []byte
		killed, err := c.onMount(ctx, func() (err error) {
			got, err = os.ReadFile(filepath.Join(dir, tag))
			return err
		})
		switch {
		case killed:
			c.count("mount: stable reads cut by a kill")
		case err != nil:
			c.count("mount: stable reads failed " + errnoName(err))
			c.fail("reading stable tag %s through the mount: %v (%s)", tag, err, errnoName(err))
		case !bytes.Equal(got, a.Data) && !bytes.Equal(got, b.Data):
			c.fail("stable tag %s reads %d bytes (%s) that are neither stable revision", tag, len(got), digest.FromBytes(got))
		default:
			c.count("mount: stable reads")
		}
		if i%10 == 0 {
			var names []string
			killed, err := c.onMount(ctx, func() (err error) {
				names, err = readDirNames(dir)
				return err
			})
			switch {
			case killed:
			case err != nil:
				c.count("mount: stable listings failed " + errnoName(err))
				c.fail("ls %s: %v (%s)", dir, err, errnoName(err))
			default:
				for _, want := range append(slices.Clone(tags), a.Desc.Digest.String(), b.Desc.Digest.String()) {
					if !slices.Contains(names, want) {
						c.fail("ls %s lists %v: %s is missing", dir, names, want)
					}
				}
				c.count("mount: stable listings")
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// readDirNames lists a directory's names.
func readDirNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}

// hasher reads every layer of every repository through the mount and
// checks that it hashes to its name. Layers of co/stable are never
// removed, so any error reading them fails; elsewhere a layer may vanish
// between the listing and the read.
func (c *coRun) hasher(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		repo := coRepos[rng.IntN(len(coRepos))]
		dir := c.m.path(repo, "_layers")
		var names []string
		killed, err := c.onMount(ctx, func() (err error) {
			names, err = readDirNames(dir)
			return err
		})
		if killed {
			continue
		}
		if err != nil {
			if repo == coStable || !errors.Is(err, fs.ErrNotExist) {
				c.fail("ls %s: %v (%s)", dir, err, errnoName(err))
			}
			continue
		}
		for _, name := range names {
			if ctx.Err() != nil {
				return
			}
			var sum string
			var n int64
			killed, err := c.onMount(ctx, func() error {
				f, err := os.Open(filepath.Join(dir, name))
				if err != nil {
					return err
				}
				defer f.Close()
				h := sha256.New()
				n, err = io.Copy(h, f)
				sum = "sha256:" + hex.EncodeToString(h.Sum(nil))
				return err
			})
			switch {
			case killed:
			case err != nil && repo != coStable && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESTALE)):
				c.count("mount: layer reads of a layer removed meanwhile " + errnoName(err))
			case err != nil:
				c.fail("reading %s/_layers/%s through the mount: %v (%s)", repo, name, err, errnoName(err))
			case sum != name:
				c.fail("%s/_layers/%s: %d bytes through the mount hash to %s", repo, name, n, sum)
			default:
				c.count("mount: layers hashed")
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// poller lists the registry's catalog and every repository's tags and
// checks each name: a repository or tag the test never made (a rename's
// temporary name, say) is a ghost. Every stable tag must be listed.
func (c *coRun) poller(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		var cat struct {
			Repositories []string `json:"repositories"`
		}
		status, err := c.listJSON(ctx, "/v2/_catalog?n=1000", &cat)
		if ctx.Err() != nil {
			return
		}
		if err != nil || status != http.StatusOK {
			c.count(fmt.Sprintf("registry: catalog answered %d", status))
			c.fail("GET /v2/_catalog: %d %v", status, err)
			continue
		}
		c.count("registry: catalogs listed")
		for _, repo := range cat.Repositories {
			if !coRepoRE.MatchString(repo) || !slices.Contains(coRepos, repo) {
				c.fail("the registry's catalog lists %q, which is no repository the test made (catalog %v)", repo, cat.Repositories)
			}
		}
		for _, repo := range coRepos {
			var tl struct {
				Tags []string `json:"tags"`
			}
			status, err := c.listJSON(ctx, "/v2/"+repo+"/tags/list?n=1000", &tl)
			if ctx.Err() != nil {
				return
			}
			if status == http.StatusNotFound && repo != coStable {
				continue
			}
			if err != nil || status != http.StatusOK {
				c.fail("GET tags of %s: %d %v", repo, status, err)
				continue
			}
			c.count("registry: tag lists listed")
			for _, tag := range tl.Tags {
				if !coTagRE.MatchString(tag) || !slices.Contains(coTags[repo], tag) {
					c.fail("the registry lists tag %q in %s, which is no tag the test made (tags %v)", tag, repo, tl.Tags)
				}
			}
			if repo == coStable {
				for _, want := range coTags[coStable] {
					if !slices.Contains(tl.Tags, want) {
						c.fail("the registry lists tags %v in %s: stable tag %s is missing", tl.Tags, repo, want)
					}
				}
			}
		}
		time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond)
	}
}

// registryActor pushes, deletes and pulls through the registry. It alone
// writes co/reg, so there its pushes, deletes and pulls must succeed; in
// co/shared it races the mount, and only what it pulls is checked.
func (c *coRun) registryActor(ctx context.Context, rng *rand.Rand) {
	regTags := map[string]int{"r0": 2} // co/reg's tags -> image index
	unlinked := map[digest.Digest]bool{}
	pullable := func(tag string) bool {
		i, ok := regTags[tag]
		if !ok {
			return false
		}
		for _, b := range c.imgs[i].blobs() {
			if unlinked[b.Desc.Digest] {
				return false
			}
		}
		return true
	}
	for ctx.Err() == nil {
		op := rng.IntN(12)
		i := 2 + rng.IntN(4)
		src := fmt.Sprintf("oci:%s:i%d", c.layout, i)
		switch {
		case op < 3:
			tag := coTags[coReg][rng.IntN(len(coTags[coReg]))]
			if err := c.skopeo(ctx, "copy", src, c.r.ref(coReg, tag)); err != nil {
				if ctx.Err() == nil {
					c.fail("push to %s:%s through the registry: %v", coReg, tag, err)
				}
				continue
			}
			regTags[tag] = i
			for _, b := range c.imgs[i].blobs() {
				delete(unlinked, b.Desc.Digest)
			}
			c.count("registry: pushes to " + coReg)
		case op < 5:
			tag := coTags[coShared][rng.IntN(len(coTags[coShared]))]
			if err := c.skopeo(ctx, "copy", src, c.r.ref(coShared, tag)); err != nil {
				c.count("registry: pushes to " + coShared + " failed (racing the mount)")
				continue
			}
			c.count("registry: pushes to " + coShared)
		case op < 6:
			tag := coTags[coReg][rng.IntN(len(coTags[coReg]))]
			i, ok := regTags[tag]
			if !ok {
				continue
			}
			if err := c.skopeo(ctx, "delete", c.r.ref(coReg, tag)); err != nil {
				if ctx.Err() == nil {
					c.fail("delete of %s:%s through the registry: %v", coReg, tag, err)
				}
				continue
			}
			// Deleting the manifest untags every tag pointing at it.
			for t, j := range regTags {
				if j == i {
					delete(regTags, t)
				}
			}
			c.count("registry: manifest deletes in " + coReg)
		case op < 7:
			tag := coTags[coShared][rng.IntN(len(coTags[coShared]))]
			if err := c.skopeo(ctx, "delete", c.r.ref(coShared, tag)); err != nil {
				c.count("registry: manifest deletes in " + coShared + " failed (no such tag)")
				continue
			}
			c.count("registry: manifest deletes in " + coShared)
		case op < 8:
			b := c.imgs[i].Layers[rng.IntN(len(c.imgs[i].Layers))]
			resp, err := c.request(ctx, http.MethodDelete, "/v2/"+coReg+"/blobs/"+b.Desc.Digest.String(), nil, nil)
			if ctx.Err() != nil {
				return
			}
			if err != nil || (resp.Status != http.StatusAccepted && resp.Status != http.StatusNotFound) {
				c.fail("DELETE blob %s in %s: %d %v", b.Desc.Digest, coReg, resp.Status, err)
				continue
			}
			unlinked[b.Desc.Digest] = true
			c.count("registry: blob unlinks in " + coReg)
		default:
			repo := []string{coStable, coReg, coShared, coFS}[rng.IntN(4)]
			tag := coTags[repo][rng.IntN(len(coTags[repo]))]
			must := repo == coStable || (repo == coReg && pullable(tag))
			c.pull(ctx, repo, tag, must)
		}
	}
}

// pull copies repo:tag out of the registry with skopeo and checks every
// byte: the manifest is one the test built, every blob hashes to its name
// and is one the test built. A pull that must succeed and fails, fails the
// test; others may fail (what they pull was deleted meanwhile).
func (c *coRun) pull(ctx context.Context, repo, tag string, must bool) {
	dir, err := os.MkdirTemp(c.tmp, "pull-")
	if err != nil {
		c.fail("%v", err)
		return
	}
	defer os.RemoveAll(dir)
	err = c.skopeo(ctx, "copy", c.r.ref(repo, tag), "dir:"+dir)
	// The registry races itself: a GET of a tag its own PUT is rewriting
	// in place can read a torn link and answer 500 (seen on co/stable,
	// which only the registry writes). That is not regfs's doing; try
	// again.
	for try := 0; must && err != nil && strings.Contains(err.Error(), "500 Internal Server Error") && try < 5; try++ {
		c.count("registry: pulls answered 500 by its own torn read, tried again")
		time.Sleep(10 * time.Millisecond)
		if err := os.RemoveAll(dir); err != nil {
			c.fail("%v", err)
			return
		}
		err = c.skopeo(ctx, "copy", c.r.ref(repo, tag), "dir:"+dir)
	}
	if err != nil {
		if must && ctx.Err() == nil {
			c.fail("pull of %s:%s, which exists and is complete: %v", repo, tag, err)
		}
		c.count("registry: pulls that found nothing (deleted meanwhile)")
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		c.fail("%v", err)
		return
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			c.fail("%v", err)
			return
		}
		d := digest.FromBytes(b)
		switch {
		case e.Name() == "version":
		case e.Name() == "manifest.json":
			if _, ok := c.known[d]; !ok {
				c.fail("pull of %s:%s: manifest %s (%d bytes) is none the test built:\n%s", repo, tag, d, len(b), b)
			}
		case e.Name() != d.Encoded():
			c.fail("pull of %s:%s: blob %s hashes to %s", repo, tag, e.Name(), d)
		case c.known[d] == nil:
			c.fail("pull of %s:%s: blob %s is none the test built", repo, tag, d)
		}
	}
	c.count("registry: pulls checked byte for byte")
}

// coModel is what co/fs and co/ln hold: the mount alone writes them, so
// after every operation both sides must show exactly this.
type coModel struct {
	tags   map[string]digest.Digest
	revs   map[digest.Digest]bool
	layers map[digest.Digest]bool // linked in co/fs
	ln     map[digest.Digest]bool // linked in co/ln
	// dirty is set when a kill cut an operation: what it left is then
	// read back from the mount.
	dirty bool
}

// mountWriterFS writes co/fs and co/ln through the mount with uploads, cp
// of manifests, ln and rm, and checks after each operation that the mount
// and the registry show exactly what it wrote.
func (c *coRun) mountWriterFS(ctx context.Context, rng *rand.Rand) {
	md := &coModel{tags: map[string]digest.Digest{}, revs: map[digest.Digest]bool{}, layers: map[digest.Digest]bool{}, ln: map[digest.Digest]bool{}}
	man := func(elem ...string) string { return c.m.path(append([]string{coFS, "_manifests"}, elem...)...) }
	stableBlobs := append(c.imgs[0].blobs(), c.imgs[1].Layers...)
	var history []string // the last operations, for a failure's log
	for ctx.Err() == nil {
		if md.dirty {
			killed, err := c.onMount(ctx, func() error { return c.readModel(md) })
			if killed || ctx.Err() != nil {
				continue
			}
			if err != nil {
				c.fail("reading co/fs back after a kill: %v (%s)", err, errnoName(err))
				return
			}
			md.dirty = false
			history = append(history, fmt.Sprintf("%s read back: tags %v", time.Now().Format("15:04:05.000"), md.tags))
			c.count("mount: co/fs read back after a kill")
		}
		var what string
		var apply func() error
		op := rng.IntN(12)
		tag := coTags[coFS][rng.IntN(len(coTags[coFS]))]
		revs := slices.Sorted(maps.Keys(md.revs))
		switch {
		case op < 5:
			img := c.imgs[2+rng.IntN(4)]
			what = "push of " + img.Manifest.Desc.Digest.String() + " as " + tag
			apply = func() error {
				if err := os.MkdirAll(c.m.path(coFS), 0o755); err != nil {
					return err
				}
				for _, b := range img.blobs() {
					if md.layers[b.Desc.Digest] {
						continue
					}
					if err := os.WriteFile(c.m.path(coFS, "_uploads", b.Desc.Digest.String()), b.Data, 0o644); err != nil {
						return fmt.Errorf("upload of %s: %w", b.Desc.Digest, err)
					}
					md.layers[b.Desc.Digest] = true
				}
				if err := os.WriteFile(man(tag), img.Manifest.Data, 0o644); err != nil {
					return err
				}
				md.tags[tag] = img.Manifest.Desc.Digest
				md.revs[img.Manifest.Desc.Digest] = true
				return nil
			}
		case op < 7 && len(revs) > 0:
			rev := revs[rng.IntN(len(revs))]
			what = "ln of " + rev.String() + " as " + tag
			apply = func() error {
				if _, ok := md.tags[tag]; ok {
					if err := os.Remove(man(tag)); err != nil {
						return err
					}
					delete(md.tags, tag)
				}
				if err := os.Link(man(rev.String()), man(tag)); err != nil {
					return err
				}
				md.tags[tag] = rev
				return nil
			}
		case op < 8:
			if _, ok := md.tags[tag]; !ok {
				continue
			}
			what = "rm of tag " + tag
			apply = func() error {
				if err := os.Remove(man(tag)); err != nil {
					return err
				}
				delete(md.tags, tag)
				return nil
			}
		case op < 9 && len(revs) > 0:
			rev := revs[rng.IntN(len(revs))]
			what = "rm of revision " + rev.String()
			apply = func() error {
				if err := os.Remove(man(rev.String())); err != nil {
					return err
				}
				delete(md.revs, rev)
				for t, d := range md.tags {
					if d == rev {
						delete(md.tags, t)
					}
				}
				return nil
			}
		case op < 10:
			ls := slices.Sorted(maps.Keys(md.layers))
			if len(ls) == 0 {
				continue
			}
			d := ls[rng.IntN(len(ls))]
			what = "rm of layer " + d.String()
			apply = func() error {
				if err := os.Remove(c.m.path(coFS, "_layers", d.String())); err != nil {
					return err
				}
				delete(md.layers, d)
				return nil
			}
		default:
			b := stableBlobs[rng.IntN(len(stableBlobs))]
			d := b.Desc.Digest
			dst := c.m.path(coLn, "_layers", d.String())
			if md.ln[d] {
				what = "rm of cross-repository link " + d.String()
				apply = func() error {
					if err := os.Remove(dst); err != nil {
						return err
					}
					delete(md.ln, d)
					return nil
				}
				break
			}
			what = "ln of " + coStable + "/_layers/" + d.String() + " into " + coLn
			apply = func() error {
				// A repository made by mkdir alone lives in the daemon's
				// memory: after a kill it is gone until made again.
				if err := os.MkdirAll(c.m.path(coLn), 0o755); err != nil {
					return err
				}
				if err := os.Link(c.m.path(coStable, "_layers", d.String()), dst); err != nil {
					return err
				}
				md.ln[d] = true
				return nil
			}
		}
		killed, err := c.onMount(ctx, apply)
		note := func(s string) {
			history = append(history, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), what, s))
			if len(history) > 12 {
				history = history[1:]
			}
		}
		switch {
		case killed:
			note(fmt.Sprintf("cut by a kill (%v)", err))
			md.dirty = true
			c.count("mount: co/fs operations cut by a kill")
			continue
		case err != nil:
			note(err.Error())
			c.fail("co/fs through the mount: %s: %v (%s)", what, err, errnoName(err))
			c.t.Logf("co/fs model: tags %v, revisions %d\nlast operations:\n  %s\n%s", md.tags, len(md.revs), strings.Join(history, "\n  "), c.storedTags(coFS))
			md.dirty = true
			continue
		}
		note("done")
		c.count("mount: co/fs operations")
		killed, err = c.onMount(ctx, func() error { return c.checkModel(ctx, md) })
		switch {
		case killed:
			note("check cut by a kill")
			md.dirty = true
		case err != nil && ctx.Err() == nil:
			c.fail("after %s: %v", what, err)
			md.dirty = true
		case err == nil:
			c.count("mount: co/fs states checked on both sides")
		}
	}
}

// storedTags describes repo's tags as they are on disk, read directly
// from the storage root: each tag's current link and whether the revision
// it names is linked. A failure's log shows it, to tell a wrong model from
// a wrong mount.
func (c *coRun) storedTags(repo string) string {
	base := filepath.Join(c.root, "docker/registry/v2/repositories", repo, "_manifests")
	dirs, err := os.ReadDir(filepath.Join(base, "tags"))
	if err != nil {
		return "stored tags: " + err.Error()
	}
	var b strings.Builder
	b.WriteString("stored tags:")
	for _, d := range dirs {
		link, err := os.ReadFile(filepath.Join(base, "tags", d.Name(), "current", "link"))
		if err != nil {
			fmt.Fprintf(&b, "\n  %s: %v", d.Name(), err)
			continue
		}
		dg, perr := digest.Parse(string(link))
		if perr != nil {
			fmt.Fprintf(&b, "\n  %s -> %q (not a digest)", d.Name(), link)
			continue
		}
		_, rerr := os.Stat(filepath.Join(base, "revisions", dg.Algorithm().String(), dg.Encoded(), "link"))
		fmt.Fprintf(&b, "\n  %s -> %s (revision linked: %v)", d.Name(), link, rerr == nil)
	}
	return b.String()
}

// readModel reads co/fs and co/ln back from the mount.
func (c *coRun) readModel(md *coModel) error {
	names, err := readDirNames(c.m.path(coFS, "_manifests"))
	if err != nil {
		return err
	}
	clear(md.tags)
	clear(md.revs)
	clear(md.layers)
	clear(md.ln)
	for _, n := range names {
		if d, err := digest.Parse(n); err == nil {
			md.revs[d] = true
			continue
		}
		b, err := os.ReadFile(c.m.path(coFS, "_manifests", n))
		if err != nil {
			return fmt.Errorf("tag %s is listed: %w", n, err)
		}
		md.tags[n] = digest.FromBytes(b)
	}
	for repo, set := range map[string]map[digest.Digest]bool{coFS: md.layers, coLn: md.ln} {
		names, err := readDirNames(c.m.path(repo, "_layers"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, n := range names {
			set[digest.Digest(n)] = true
		}
	}
	return nil
}

// checkModel checks that the mount and the registry both show exactly md.
func (c *coRun) checkModel(ctx context.Context, md *coModel) error {
	var problems []string
	for _, tag := range coTags[coFS] {
		want, ok := md.tags[tag]
		got, err := os.ReadFile(c.m.path(coFS, "_manifests", tag))
		switch {
		case ok && err != nil:
			problems = append(problems, fmt.Sprintf("mount: reading tag %s: %v (%s)", tag, err, errnoName(err)))
		case ok && digest.FromBytes(got) != want:
			problems = append(problems, fmt.Sprintf("mount: tag %s reads %s, want %s", tag, digest.FromBytes(got), want))
		case !ok && !errors.Is(err, fs.ErrNotExist):
			problems = append(problems, fmt.Sprintf("mount: removed tag %s: read gives %v", tag, err))
		}
		resp, err := c.getManifest(ctx, coFS, tag)
		if err != nil {
			return err
		}
		switch {
		case ok && (resp.Status != http.StatusOK || digest.FromBytes(resp.Body) != want):
			problems = append(problems, fmt.Sprintf("registry: GET %s:%s: %d %s, want %s", coFS, tag, resp.Status, digest.FromBytes(resp.Body), want))
		case !ok && resp.Status != http.StatusNotFound:
			problems = append(problems, fmt.Sprintf("registry: GET of removed tag %s:%s: %d, want 404", coFS, tag, resp.Status))
		}
	}
	for d := range c.known {
		if !slices.ContainsFunc(c.imgs, func(img testImage) bool { return img.Manifest.Desc.Digest == d }) {
			continue
		}
		resp, err := c.getManifest(ctx, coFS, d.String())
		if err != nil {
			return err
		}
		if want := md.revs[d]; want != (resp.Status == http.StatusOK) {
			problems = append(problems, fmt.Sprintf("registry: GET %s@%s: %d, revision stored: %v", coFS, d, resp.Status, want))
		}
	}
	for repo, set := range map[string]map[digest.Digest]bool{coFS: md.layers, coLn: md.ln} {
		for d := range c.known {
			if slices.ContainsFunc(c.imgs, func(img testImage) bool { return img.Manifest.Desc.Digest == d }) {
				continue
			}
			resp, err := c.request(ctx, http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
			if err != nil {
				return err
			}
			if want := set[d]; want != (resp.Status == http.StatusOK) {
				problems = append(problems, fmt.Sprintf("registry: HEAD %s blob %s: %d, linked: %v", repo, d, resp.Status, want))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// mountWriterShared pushes through the mount the same images under the
// same tags of co/shared as the registry side does, re-tags and removes
// tags there, and links co/reg's layers into co/lnreg while the registry
// unlinks them. These race the registry, so a failure that the race
// explains (the revision or layer was deleted meanwhile) is counted; a
// torn read (EINVAL) fails.
func (c *coRun) mountWriterShared(ctx context.Context, rng *rand.Rand) {
	man := func(elem ...string) string { return c.m.path(append([]string{coShared, "_manifests"}, elem...)...) }
	for ctx.Err() == nil {
		tag := coTags[coShared][rng.IntN(len(coTags[coShared]))]
		img := c.imgs[2+rng.IntN(4)]
		var what string
		var apply func() error
		switch op := rng.IntN(8); {
		case op < 4:
			what = "push"
			apply = func() error {
				for _, b := range img.blobs() {
					if err := os.WriteFile(c.m.path(coShared, "_uploads", b.Desc.Digest.String()), b.Data, 0o644); err != nil {
						return fmt.Errorf("upload: %w", err)
					}
				}
				if err := os.WriteFile(man(tag), img.Manifest.Data, 0o644); err != nil {
					return err
				}
				got, err := os.ReadFile(man(tag))
				if err != nil {
					return err
				}
				if _, ok := c.known[digest.FromBytes(got)]; !ok {
					c.fail("%s:%s reads %d bytes that are no manifest the test built", coShared, tag, len(got))
				}
				return nil
			}
		case op < 5:
			what = "ln re-tag"
			apply = func() error {
				_ = os.Remove(man(tag))
				return os.Link(man(img.Manifest.Desc.Digest.String()), man(tag))
			}
		case op < 6:
			what = "rm tag"
			apply = func() error { return os.Remove(man(tag)) }
		default:
			l := img.Layers[rng.IntN(len(img.Layers))].Desc.Digest.String()
			what = "ln from " + coReg
			apply = func() error {
				if err := os.MkdirAll(c.m.path(coLnReg), 0o755); err != nil {
					return err
				}
				_ = os.Remove(c.m.path(coLnReg, "_layers", l))
				return os.Link(c.m.path(coReg, "_layers", l), c.m.path(coLnReg, "_layers", l))
			}
		}
		killed, err := c.onMount(ctx, apply)
		switch {
		case killed:
		case errors.Is(err, syscall.EINVAL):
			c.fail("%s %s in %s through the mount: %v", what, tag, coShared, err)
		case err != nil:
			c.count("mount: racing writes refused " + what + " " + errnoName(err))
		default:
			c.count("mount: racing writes " + what)
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
}

// coDirCacheTime is the soak's --dir-cache-time.
const coDirCacheTime = time.Second

// final checks the storage once everything has stopped: every repository
// and tag the registry lists is one the test made, the mount lists the
// same tags, every tag reads the same bytes through both, every layer
// hashes to its name through the mount; then, with the daemon stopped
// (which checks its log for races), fsck is clean, every blob on disk
// hashes to its name, and no temporary or trash name lies in repositories/.
func (c *coRun) final() {
	t := c.t
	ctx := context.Background()
	// The registry's last deletes may still be listed by the mount for
	// --dir-cache-time: let those listings expire.
	time.Sleep(coDirCacheTime + time.Second)
	repos := c.r.catalog()
	for _, repo := range repos {
		if !slices.Contains(coRepos, repo) {
			t.Errorf("at the end the registry's catalog lists %q (catalog %v)", repo, repos)
		}
	}
	for _, repo := range coRepos {
		regTags := c.r.tags(repo)
		names, err := readDirNames(c.m.path(repo, "_manifests"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ls %s/_manifests: %v", repo, err)
		}
		var mountTags []string
		for _, n := range names {
			if _, err := digest.Parse(n); err != nil {
				mountTags = append(mountTags, n)
			}
		}
		if !sameSet(regTags, mountTags) {
			t.Errorf("at the end %s: the registry lists tags %v, the mount %v", repo, regTags, mountTags)
		}
		for _, tag := range regTags {
			resp, err := c.getManifest(ctx, repo, tag)
			if err != nil || resp.Status != http.StatusOK {
				t.Errorf("at the end the registry lists %s:%s but GET answers %d %v", repo, tag, resp.Status, err)
				continue
			}
			got, err := os.ReadFile(c.m.path(repo, "_manifests", tag))
			if err != nil || !bytes.Equal(got, resp.Body) {
				t.Errorf("at the end %s:%s through the mount: %v, %d bytes; the registry serves %d bytes", repo, tag, err, len(got), len(resp.Body))
			}
			c.count("end: tags resolved by both sides")
		}
		layers, _ := readDirNames(c.m.path(repo, "_layers"))
		for _, name := range layers {
			b, err := os.ReadFile(c.m.path(repo, "_layers", name))
			if err != nil || digest.FromBytes(b).String() != name {
				t.Errorf("at the end %s/_layers/%s through the mount: %v, hashes to %s", repo, name, err, digest.FromBytes(b))
			}
			c.count("end: layers hashed through the mount")
		}
	}
	c.m.stop()

	out, err := exec.Command(regfsBin, "fsck", "--root", c.root, "--json").Output()
	var rep crashFsckReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil || err != nil || len(rep.Problems) > 0 || !rep.Complete {
		t.Errorf("regfs fsck at the end: %v (%v): %+v\n%s", err, jerr, rep.Problems, out)
	}
	v2 := filepath.Join(c.root, "docker/registry/v2")
	err = filepath.WalkDir(v2, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(v2, p)
		parts := strings.Split(rel, "/")
		inUpload := slices.Contains(parts, "_uploads") && parts[len(parts)-2] != "_uploads"
		if parts[0] == "repositories" && (strings.HasPrefix(e.Name(), ".") || strings.Contains(e.Name(), "#")) && !inUpload {
			t.Errorf("at the end storage holds %s: a temporary or trash name inside repositories/", rel)
		}
		if parts[0] == "blobs" && !e.IsDir() && e.Name() == "data" {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if digest.FromBytes(b).Encoded() != parts[len(parts)-2] {
				t.Errorf("blob %s does not hash to its name", rel)
			}
			c.count("end: blobs on disk hashed")
		}
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", v2, err)
	}
}
