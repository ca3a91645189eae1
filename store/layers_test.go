package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver/inmemory"
)

// TestLayerReaderThroughCache reads a blob of several cache blocks at random
// offsets from many goroutines and checks every byte, then checks the
// Read/Seek/ReadAt contract with iotest.
func TestLayerReaderThroughCache(t *testing.T) {
	ctx := context.Background()
	content := randomBytes(5, 2<<20+12345)
	// 64 KiB blocks and a budget of 8 of them: blocks are evicted and
	// reloaded while the readers run.
	s, err := New(inmemory.New(), Options{Cache: cache.New(512<<10, 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	r := repo(t, s, "big")
	dgst := pushBlob(t, r, content)

	br, err := r.Layers().Open(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	if br.Size() != int64(len(content)) || br.Digest() != dgst {
		t.Fatalf("reader: size %d digest %s", br.Size(), br.Digest())
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 7))
			for range 200 {
				off := rnd.Int64N(int64(len(content)))
				n := rnd.IntN(20000) + 1
				buf := make([]byte, n)
				got, err := br.ReadAt(buf, off)
				want := content[off:min(off+int64(n), int64(len(content)))]
				if got != len(want) || !bytes.Equal(buf[:got], want) {
					errc <- errors.New("ReadAt returned wrong bytes")
					return
				}
				if got < n && err != io.EOF {
					errc <- err
					return
				}
				if got == n && err != nil && err != io.EOF {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	// iotest reads in 1-3 byte steps, so a smaller blob of a few blocks.
	small := content[:300_000]
	br2, err := r.Layers().Open(ctx, pushBlob(t, r, small))
	if err != nil {
		t.Fatal(err)
	}
	defer br2.Close()
	if err := iotest.TestReader(br2, small); err != nil {
		t.Fatal(err)
	}
}

func TestLayerStatReadsNoBlob(t *testing.T) {
	ctx := context.Background()
	cd := &countingDriver{StorageDriver: inmemory.New()}
	loadTree(t, cd, testdataRoot)
	s := newStore(t, cd)
	r := repo(t, s, "library/ubuntu")
	reads := cd.blobReads.Load()
	for range 3 {
		desc, err := r.Layers().Stat(ctx, tdLayerUbuntu)
		if err != nil || desc.Size != 46 {
			t.Fatalf("Stat = %+v, %v", desc, err)
		}
	}
	if _, err := r.Layers().List(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cd.blobReads.Load() - reads; got != 0 {
		t.Fatalf("Stat and List read blob data %d times", got)
	}
}

func TestLayerLinkUnlink(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	loadTree(t, d, testdataRoot)
	s := newStore(t, d)
	other := repo(t, s, "team/other")

	if err := other.Layers().Link(ctx, digest.FromString("never stored")); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("Link of a missing blob: %v", err)
	}
	if ok, _ := s.IsRepository(ctx, "team/other"); ok {
		t.Fatal("a refused link created the repository")
	}
	if err := other.Layers().Link(ctx, tdLayerHello); err != nil {
		t.Fatal(err)
	}
	repos, err := s.Repositories(ctx)
	if err != nil || !slices.Equal(repos, []string{"hello", "library/ubuntu", "team/other"}) {
		t.Fatalf("Repositories = %v, %v", repos, err)
	}
	if desc, err := other.Layers().Stat(ctx, tdLayerHello); err != nil || desc.Size != 18 {
		t.Fatalf("Stat after link = %+v, %v", desc, err)
	}
	if err := other.Layers().Unlink(ctx, tdLayerHello); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Layers().Stat(ctx, tdLayerHello); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("Stat after unlink: %v", err)
	}
	if err := other.Layers().Unlink(ctx, tdLayerHello); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("second Unlink: %v", err)
	}
	if _, ok := blobData(t, s, tdLayerHello); !ok {
		t.Fatal("unlink removed the blob's data")
	}
	if _, err := repo(t, s, "hello").Layers().Stat(ctx, tdLayerHello); err != nil {
		t.Fatalf("the other repository lost its link: %v", err)
	}

	// Linked but its data gone: unknown, never a short or empty read.
	if err := d.Delete(ctx, mustPath(blobDataPathSpec{digest: tdConfig})); err != nil {
		t.Fatal(err)
	}
	if _, err := repo(t, s, "hello").Layers().Open(ctx, tdConfig); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("Open with data missing: %v", err)
	}
	if _, err := repo(t, s, "hello").Layers().Stat(ctx, "sha256:zz"); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("Stat of a bad digest: %v", err)
	}
}

func TestRemoveRepository(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	loadTree(t, d, testdataRoot)
	s := newStore(t, d)

	// A namespace holding a repository is not empty either (rmdir of it
	// must fail so).
	for _, name := range []string{"hello", "library/ubuntu", "library"} {
		if err := s.RemoveRepository(ctx, name); !errors.Is(err, ErrRepositoryNotEmpty) {
			t.Errorf("RemoveRepository(%s) = %v", name, err)
		}
	}
	for _, name := range []string{"nope", "library/debian"} {
		if err := s.RemoveRepository(ctx, name); !errors.Is(err, ErrRepositoryUnknown) {
			t.Errorf("RemoveRepository(%s) = %v", name, err)
		}
	}
	if err := s.RemoveRepository(ctx, "../x"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("RemoveRepository(../x) = %v", err)
	}

	// Only an upload: not empty until it is cancelled.
	r := repo(t, s, "team/app")
	up, err := r.Uploads().Create(ctx, digest.FromString("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveRepository(ctx, "team/app"); !errors.Is(err, ErrRepositoryNotEmpty) {
		t.Fatalf("repository with an upload: %v", err)
	}
}

// TestRemoveRepositoryOnDisk uses the filesystem driver, which keeps the
// empty directories a registry leaves, to remove an empty repository and to
// refuse one holding a nested repository.
func TestRemoveRepositoryOnDisk(t *testing.T) {
	ctx := context.Background()
	td := drivers[1].new(t, "")
	s := newStore(t, td)
	for _, dir := range []string{
		"docker/registry/v2/repositories/a/_layers/sha256",
		"docker/registry/v2/repositories/a/_manifests/revisions/sha256",
		"docker/registry/v2/repositories/a/b/_layers/sha256",
	} {
		if err := mkdirAll(td.root, dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveRepository(ctx, "a"); !errors.Is(err, ErrRepositoryNotEmpty) {
		t.Fatalf("a holding a/b: %v", err)
	}
	if err := s.RemoveRepository(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveRepository(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if repos, err := s.Repositories(ctx); err != nil || len(repos) != 0 {
		t.Fatalf("Repositories = %v, %v", repos, err)
	}
	if c, err := s.Children(ctx, ""); err != nil || len(c) != 0 {
		t.Fatalf("Children = %v, %v", c, err)
	}
}

// TestRemoveRepositoryEmptyNamespace: a namespace directory left empty by
// removing its last repository is removed, and no longer listed.
func TestRemoveRepositoryEmptyNamespace(t *testing.T) {
	ctx := context.Background()
	td := drivers[1].new(t, "")
	s := newStore(t, td)
	if err := mkdirAll(td.root, "docker/registry/v2/repositories/ns/app/_layers/sha256"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveRepository(ctx, "ns/app"); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Children(ctx, ""); err != nil || len(c) != 1 {
		t.Fatalf("Children before removing ns = %v, %v", c, err)
	}
	if err := s.RemoveRepository(ctx, "ns"); err != nil {
		t.Fatalf("removing the empty namespace ns: %v", err)
	}
	if c, err := s.Children(ctx, ""); err != nil || len(c) != 0 {
		t.Fatalf("Children = %v, %v", c, err)
	}
	if err := s.RemoveRepository(ctx, "ns"); !errors.Is(err, ErrRepositoryUnknown) {
		t.Fatalf("removing ns again: %v", err)
	}
}

func mkdirAll(root, rel string) error {
	return os.MkdirAll(filepath.Join(root, filepath.FromSlash(rel)), 0o755)
}

// TestLinkTimes: LinkTime of a layer, a revision and a tag is its link's
// modification time, and Linked lists the same times as List's digests.
func TestLinkTimes(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			ctx := context.Background()
			td := dc.new(t, "")
			s := newStore(t, td)
			r := repo(t, s, "r")
			cfg := pushBlob(t, r, []byte(`{"architecture":"amd64","os":"linux"}`))
			l1 := pushBlob(t, r, []byte("layer one"))
			a, _ := twoRevisions(t, r, cfg, []digest.Digest{l1, l1})
			if err := r.Tags().Tag(ctx, "v1", a); err != nil {
				t.Fatal(err)
			}
			linkTime := func(p string) time.Time {
				fi, err := td.Stat(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				return fi.ModTime
			}
			lt, err := r.Layers().LinkTime(ctx, l1)
			if want := linkTime(mustPath(layerLinkPathSpec{name: "r", digest: l1})); err != nil || !lt.Equal(want) || lt.IsZero() {
				t.Errorf("layer LinkTime = %v, %v; want %v", lt, err, want)
			}
			rt, err := r.Manifests().LinkTime(ctx, a)
			if want := linkTime(mustPath(manifestRevisionLinkPathSpec{name: "r", revision: a})); err != nil || !rt.Equal(want) {
				t.Errorf("revision LinkTime = %v, %v; want %v", rt, err, want)
			}
			tt, err := r.Tags().LinkTime(ctx, "v1")
			if want := linkTime(mustPath(manifestTagCurrentLinkPathSpec{name: "r", tag: "v1"})); err != nil || !tt.Equal(want) {
				t.Errorf("tag LinkTime = %v, %v; want %v", tt, err, want)
			}
			if _, err := r.Tags().LinkTime(ctx, "nope"); !errors.Is(err, ErrTagUnknown) {
				t.Errorf("LinkTime of a missing tag: %v", err)
			}
			if _, err := r.Layers().LinkTime(ctx, digest.FromString("x")); !errors.Is(err, ErrBlobUnknown) {
				t.Errorf("LinkTime of a missing layer: %v", err)
			}
			linked, err := r.Layers().Linked(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range linked {
				want, err := r.Layers().LinkTime(ctx, l.Digest)
				if err != nil || !l.ModTime.Equal(want) {
					t.Errorf("Linked time of %s = %v, LinkTime %v, %v", l.Digest, l.ModTime, want, err)
				}
			}
			if len(linked) != 2 {
				t.Errorf("Linked = %v, want the config and the layer", linked)
			}
			revs, err := r.Manifests().Linked(ctx)
			if err != nil || len(revs) != 1 || revs[0].ModTime.IsZero() {
				t.Errorf("Manifests().Linked = %v, %v", revs, err)
			}
		})
	}
}

// callsSince returns the driver calls s made since before, by method,
// leaving out methods with none.
func callsSince(s Store, before map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for op, n := range s.(StatsReporter).Stats().DriverCalls {
		if d := n - before[op]; d != 0 {
			out[op] = d
		}
	}
	return out
}

// TestLayerLookup: Lookup finds a layer with two driver Stats, the link's
// and the data's, and reads neither; its time is the link's, its size the
// data's, and OpenFound reads the blob with no other call than the block
// loads. A link of 71 bytes is not read (the layout's link names its own
// digest); one of another size is, and an empty one stays corrupt.
func TestLayerLookup(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			ctx := context.Background()
			td := dc.new(t, "")
			s := newStore(t, td)
			r := repo(t, s, "team/app")
			content := []byte("layer one")
			l1 := pushBlob(t, r, content)

			before := s.(StatsReporter).Stats().DriverCalls
			info, err := r.Layers().Lookup(ctx, l1)
			if err != nil || info.Digest != l1 || info.Size != int64(len(content)) {
				t.Fatalf("Lookup = %+v, %v", info, err)
			}
			if got, want := callsSince(s, before), map[string]int64{"Stat": 2}; !maps.Equal(got, want) {
				t.Errorf("Lookup made the driver calls %v, want %v", got, want)
			}
			if lt, err := r.Layers().LinkTime(ctx, l1); err != nil || !info.ModTime.Equal(lt) {
				t.Errorf("Lookup's time %v, LinkTime %v, %v", info.ModTime, lt, err)
			}
			before = s.(StatsReporter).Stats().DriverCalls
			br := r.Layers().OpenFound(info)
			got, err := io.ReadAll(br)
			br.Close()
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("OpenFound read %q, %v", got, err)
			}
			calls := callsSince(s, before)
			if calls["Reader"] < 1 {
				t.Errorf("OpenFound's read made no Reader call: %v", calls)
			}
			delete(calls, "Reader")
			if len(calls) != 0 {
				t.Errorf("OpenFound and its read made the driver calls %v besides Reader", calls)
			}

			if _, err := r.Layers().Lookup(ctx, digest.FromString("not linked")); !errors.Is(err, ErrBlobUnknown) {
				t.Errorf("Lookup of a layer not linked: %v", err)
			}
			l2 := pushBlob(t, r, []byte("layer two"))
			if err := td.Delete(ctx, mustPath(blobDataPathSpec{digest: l2})); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Layers().Lookup(ctx, l2); !errors.Is(err, ErrBlobUnknown) {
				t.Errorf("Lookup of a layer whose data is gone: %v", err)
			}
			l3 := pushBlob(t, r, []byte("layer three"))
			if err := td.PutContent(ctx, mustPath(layerLinkPathSpec{name: "team/app", digest: l3}), nil); err != nil {
				t.Fatal(err)
			}
			var bad *CorruptLinkError
			if _, err := r.Layers().Lookup(ctx, l3); !errors.As(err, &bad) {
				t.Errorf("Lookup of a layer whose link is empty: %v, want a CorruptLinkError", err)
			}
		})
	}
}

// TestIsDirectory: a repository, a namespace holding one and an empty
// directory are directories, each told by one List; a missing name and a
// file are not.
func TestIsDirectory(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			ctx := context.Background()
			td := dc.new(t, "")
			s := newStore(t, td)
			pushBlob(t, repo(t, s, "team/app"), []byte("layer"))
			if err := td.PutContent(ctx, mustPath(repositoryPathSpec{name: "team/file"}), []byte("x")); err != nil {
				t.Fatal(err)
			}
			cases := []struct {
				name string
				want bool
			}{{"team/app", true}, {"team", true}, {"nope", false}, {"team/nope", false}, {"team/file", false}}
			if td.root != "" {
				if err := os.MkdirAll(filepath.Join(td.root, mustPath(repositoryPathSpec{name: "team/empty"})), 0o755); err != nil {
					t.Fatal(err)
				}
				cases = append(cases, struct {
					name string
					want bool
				}{"team/empty", true})
			}
			for _, c := range cases {
				before := s.(StatsReporter).Stats().DriverCalls
				got, err := s.IsDirectory(ctx, c.name)
				if err != nil || got != c.want {
					t.Errorf("IsDirectory(%q) = %v, %v; want %v", c.name, got, err, c.want)
				}
				if calls, want := callsSince(s, before), map[string]int64{"List": 1}; !maps.Equal(calls, want) {
					t.Errorf("IsDirectory(%q) made the driver calls %v, want %v", c.name, calls, want)
				}
			}
		})
	}
}
