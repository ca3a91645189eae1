package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/fsck"
	"github.com/regfs/regfs/store/internal/drivertest"
)

// The tests run on the filesystem driver in a temporary directory, so that
// modification times can be set (os.Chtimes) to put objects outside or
// inside the grace window.

type fixture struct {
	t    *testing.T
	root string
	d    driver.StorageDriver
	st   store.Store
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(d, store.Options{Cache: cache.New(1<<20, 4096), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, root: root, d: d, st: st}
}

func (f *fixture) repo(name string) store.Repository {
	f.t.Helper()
	r, err := f.st.Repository(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// blob uploads content into repo (linking it) and returns its digest.
func (f *fixture) blob(repo string, content string) digest.Digest {
	f.t.Helper()
	ctx := context.Background()
	d := digest.FromString(content)
	up, err := f.repo(repo).Uploads().Create(ctx, d)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := up.Write([]byte(content)); err != nil {
		f.t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// put stores a manifest in repo, tagged when tag is not empty.
func (f *fixture) put(repo string, content []byte, tag string) digest.Digest {
	f.t.Helper()
	d, err := f.repo(repo).Manifests().Put(context.Background(), content, tag, "")
	if err != nil {
		f.t.Fatalf("put manifest in %s: %v\n%s", repo, err, content)
	}
	return d
}

func desc(mediaType string, d digest.Digest) string {
	return fmt.Sprintf(`{"mediaType":%q,"size":1,"digest":%q}`, mediaType, d)
}

// ociManifest returns an OCI image manifest; subject may be empty.
func ociManifest(subject digest.Digest, config digest.Digest, layers ...digest.Digest) []byte {
	var ls []string
	for _, l := range layers {
		ls = append(ls, desc("application/vnd.oci.image.layer.v1.tar+gzip", l))
	}
	s := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":%s,"layers":[%s]`,
		store.MediaTypeOCIManifest, desc("application/vnd.oci.image.config.v1+json", config), strings.Join(ls, ","))
	if subject != "" {
		s += `,"subject":` + desc(store.MediaTypeOCIManifest, subject)
	}
	return []byte(s + "}")
}

// index returns an OCI index or a docker manifest list of children.
func index(mediaType, childType string, children ...digest.Digest) []byte {
	var cs []string
	for i, c := range children {
		cs = append(cs, fmt.Sprintf(`{"mediaType":%q,"size":1,"digest":%q,"platform":{"architecture":"arch%d","os":"linux"}}`, childType, c, i))
	}
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, mediaType, strings.Join(cs, ",")))
}

// image pushes a config and layers into repo and an OCI manifest over
// them, and returns the manifest's digest and the blobs.
func (f *fixture) image(repo, tag, seed string, layers int) (digest.Digest, []digest.Digest) {
	f.t.Helper()
	cfg := f.blob(repo, "config "+seed)
	blobs := []digest.Digest{cfg}
	for i := range layers {
		blobs = append(blobs, f.blob(repo, fmt.Sprintf("layer %d of %s", i, seed)))
	}
	return f.put(repo, ociManifest("", cfg, blobs[1:]...), tag), blobs
}

// age moves every file and directory's times back by d.
func (f *fixture) age(d time.Duration) {
	f.t.Helper()
	err := filepath.WalkDir(f.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		t := fi.ModTime().Add(-d)
		return os.Chtimes(p, t, t)
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) gc(opts Options) *Report {
	f.t.Helper()
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	rep, err := Run(context.Background(), f.st, f.d, opts)
	if err != nil {
		f.t.Fatalf("gc: %v", err)
	}
	if !rep.OK() {
		f.t.Fatalf("gc problems: %v", rep.Problems)
	}
	f.fsckClean()
	return rep
}

func (f *fixture) blobExists(d digest.Digest) bool {
	f.t.Helper()
	p := pathOf(store.Location{Kind: store.PathBlobData, Digest: d})
	_, err := f.d.Stat(context.Background(), p)
	if err != nil && !driver.IsNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fixture) revisionExists(repo string, d digest.Digest) bool {
	f.t.Helper()
	ok, err := f.repo(repo).Manifests().Exists(context.Background(), d)
	if err != nil {
		f.t.Fatal(err)
	}
	return ok
}

func (f *fixture) linked(repo string, d digest.Digest) bool {
	f.t.Helper()
	_, err := f.repo(repo).Layers().Stat(context.Background(), d)
	return err == nil
}

// fsckClean fails the test unless the storage checks clean.
func (f *fixture) fsckClean() {
	f.t.Helper()
	rep, err := fsck.Run(context.Background(), f.d, fsck.Options{Logger: quiet})
	if err != nil || !rep.OK() {
		f.t.Fatalf("fsck after gc: %v %v", err, rep.Problems)
	}
}

func digests(bs []BlobDeletion) []digest.Digest {
	var out []digest.Digest
	for _, b := range bs {
		out = append(out, b.Digest)
	}
	slices.Sort(out)
	return out
}

func sorted(ds ...digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

func TestLinkKeepsBlobUnlinkedBlobGoes(t *testing.T) {
	f := newFixture(t)
	kept := f.blob("a", "linked in a")
	shared := f.blob("a", "linked in a and b")
	if err := f.repo("b").Layers().Link(context.Background(), shared); err != nil {
		t.Fatal(err)
	}
	gone := f.blob("a", "unlinked")
	if err := f.repo("a").Layers().Unlink(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	if err := f.repo("a").Layers().Unlink(context.Background(), shared); err != nil {
		t.Fatal(err)
	}
	f.age(2 * time.Hour)
	rep := f.gc(Options{})
	if got := digests(rep.Blobs); !slices.Equal(got, []digest.Digest{gone}) {
		t.Fatalf("deleted %v, want only the unlinked %s", got, gone)
	}
	if rep.Total.Bytes != int64(len("unlinked")) || rep.Total.Blobs != 1 {
		t.Fatalf("total %+v", rep.Total)
	}
	if f.blobExists(gone) || !f.blobExists(kept) || !f.blobExists(shared) {
		t.Fatal("wrong blobs deleted")
	}
	// Nothing left to do: a second run deletes nothing.
	if rep := f.gc(Options{}); len(rep.Blobs) != 0 {
		t.Fatalf("second run deleted %v", rep.Blobs)
	}
}

func TestUntaggedRevisions(t *testing.T) {
	f := newFixture(t)
	tagged, tblobs := f.image("app", "v1", "tagged", 2)
	untagged, ublobs := f.image("app", "", "untagged", 2)
	// A layer the two images share.
	sharedCfg := tblobs[0]
	both := f.put("app", ociManifest("", sharedCfg, ublobs[1]), "")
	f.age(2 * time.Hour)

	// By default untagged revisions are kept, and so is everything linked.
	rep := f.gc(Options{DeleteUntagged: false, UnreferencedLayers: true})
	if rep.Total.Revisions+rep.Total.Links+rep.Total.Blobs != 0 {
		t.Fatalf("default run deleted %+v", rep.Total)
	}
	// With --delete-untagged the revisions go; their layers stay while linked.
	rep = f.gc(Options{DeleteUntagged: true})
	if rep.Total.Revisions != 2 || f.revisionExists("app", untagged) || f.revisionExists("app", both) || !f.revisionExists("app", tagged) {
		t.Fatalf("revisions deleted %+v", rep.Repositories)
	}
	for _, b := range ublobs {
		if !f.blobExists(b) {
			t.Fatalf("linked blob %s deleted", b)
		}
	}
	// The manifest blobs went with their revisions.
	if got, want := digests(rep.Blobs), sorted(untagged, both); !slices.Equal(got, want) {
		t.Fatalf("deleted blobs %v, want the manifests %v", got, want)
	}
	// --unreferenced-layers removes the links no kept revision references.
	rep = f.gc(Options{UnreferencedLayers: true})
	if got, want := rep.Repositories[0].Links, sorted(ublobs...); !slices.Equal(got, want) {
		t.Fatalf("links removed %v, want %v", got, want)
	}
	if got, want := digests(rep.Blobs), sorted(ublobs...); !slices.Equal(got, want) {
		t.Fatalf("blobs deleted %v, want %v", got, want)
	}
	if rep.Repositories[0].Blobs != len(ublobs) || rep.Blobs[0].Repository != "app" {
		t.Fatalf("blobs not attributed to app: %+v", rep.Repositories[0])
	}
	for _, b := range tblobs {
		if !f.blobExists(b) || !f.linked("app", b) {
			t.Fatalf("blob %s of the tagged image lost", b)
		}
	}
}

func TestIndexChildrenStay(t *testing.T) {
	for _, kind := range []struct{ name, index, child string }{
		{"oci index", store.MediaTypeOCIIndex, store.MediaTypeOCIManifest},
		{"docker manifest list", store.MediaTypeManifestList, store.MediaTypeOCIManifest},
	} {
		t.Run(kind.name, func(t *testing.T) {
			f := newFixture(t)
			amd, amdBlobs := f.image("multi", "", "amd64", 1)
			arm, armBlobs := f.image("multi", "", "arm64", 1)
			idx := f.put("multi", index(kind.index, kind.child, amd, arm), "latest")
			// Another index, untagged, with its own child: both go.
			old, oldBlobs := f.image("multi", "", "old", 1)
			oldIdx := f.put("multi", index(kind.index, kind.child, old), "")
			// A nested index: the tagged one's grandchildren stay too.
			deep, deepBlobs := f.image("multi", "", "deep", 1)
			inner := f.put("multi", index(kind.index, kind.child, deep), "")
			outer := f.put("multi", index(store.MediaTypeOCIIndex, store.MediaTypeOCIIndex, inner), "nested")
			f.age(2 * time.Hour)

			rep := f.gc(Options{DeleteUntagged: true, UnreferencedLayers: true})
			for _, d := range []digest.Digest{idx, amd, arm, outer, inner, deep} {
				if !f.revisionExists("multi", d) || !f.blobExists(d) {
					t.Fatalf("kept index's manifest %s deleted", d)
				}
			}
			for _, b := range slices.Concat(amdBlobs, armBlobs, deepBlobs) {
				if !f.blobExists(b) || !f.linked("multi", b) {
					t.Fatalf("child's blob %s deleted", b)
				}
			}
			if got, want := rep.Repositories[0].Revisions, sorted(old, oldIdx); !slices.Equal(got, want) {
				t.Fatalf("revisions deleted %v, want the untagged index and its child %v", got, want)
			}
			if got, want := digests(rep.Blobs), sorted(append([]digest.Digest{old, oldIdx}, oldBlobs...)...); !slices.Equal(got, want) {
				t.Fatalf("blobs deleted %v, want %v", got, want)
			}
		})
	}
}

func TestReferrersStayWithTheirSubject(t *testing.T) {
	f := newFixture(t)
	img, _ := f.image("app", "v1", "image", 1)
	sigCfg := f.blob("app", "signature config")
	sigLayer := f.blob("app", "signature payload")
	sig := f.put("app", ociManifest(img, sigCfg, sigLayer), "")
	// A referrer of the referrer (an attestation of the signature).
	att := f.put("app", ociManifest(sig, sigCfg), "")
	// A referrer whose subject is untagged goes with it.
	orphan, _ := f.image("app", "", "orphan", 1)
	orphanSig := f.put("app", ociManifest(orphan, sigCfg), "")
	f.age(2 * time.Hour)

	rep := f.gc(Options{DeleteUntagged: true, UnreferencedLayers: true})
	for _, d := range []digest.Digest{img, sig, att, sigCfg, sigLayer} {
		if !f.blobExists(d) {
			t.Fatalf("%s deleted", d)
		}
	}
	if !f.revisionExists("app", sig) || !f.revisionExists("app", att) {
		t.Fatal("referrer revision deleted")
	}
	if got, want := rep.Repositories[0].Revisions, sorted(orphan, orphanSig); !slices.Equal(got, want) {
		t.Fatalf("revisions deleted %v, want %v", got, want)
	}
}

func TestSchema1FSLayersStay(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	l1 := f.blob("old", "schema1 layer one")
	l2 := f.blob("old", "schema1 layer two")
	m := []byte(fmt.Sprintf(`{"schemaVersion":1,"name":"old","tag":"v1","architecture":"amd64","fsLayers":[{"blobSum":%q},{"blobSum":%q}],"history":[{"v1Compatibility":"{}"},{"v1Compatibility":"{}"}],"signatures":[]}`, l1, l2))
	md := digest.FromBytes(m)
	// Written as the registry stores it, without going through Put's
	// signature checks.
	dataPath := pathOf(store.Location{Kind: store.PathBlobData, Digest: md})
	revPath := pathOf(store.Location{Kind: store.PathRevisionLink, Repository: "old", Digest: md})
	tagPath := pathOf(store.Location{Kind: store.PathTagCurrentLink, Repository: "old", Tag: "v1"})
	for p, c := range map[string][]byte{dataPath: m, revPath: []byte(md), tagPath: []byte(md)} {
		if err := f.d.PutContent(ctx, p, c); err != nil {
			t.Fatal(err)
		}
	}
	// The links go with --unreferenced-layers only when nothing references
	// them: here the manifest does.
	f.age(2 * time.Hour)
	rep := f.gc(Options{DeleteUntagged: true, UnreferencedLayers: true})
	if rep.Total.Links+rep.Total.Blobs+rep.Total.Revisions != 0 {
		t.Fatalf("deleted %+v", rep.Total)
	}
	// Even unlinked, fsLayers of a tagged schema1 manifest stay.
	for _, l := range []digest.Digest{l1, l2} {
		if err := f.repo("old").Layers().Unlink(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	f.age(2 * time.Hour)
	if rep := f.gc(Options{}); len(rep.Blobs) != 0 || !f.blobExists(l1) || !f.blobExists(l2) {
		t.Fatalf("fsLayers deleted: %v", rep.Blobs)
	}
}

func TestGraceWindow(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	untagged, _ := f.image("app", "", "untagged", 1)
	unref := f.blob("app", "linked, unreferenced")
	loose := f.blob("app", "unlinked")
	if err := f.repo("app").Layers().Unlink(ctx, loose); err != nil {
		t.Fatal(err)
	}
	// Everything was written just now: inside the grace window.
	opts := Options{DeleteUntagged: true, UnreferencedLayers: true}
	rep := f.gc(opts)
	if rep.Total.Revisions+rep.Total.Links+rep.Total.Blobs != 0 {
		t.Fatalf("deleted inside the grace window: %+v", rep.Total)
	}
	if rep.Spared.Grace == 0 {
		t.Fatal("nothing counted as spared by the grace window")
	}
	// An hour and a bit later, everything goes.
	f.age(61 * time.Minute)
	rep = f.gc(opts)
	if f.revisionExists("app", untagged) || f.linked("app", unref) || f.blobExists(loose) || f.blobExists(unref) {
		t.Fatalf("not deleted once outside the window: %+v", rep.Total)
	}
	// Grace 0 (as the registry's collector): deleted at once.
	f2 := newFixture(t)
	b := f2.blob("x", "at once")
	if err := f2.repo("x").Layers().Unlink(ctx, b); err != nil {
		t.Fatal(err)
	}
	if rep := f2.gc(Options{Grace: -1}); len(rep.Blobs) != 1 {
		t.Fatalf("grace 0 deleted %v", rep.Blobs)
	}
}

// A re-linked blob is as new: the link's time counts, not the blob's.
func TestRelinkInsideGraceWindow(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	img, blobs := f.image("app", "v1", "image", 1)
	f.age(2 * time.Hour)
	// Untag and unreference the layer, then link it again now.
	if err := f.repo("app").Manifests().Delete(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := f.repo("app").Layers().Link(ctx, blobs[1]); err != nil {
		t.Fatal(err)
	}
	rep := f.gc(Options{UnreferencedLayers: true})
	if !f.linked("app", blobs[1]) || !f.blobExists(blobs[1]) {
		t.Fatal("re-linked blob deleted inside the grace window")
	}
	if got, want := rep.Repositories[0].Links, []digest.Digest{blobs[0]}; !slices.Equal(got, want) {
		t.Fatalf("links removed %v, want the config's %v", got, want)
	}
}

func TestRecheckSavesWhatChangedAfterTheMark(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	loose := f.blob("a", "unlinked, then linked again during the run")
	if err := f.repo("a").Layers().Unlink(ctx, loose); err != nil {
		t.Fatal(err)
	}
	untagged, blobs := f.image("a", "", "tagged during the run", 1)
	f.age(2 * time.Hour)
	opts := Options{DeleteUntagged: true, UnreferencedLayers: true, Grace: -1}
	opts.afterMark = func() {
		// Another writer links the blob into b (a cross-repository mount
		// of the blob's bytes) and tags the revision.
		if err := f.repo("b").Layers().Link(ctx, loose); err != nil {
			t.Error(err)
		}
		if err := f.repo("a").Tags().Tag(ctx, "late", untagged); err != nil {
			t.Error(err)
		}
	}
	rep := f.gc(opts)
	if !f.blobExists(loose) || !f.linked("b", loose) {
		t.Fatal("blob linked after the mark was deleted")
	}
	if !f.revisionExists("a", untagged) {
		t.Fatal("revision tagged after the mark was deleted")
	}
	for _, b := range append(blobs, untagged) {
		if !f.blobExists(b) || (b != untagged && !f.linked("a", b)) {
			t.Fatalf("blob %s of the revision tagged after the mark deleted", b)
		}
	}
	if rep.Spared.Recheck < 2 {
		t.Fatalf("spared by re-check %d, want at least 2 (blob and revision)", rep.Spared.Recheck)
	}
	if rep.Total.Revisions+rep.Total.Blobs+rep.Total.Links != 0 {
		t.Fatalf("deleted %+v", rep.Total)
	}
}

// A manifest pushed after the mark that references an unreferenced link
// keeps it.
func TestRecheckNewManifestKeepsItsLinks(t *testing.T) {
	f := newFixture(t)
	layer := f.blob("a", "layer")
	cfg := f.blob("a", "config")
	f.age(2 * time.Hour)
	opts := Options{UnreferencedLayers: true, Grace: -1}
	var pushed digest.Digest
	opts.afterMark = func() {
		pushed = f.put("a", ociManifest("", cfg, layer), "v1")
	}
	rep := f.gc(opts)
	if !f.linked("a", layer) || !f.linked("a", cfg) || !f.revisionExists("a", pushed) {
		t.Fatalf("links of a manifest pushed during the run removed: %+v", rep.Repositories)
	}
}

func TestUploads(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	start := func(content string) string {
		up, err := f.repo("app").Uploads().Create(ctx, digest.FromString(content+" whole"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		return up.ID()
	}
	setStarted := func(id string, ago time.Duration) {
		p := pathOf(store.Location{Kind: store.PathUploadStartedAt, Repository: "app", Upload: id})
		if err := f.d.PutContent(ctx, p, []byte(time.Now().Add(-ago).UTC().Format(time.RFC3339))); err != nil {
			t.Fatal(err)
		}
	}
	old := start("abandoned")
	setStarted(old, 8*24*time.Hour)
	fresh := start("started an hour ago")
	setStarted(fresh, time.Hour)
	active := start("started long ago, written now")
	setStarted(active, 8*24*time.Hour)
	f.age(2 * time.Hour)
	// The active one is written to now.
	p := pathOf(store.Location{Kind: store.PathUploadData, Repository: "app", Upload: active})
	now := time.Now()
	if err := os.Chtimes(filepath.Join(f.root, p), now, now); err != nil {
		t.Fatal(err)
	}
	rep := f.gc(Options{})
	if len(rep.Repositories) != 1 || len(rep.Repositories[0].Uploads) != 1 || rep.Repositories[0].Uploads[0].ID != old {
		t.Fatalf("uploads removed %+v, want only %s", rep.Repositories, old)
	}
	if rep.Total.Bytes != int64(len("abandoned")) {
		t.Fatalf("bytes %d", rep.Total.Bytes)
	}
	ups, err := f.repo("app").Uploads().List(ctx)
	if err != nil || len(ups) != 2 {
		t.Fatalf("uploads left %v %v", ups, err)
	}
	// A shorter upload age takes the hour-old one too.
	rep = f.gc(Options{UploadAge: 30 * time.Minute})
	if len(rep.Repositories) != 1 || len(rep.Repositories[0].Uploads) != 1 || rep.Repositories[0].Uploads[0].ID != fresh {
		t.Fatalf("uploads removed %+v, want only %s", rep.Repositories, fresh)
	}
}

func TestPruneEmpty(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	b := f.blob("gone/app", "only blob")
	if err := f.repo("gone/app").Layers().Unlink(ctx, b); err != nil {
		t.Fatal(err)
	}
	f.image("kept", "v1", "image", 1)
	f.age(2 * time.Hour)
	if rep := f.gc(Options{}); rep.Total.Repositories != 0 {
		t.Fatal("repository removed without --prune-empty")
	}
	rep := f.gc(Options{PruneEmpty: true})
	if rep.Total.Repositories != 1 || !rep.Repositories[0].Removed || rep.Repositories[0].Name != "gone/app" {
		t.Fatalf("removed %+v", rep.Repositories)
	}
	repos, err := f.st.Repositories(ctx)
	if err != nil || !slices.Equal(repos, []string{"kept"}) {
		t.Fatalf("repositories left %v %v", repos, err)
	}
}

// treeFiles lists every file below root with its content.
func treeFiles(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[strings.TrimPrefix(p, root)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// busyTree builds a tree with something of every kind to delete.
func busyTree(f *fixture) {
	ctx := context.Background()
	f.image("app", "v1", "tagged", 2)
	f.image("app", "", "untagged", 2)
	amd, _ := f.image("multi", "", "amd", 1)
	f.put("multi", index(store.MediaTypeOCIIndex, store.MediaTypeOCIManifest, amd), "latest")
	old, _ := f.image("multi", "", "old", 1)
	f.put("multi", index(store.MediaTypeOCIIndex, store.MediaTypeOCIManifest, old), "")
	for i := range 5 {
		b := f.blob("loose", fmt.Sprintf("loose %d", i))
		if err := f.repo("loose").Layers().Unlink(ctx, b); err != nil {
			f.t.Fatal(err)
		}
	}
	up, err := f.repo("app").Uploads().Create(ctx, digest.FromString("never"))
	if err != nil {
		f.t.Fatal(err)
	}
	_, _ = up.Write([]byte("part"))
	if err := up.Close(); err != nil {
		f.t.Fatal(err)
	}
	p := pathOf(store.Location{Kind: store.PathUploadStartedAt, Repository: "app", Upload: up.ID()})
	if err := f.d.PutContent(ctx, p, []byte(time.Now().Add(-8*24*time.Hour).UTC().Format(time.RFC3339))); err != nil {
		f.t.Fatal(err)
	}
	f.age(8 * 24 * time.Hour)
}

func TestDryRunDeletesNothingAndPredictsTheRun(t *testing.T) {
	f := newFixture(t)
	busyTree(f)
	before := treeFiles(t, f.root)
	opts := Options{DeleteUntagged: true, UnreferencedLayers: true, PruneEmpty: true}
	dry := opts
	dry.DryRun = true
	plan := f.gc(dry)
	if after := treeFiles(t, f.root); !mapsEqual(before, after) {
		t.Fatal("dry run changed the storage")
	}
	if plan.Total.Revisions == 0 || plan.Total.Blobs == 0 || plan.Total.Links == 0 || plan.Total.Uploads == 0 || plan.Total.Repositories == 0 {
		t.Fatalf("dry run found too little to test with: %+v", plan.Total)
	}
	done := f.gc(opts)
	plan.DryRun, plan.Elapsed, done.Elapsed = false, 0, 0
	if fmt.Sprint(plan.Repositories, plan.Blobs, plan.Total) != fmt.Sprint(done.Repositories, done.Blobs, done.Total) {
		t.Fatalf("dry run predicted\n%+v\nthe run did\n%+v", plan, done)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// cancelAfter is a driver whose context is cancelled after n deletions:
// a gc killed in the middle of its sweep.
type cancelAfter struct {
	driver.StorageDriver
	mu     sync.Mutex
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Delete(ctx context.Context, p string) error {
	c.mu.Lock()
	c.n--
	stop := c.n < 0
	c.mu.Unlock()
	if stop {
		c.cancel()
		return ctx.Err()
	}
	return c.StorageDriver.Delete(ctx, p)
}

func TestInterruptedRunsConverge(t *testing.T) {
	opts := Options{DeleteUntagged: true, UnreferencedLayers: true, PruneEmpty: true, Logger: quiet, Grace: DefaultGrace}
	ref := newFixture(t)
	busyTree(ref)
	ref.gc(opts)
	want := treeFiles(t, ref.root)
	for n := 0; ; n++ {
		f := newFixture(t)
		busyTree(f)
		ctx, cancel := context.WithCancel(context.Background())
		cd := &cancelAfter{StorageDriver: f.d, n: n, cancel: cancel}
		st, err := store.New(cd, store.Options{Cache: cache.New(1<<20, 4096), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Run(ctx, st, cd, opts)
		cancel()
		if err == nil {
			break // n deletions were enough to finish
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted after %d deletions: %v", n, err)
		}
		// Interrupted: the tree is consistent, and a second run finishes.
		f.fsckClean()
		f.gc(opts)
		if got := treeFiles(t, f.root); !mapsEqual(got, want) {
			t.Fatalf("interrupted after %d deletions, then rerun: the tree differs from one uninterrupted run", n)
		}
	}
}

type fence struct{ blobs map[digest.Digest]bool }

func (f fence) HoldsBlob(d digest.Digest) bool   { return f.blobs[d] }
func (f fence) HoldsUpload(repo, id string) bool { return true }

func TestFenceKeepsInFlightWrites(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	b := f.blob("a", "being linked by the mount")
	other := f.blob("a", "not")
	for _, d := range []digest.Digest{b, other} {
		if err := f.repo("a").Layers().Unlink(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	up, err := f.repo("a").Uploads().Create(ctx, digest.FromString("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	p := pathOf(store.Location{Kind: store.PathUploadStartedAt, Repository: "a", Upload: up.ID()})
	if err := f.d.PutContent(ctx, p, []byte(time.Now().Add(-30*24*time.Hour).UTC().Format(time.RFC3339))); err != nil {
		t.Fatal(err)
	}
	f.age(30 * 24 * time.Hour)
	rep := f.gc(Options{Grace: -1, Fence: fence{blobs: map[digest.Digest]bool{b: true}}})
	if !f.blobExists(b) || f.blobExists(other) {
		t.Fatalf("fence not honoured: %v", rep.Blobs)
	}
	if rep.Total.Uploads != 0 {
		t.Fatal("open upload removed")
	}
	if rep.Spared.Fenced != 2 {
		t.Fatalf("fenced %d, want 2", rep.Spared.Fenced)
	}
}

// A repository directory that cannot be listed may link any blob: no blob
// is deleted, and the run reports why.
func TestUnreadableDirectoryKeepsBlobs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.blob("hidden", "linked in a repository gc cannot list")
	loose := f.blob("a", "unlinked")
	if err := f.repo("a").Layers().Unlink(ctx, loose); err != nil {
		t.Fatal(err)
	}
	f.age(2 * time.Hour)
	hidden := pathOf(store.Location{Kind: store.PathLayers, Repository: "hidden"})
	dt := &drivertest.Driver{StorageDriver: f.d, Unreadable: []string{hidden}}
	rep, err := Run(ctx, f.st, dt, Options{Grace: DefaultGrace, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !strings.Contains(rep.BlobSweepSkipped, "could not be listed") || len(rep.Blobs) != 0 || !f.blobExists(loose) {
		t.Fatalf("blobs deleted beside an unreadable directory: %+v", rep)
	}
	// Readable again, the run deletes the unlinked blob only.
	if rep := f.gc(Options{}); len(rep.Blobs) != 1 || rep.Blobs[0].Digest != loose {
		t.Fatalf("deleted %v", rep.Blobs)
	}
}

// A push that re-sends the bytes of a garbage blob keeps the stored blob
// (and its old time) and links it once the upload is verified: while the
// upload is there, a blob of its size is spared.
func TestUploadInProgressSparesBlobOfItsSize(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	garbage := f.blob("a", "sixteen bytes!!!")
	other := f.blob("a", "a blob of another size")
	for _, d := range []digest.Digest{garbage, other} {
		if err := f.repo("a").Layers().Unlink(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	f.age(2 * time.Hour)
	up, err := f.repo("b").Uploads().Create(ctx, garbage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write([]byte("sixteen bytes!!!")); err != nil {
		t.Fatal(err)
	}
	if err := up.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rep := f.gc(Options{})
	if !f.blobExists(garbage) || f.blobExists(other) {
		t.Fatalf("deleted %v", rep.Blobs)
	}
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !f.linked("b", garbage) {
		t.Fatal("not linked after the commit")
	}
}

// Inside a mount the store's own writers are fenced: with no grace window
// at all, the garbage blob an open upload is about to become stays.
func TestStoreFenceInsideTheProcess(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	garbage := f.blob("a", "garbage the mount is uploading again")
	if err := f.repo("a").Layers().Unlink(ctx, garbage); err != nil {
		t.Fatal(err)
	}
	f.age(2 * time.Hour)
	up, err := f.repo("b").Uploads().Create(ctx, garbage)
	if err != nil {
		t.Fatal(err)
	}
	fence, release := store.TakeFence(f.st)
	rep := f.gc(Options{Grace: -1, Fence: fence})
	release()
	if !f.blobExists(garbage) || rep.Spared.Fenced != 1 {
		t.Fatalf("fenced blob deleted (spared %+v)", rep.Spared)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed, and nothing fencing it: it goes.
	fence, release = store.TakeFence(f.st)
	defer release()
	if rep := f.gc(Options{Grace: -1, Fence: fence}); len(rep.Blobs) != 1 {
		t.Fatalf("deleted %v", rep.Blobs)
	}
}

// linkOnDelete links a blob into a repository when the blob sweep deletes
// another: a link written while the sweep goes on.
type linkOnDelete struct {
	driver.StorageDriver
	trigger string
	link    func()
}

func (l *linkOnDelete) Delete(ctx context.Context, p string) error {
	err := l.StorageDriver.Delete(ctx, p)
	if p == l.trigger {
		l.link()
	}
	return err
}

// The link set is walked again during the blob sweep (every rewalkEvery;
// here before every blob), so a link written in the middle of the sweep
// saves the blob.
func TestLinkWrittenDuringTheBlobSweep(t *testing.T) {
	old := rewalkEvery
	rewalkEvery = 0
	defer func() { rewalkEvery = old }()
	f := newFixture(t)
	ctx := context.Background()
	a := f.blob("x", "first")
	b := f.blob("x", "second")
	for _, d := range []digest.Digest{a, b} {
		if err := f.repo("x").Layers().Unlink(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	f.age(2 * time.Hour)
	first, second := a, b
	if second < first {
		first, second = second, first
	}
	ld := &linkOnDelete{StorageDriver: f.d, trigger: pathOf(store.Location{Kind: store.PathBlob, Digest: first}), link: func() {
		if err := f.repo("y").Layers().Link(ctx, second); err != nil {
			t.Error(err)
		}
	}}
	rep, err := Run(ctx, f.st, ld, Options{Grace: DefaultGrace, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Blobs) != 1 || rep.Blobs[0].Digest != first || !f.blobExists(second) || rep.Spared.Recheck != 1 {
		t.Fatalf("deleted %v, spared %+v", rep.Blobs, rep.Spared)
	}
	f.fsckClean()
}

// janitor is a driver with crash leftovers to clean.
type janitor struct {
	driver.StorageDriver
	cleaned int
}

func (j *janitor) Leftovers(context.Context) ([]string, error) { return nil, nil }
func (j *janitor) Clean(context.Context) error                 { j.cleaned++; return nil }

func TestDriverLeftoversCleanedAfterTheSweep(t *testing.T) {
	f := newFixture(t)
	j := &janitor{StorageDriver: f.d}
	if _, err := Run(context.Background(), f.st, j, Options{DryRun: true, Logger: quiet}); err != nil || j.cleaned != 0 {
		t.Fatalf("dry run: %v, cleaned %d times", err, j.cleaned)
	}
	if _, err := Run(context.Background(), f.st, j, Options{Logger: quiet}); err != nil || j.cleaned != 1 {
		t.Fatalf("run: %v, cleaned %d times", err, j.cleaned)
	}
}

// TestDeletedBlobLeavesTheCache: a reader open on a blob before gc
// deleted it is not served the blob's cached bytes afterwards, but the
// storage's answer: the blob is gone.
func TestDeletedBlobLeavesTheCache(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	gone := f.blob("a", "read, then unlinked and collected")
	r, err := f.repo("a").Layers().Open(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, r.Size())
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.repo("a").Layers().Unlink(ctx, gone); err != nil {
		t.Fatal(err)
	}
	f.age(2 * time.Hour)
	if got := digests(f.gc(Options{}).Blobs); !slices.Equal(got, []digest.Digest{gone}) {
		t.Fatalf("deleted %v, want %s", got, gone)
	}
	if n, err := r.ReadAt(buf, 0); err == nil {
		t.Fatalf("read %d bytes %q of a deleted blob", n, buf[:n])
	} else if !driver.IsNotFound(err) && !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("read of a deleted blob: %v, want not found", err)
	}
}

// TestUploadWithoutStartedAtAgedByItsTimes: an upload with no startedat
// (its writer died first) is aged by the latest time of its directory and
// files, as fsck ages it: last written eight days ago it goes, two days
// ago it stays.
func TestUploadWithoutStartedAtAgedByItsTimes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ids := map[time.Duration]string{}
	for _, ago := range []time.Duration{8 * 24 * time.Hour, 48 * time.Hour} {
		up, err := f.repo("app").Uploads().Create(ctx, digest.FromString(ago.String()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write([]byte(ago.String())); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		p := pathOf(store.Location{Kind: store.PathUploadStartedAt, Repository: "app", Upload: up.ID()})
		if err := f.d.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
		mtime := time.Now().Add(-ago)
		dir := filepath.Join(f.root, pathOf(store.Location{Kind: store.PathUpload, Repository: "app", Upload: up.ID()}))
		err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Chtimes(p, mtime, mtime)
		})
		if err != nil {
			t.Fatal(err)
		}
		ids[ago] = up.ID()
	}
	rep := f.gc(Options{})
	if len(rep.Repositories) != 1 || len(rep.Repositories[0].Uploads) != 1 || rep.Repositories[0].Uploads[0].ID != ids[8*24*time.Hour] {
		t.Fatalf("uploads removed %+v, want only the one last written 8 days ago", rep.Repositories)
	}
	if _, err := f.repo("app").Uploads().Stat(ctx, ids[48*time.Hour]); err != nil {
		t.Fatalf("the upload last written 2 days ago: %v", err)
	}
}
