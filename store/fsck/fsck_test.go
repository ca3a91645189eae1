package fsck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/internal/drivertest"
)

const app = "team/app"

// fixture is a store holding every kind of object fsck checks: layers, a
// tagged manifest re-tagged once (two index entries), a second tag whose
// revision has a schema1 signature link, and an upload in progress.
type fixture struct {
	d         driver.StorageDriver
	cfg, sig  digest.Digest
	layers    []digest.Digest
	manifest  digest.Digest // v1's first revision
	manifest2 digest.Digest // v1 now
	manifest3 digest.Digest // old
	upload    string
}

func newFixture(t *testing.T, d driver.StorageDriver) *fixture {
	t.Helper()
	ctx := context.Background()
	r := repo(t, newStore(t, d), app)
	fx := &fixture{d: d}
	fx.cfg = pushBlob(t, r, []byte(`{"architecture":"amd64","os":"linux"}`))
	fx.layers = []digest.Digest{pushBlob(t, r, []byte("layer one")), pushBlob(t, r, []byte("layer two"))}
	var err error
	if fx.manifest, err = r.Manifests().Put(ctx, schema2(fx.cfg, fx.layers...), "v1", ""); err != nil {
		t.Fatal(err)
	}
	if fx.manifest2, err = r.Manifests().Put(ctx, schema2(fx.cfg, fx.layers[0]), "v1", ""); err != nil {
		t.Fatal(err)
	}
	if fx.manifest3, err = r.Manifests().Put(ctx, schema2(fx.cfg, fx.layers[1]), "old", ""); err != nil {
		t.Fatal(err)
	}
	fx.sig = pushBlob(t, r, []byte("a signature"))
	put(t, d, store.Location{Kind: store.PathSignatureLink, Repository: app, Digest: fx.manifest3, Signature: fx.sig}, fx.sig.String())
	up, err := r.Uploads().Create(ctx, digest.FromString("not finished"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write([]byte("not")); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	fx.upload = up.ID()
	// startedat is "now" by the wall clock; put it an hour before the
	// test clock so its age is known.
	put(t, d, store.Location{Kind: store.PathUploadStartedAt, Repository: app, Upload: fx.upload}, fsckNow.Add(-time.Hour).Format(time.RFC3339))
	return fx
}

func (fx *fixture) loc(kind store.PathKind, d digest.Digest, tag string) store.Location {
	return store.Location{Kind: kind, Repository: app, Digest: d, Tag: tag}
}

func TestCleanStore(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, testdataRoot)
			fx := newFixture(t, td)
			before := snapshot(t, td)
			rep := run(t, td, false)
			if !rep.OK() {
				t.Fatalf("clean store reported problems:%s", problemsString(rep.Problems))
			}
			// testdata: 5 blobs; fixture: config, 2 layers, 3 manifests
			// and the signature.
			if rep.Blobs != 12 || rep.Repositories != 3 || rep.Tags != 5 {
				t.Errorf("Blobs %d, Repositories %d, Tags %d; want 12, 3, 5", rep.Blobs, rep.Repositories, rep.Tags)
			}
			// testdata: 12 links; fixture: 4 layer, 3 revision, 1
			// signature, 2 current and 3 index links.
			if rep.Links != 12+13 {
				t.Errorf("Links = %d, want 25", rep.Links)
			}
			want := []Upload{
				{Repository: "hello", ID: tdUploadID, Size: 16,
					StartedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Age: 24 * time.Hour, AgeSeconds: 86400},
				{Repository: app, ID: fx.upload, Expected: digest.FromString("not finished"), Size: 3,
					StartedAt: fsckNow.Add(-time.Hour), Age: time.Hour, AgeSeconds: 3600},
			}
			for i := range want {
				want[i].Path = pathOf(t, store.Location{Kind: store.PathUpload, Repository: want[i].Repository, Upload: want[i].ID})
			}
			for i := range rep.Uploads {
				// The times of the upload's files are the test's run time.
				if rep.Uploads[i].LastModified.IsZero() {
					t.Errorf("upload %s: no LastModified", rep.Uploads[i].ID)
				}
				rep.Uploads[i].LastModified = time.Time{}
			}
			if !slices.Equal(rep.Uploads, want) {
				t.Errorf("Uploads = %+v\nwant %+v", rep.Uploads, want)
			}
			if len(rep.Removed)+len(rep.Rewritten) != 0 {
				t.Errorf("changed %v %v without repair", rep.Removed, rep.Rewritten)
			}
			if diff := diffSnapshots(before, snapshot(t, td)); diff != "" {
				t.Errorf("fsck changed storage:\n%s", diff)
			}
		})
	}
}

func TestEmptyStorage(t *testing.T) {
	rep := run(t, inmemory.New(), false)
	if !rep.OK() || rep.Blobs != 0 || rep.Repositories != 0 || len(rep.Uploads) != 0 {
		t.Errorf("empty storage: %+v", rep)
	}
}

// planted is one problem planted in a fixture, and what fsck must report
// for it.
type planted struct {
	name string
	// plant damages storage and returns the path fsck must report.
	plant  func(t *testing.T, fx *fixture) string
	kind   Kind
	fix    Fix
	digest func(fx *fixture) digest.Digest
	// rewrite is what a repair must leave in the file, for FixRewrite.
	rewrite func(fx *fixture) digest.Digest
}

var missing = digest.FromString("no such blob")

func none(*fixture) digest.Digest { return "" }

var plantings = []planted{
	{"corrupt blob", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathBlobData, fx.layers[1], ""), "layer tw0")
	}, CorruptBlob, FixRepush, func(fx *fixture) digest.Digest { return fx.layers[1] }, nil},
	{"truncated blob", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathBlobData, fx.layers[0], ""), "layer")
	}, CorruptBlob, FixRepush, func(fx *fixture) digest.Digest { return fx.layers[0] }, nil},
	{"dangling layer link", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathLayerLink, missing, ""), missing.String())
	}, DanglingLink, FixRepush, func(*fixture) digest.Digest { return missing }, nil},
	{"layer whose blob was deleted", func(t *testing.T, fx *fixture) string {
		if err := fx.d.Delete(context.Background(), pathOf(t, fx.loc(store.PathBlobData, fx.cfg, ""))); err != nil {
			t.Fatal(err)
		}
		return pathOf(t, fx.loc(store.PathLayerLink, fx.cfg, ""))
	}, DanglingLink, FixRepush, func(fx *fixture) digest.Digest { return fx.cfg }, nil},
	{"dangling revision link", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathRevisionLink, missing, ""), missing.String())
	}, DanglingLink, FixRepush, func(*fixture) digest.Digest { return missing }, nil},
	{"dangling signature link", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, store.Location{Kind: store.PathSignatureLink, Repository: app, Digest: fx.manifest3, Signature: missing}, missing.String())
	}, DanglingLink, FixRepush, func(*fixture) digest.Digest { return missing }, nil},
	{"dangling tag index link", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathTagIndexEntryLink, missing, "v1"), missing.String())
	}, DanglingLink, FixRemove, func(*fixture) digest.Digest { return missing }, nil},
	{"dangling tag", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathTagCurrentLink, "", "gone"), missing.String())
	}, DanglingLink, FixRepush, func(*fixture) digest.Digest { return missing }, nil},
	{"link with a newline", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathLayerLink, fx.layers[0], ""), fx.layers[0].String()+"\n")
	}, MalformedLink, FixRewrite, func(fx *fixture) digest.Digest { return fx.layers[0] }, func(fx *fixture) digest.Digest { return fx.layers[0] }},
	{"revision link in upper case", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathRevisionLink, fx.manifest, ""), "sha256:"+strings.ToUpper(fx.manifest.Encoded()))
	}, MalformedLink, FixRewrite, func(fx *fixture) digest.Digest { return fx.manifest }, func(fx *fixture) digest.Digest { return fx.manifest }},
	{"empty tag link", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathTagCurrentLink, "", "v1"), "")
	}, MalformedLink, FixRepush, none, nil},
	{"tag link with a newline", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathTagCurrentLink, "", "old"), fx.manifest3.String()+"\n")
	}, MalformedLink, FixRewrite, func(fx *fixture) digest.Digest { return fx.manifest3 }, func(fx *fixture) digest.Digest { return fx.manifest3 }},
	{"link of another algorithm", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathTagIndexEntryLink, fx.manifest, "v1"), digest.SHA512.FromString("x").String())
	}, MalformedLink, FixRewrite, func(fx *fixture) digest.Digest { return fx.manifest }, func(fx *fixture) digest.Digest { return fx.manifest }},
	{"link under another digest", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathLayerLink, fx.layers[0], ""), fx.layers[1].String())
	}, LinkMismatch, FixRewrite, func(fx *fixture) digest.Digest { return fx.layers[1] }, func(fx *fixture) digest.Digest { return fx.layers[0] }},
	{"tag pointing at a missing revision", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, fx.loc(store.PathTagCurrentLink, "", "latest"), fx.cfg.String())
	}, TagRevisionMissing, FixRepush, func(fx *fixture) digest.Digest { return fx.cfg }, nil},
	{"tag whose revision was unlinked", func(t *testing.T, fx *fixture) string {
		if err := fx.d.Delete(context.Background(), pathOf(t, fx.loc(store.PathRevisionLink, fx.manifest2, ""))); err != nil {
			t.Fatal(err)
		}
		return pathOf(t, fx.loc(store.PathTagCurrentLink, "", "v1"))
	}, TagRevisionMissing, FixRepush, func(fx *fixture) digest.Digest { return fx.manifest2 }, nil},
	{"upload with a bad startedat", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, store.Location{Kind: store.PathUploadStartedAt, Repository: app, Upload: fx.upload}, "yesterday")
	}, MalformedUpload, FixNone, none, nil},
	{"upload with a bad expected digest", func(t *testing.T, fx *fixture) string {
		return put(t, fx.d, store.Location{Kind: store.PathUploadExpected, Repository: app, Upload: fx.upload}, "sha256:abc")
	}, MalformedUpload, FixNone, none, nil},
	{"blob under the wrong prefix", func(t *testing.T, fx *fixture) string {
		wrong := pathOf(t, store.Location{Kind: store.PathBlobPrefix, Prefix: "00"}) + "/" + fx.cfg.Encoded()
		if err := fx.d.PutContent(context.Background(), wrong+"/data", []byte("x")); err != nil {
			t.Fatal(err)
		}
		return wrong
	}, UnexpectedEntry, FixNone, none, nil},
	{"layer directory not named by a digest", func(t *testing.T, fx *fixture) string {
		dir := pathOf(t, fx.loc(store.PathLayers, "", "")) + "/latest"
		if err := fx.d.PutContent(context.Background(), dir+"/link", []byte(fx.cfg.String())); err != nil {
			t.Fatal(err)
		}
		return dir
	}, UnexpectedEntry, FixNone, none, nil},
}

// TestFindsEachProblem plants one problem at a time in a clean store and
// checks that exactly it is reported, with its kind, path, digest and fix,
// on both drivers.
func TestFindsEachProblem(t *testing.T) {
	for _, dc := range drivers {
		for _, pp := range plantings {
			t.Run(dc.name+"/"+pp.name, func(t *testing.T) {
				fx := newFixture(t, dc.new(t, ""))
				p := pp.plant(t, fx)
				rep := run(t, fx.d, false)
				if len(rep.Problems) != 1 {
					t.Fatalf("want exactly one problem, got %d:%s", len(rep.Problems), problemsString(rep.Problems))
				}
				got := rep.Problems[0]
				if got.Kind != pp.kind || got.Path != p || got.Digest != pp.digest(fx) || got.Fix != pp.fix || got.Repaired || got.Detail == "" {
					t.Errorf("got %+v\nwant kind %s path %s digest %s fix %q", got, pp.kind, p, pp.digest(fx), pp.fix)
				}
			})
		}
	}
}

// plantAll plants every problem in one fixture and returns them by path.
func plantAll(t *testing.T, fx *fixture) map[string]planted {
	t.Helper()
	out := map[string]planted{}
	skip := map[string]bool{
		// These damage what another planting damages too, or what it
		// needs intact.
		"link with a newline": true, "empty tag link": true, "tag whose revision was unlinked": true,
		"layer whose blob was deleted": true,
	}
	for _, pp := range plantings {
		if !skip[pp.name] {
			out[pp.plant(t, fx)] = pp
		}
	}
	return out
}

func TestChangesNothing(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, testdataRoot)
			fx := newFixture(t, td)
			want := plantAll(t, fx)
			if td.root != "" {
				// An empty directory, which only a repair removes.
				if err := os.MkdirAll(filepath.Join(td.root, pathOf(t, store.Location{Kind: store.PathLayer, Repository: "hello", Digest: missing})), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, fx.d)
			rep := run(t, fx.d, false)
			if len(rep.Problems) != len(want) {
				t.Errorf("%d problems, want %d:%s", len(rep.Problems), len(want), problemsString(rep.Problems))
			}
			for _, p := range rep.Problems {
				if w, ok := want[p.Path]; !ok || w.kind != p.Kind || w.fix != p.Fix {
					t.Errorf("unexpected %s (fix %q)", p, p.Fix)
				}
			}
			if !sort.SliceIsSorted(rep.Problems, func(i, j int) bool { return rep.Problems[i].Path < rep.Problems[j].Path }) {
				t.Error("problems not sorted by path")
			}
			if diff := diffSnapshots(before, snapshot(t, fx.d)); diff != "" {
				t.Errorf("fsck without repair changed storage:\n%s", diff)
			}
		})
	}
}

// TestRepair checks that a repair rewrites what it can recompute exactly,
// removes only garbage (and, on disk, empty directories), keeps what needs
// a re-push, and that a second run finds only what a repair leaves.
func TestRepair(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, testdataRoot)
			fx := newFixture(t, td)
			want := plantAll(t, fx)
			var emptyDirs []string
			if td.root != "" {
				// Directories the registry leaves when it unlinks a layer,
				// and a blob directory a crash left without data.
				blobDir := pathOf(t, store.Location{Kind: store.PathBlob, Digest: missing})
				for _, dir := range []string{
					pathOf(t, store.Location{Kind: store.PathLayer, Repository: "hello", Digest: missing}),
					pathOf(t, store.Location{Kind: store.PathTagIndex, Repository: "hello", Tag: "deleted"}),
					blobDir,
				} {
					if err := os.MkdirAll(filepath.Join(td.root, dir), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				emptyDirs = []string{
					pathOf(t, store.Location{Kind: store.PathLayer, Repository: "hello", Digest: missing}),
					pathOf(t, store.Location{Kind: store.PathTag, Repository: "hello", Tag: "deleted"}),
					filepath.Dir(blobDir), // blobs/sha256/<hh>/ is new too, so it goes whole
				}
			}
			before := snapshot(t, td)
			rep := run(t, td, true)
			after := snapshot(t, td)
			var rewritten, removed, removedDirs []string
			for _, c := range rep.Rewritten {
				rewritten = append(rewritten, c.Path)
			}
			for _, c := range rep.Removed {
				if c.Reason == ReasonEmptyDirectory {
					removedDirs = append(removedDirs, c.Path)
				} else {
					removed = append(removed, c.Path)
				}
			}
			var wantRewritten, wantRemoved []string
			for _, p := range rep.Problems {
				w, ok := want[p.Path]
				if !ok || w.kind != p.Kind || w.fix != p.Fix {
					t.Errorf("unexpected %s (fix %q)", p, p.Fix)
					continue
				}
				if p.Repaired != (w.fix == FixRewrite || w.fix == FixRemove) {
					t.Errorf("%s: Repaired = %v", p, p.Repaired)
				}
				switch w.fix {
				case FixRewrite:
					wantRewritten = append(wantRewritten, p.Path)
					if got, wantC := after[p.Path], w.rewrite(fx).String(); got != wantC {
						t.Errorf("%s rewritten to %q, want %q", p.Path, got, wantC)
					}
				case FixRemove:
					wantRemoved = append(wantRemoved, p.Path)
					if _, ok := after[p.Path]; ok {
						t.Errorf("%s not removed", p.Path)
					}
				default:
					if after[p.Path] != before[p.Path] {
						t.Errorf("%s (fix %q) changed by the repair", p.Path, p.Fix)
					}
				}
			}
			for _, l := range [][]string{rewritten, removed, removedDirs, wantRewritten, wantRemoved, emptyDirs} {
				sort.Strings(l)
			}
			if !slices.Equal(rewritten, wantRewritten) || !slices.Equal(removed, wantRemoved) {
				t.Errorf("rewritten %v, removed %v\nwant %v, %v", rewritten, removed, wantRewritten, wantRemoved)
			}
			// Storage lost exactly the removed links (and, on disk, the
			// empty directories) and changed only the rewritten ones.
			beforeFiles, afterFiles := files(before), files(after)
			for _, p := range wantRemoved {
				delete(beforeFiles, p)
			}
			for _, p := range wantRewritten {
				delete(beforeFiles, p)
				delete(afterFiles, p)
			}
			if diff := diffSnapshots(beforeFiles, afterFiles); diff != "" {
				t.Errorf("repair changed more than it reported:\n%s", diff)
			}
			if td.root != "" {
				for _, p := range wantRemoved {
					if dir := filepath.Dir(p); after[dir] == "" && !slices.Contains(removedDirs, dir) && !underAny(dir, removedDirs) {
						t.Errorf("%s left empty by the repair was not removed", dir)
					}
				}
				for _, d := range emptyDirs {
					if !slices.Contains(removedDirs, d) {
						t.Errorf("empty directory %s not removed; removed %v", d, removedDirs)
					}
				}
				for _, keep := range []store.Location{{Kind: store.PathLayers, Repository: "hello"}, {Kind: store.PathTags, Repository: "hello"}, {Kind: store.PathBlobs}} {
					if after[pathOf(t, keep)] != dirMarker {
						t.Errorf("repair removed %s", pathOf(t, keep))
					}
				}
			}
			// A second run: only what a repair leaves.
			again := run(t, td, false)
			wantLeft := 0
			for _, w := range want {
				if w.fix != FixRewrite && w.fix != FixRemove {
					wantLeft++
				}
			}
			if len(again.Problems) != wantLeft || again.Repairable() != 0 {
				t.Errorf("after repair %d problems, want %d:%s", len(again.Problems), wantLeft, problemsString(again.Problems))
			}
			if third := run(t, td, true); len(third.Removed)+len(third.Rewritten) != 0 {
				t.Errorf("a second repair changed %v %v", third.Removed, third.Rewritten)
			}
		})
	}
}

func files(snap map[string]string) map[string]string {
	out := map[string]string{}
	for p, c := range snap {
		if c != dirMarker {
			out[p] = c
		}
	}
	return out
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// TestRepairKeepsWhatARepushBringsBack: a tag whose manifest blob is
// missing and a revision link with a trailing newline both survive a
// repair (the first marked as needing a re-push, the second rewritten),
// and pushing the manifest again makes the store clean.
func TestRepairKeepsWhatARepushBringsBack(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			fx := newFixture(t, dc.new(t, ""))
			ctx := context.Background()
			if err := fx.d.Delete(ctx, pathOf(t, fx.loc(store.PathBlobData, fx.manifest2, ""))); err != nil {
				t.Fatal(err)
			}
			rev := put(t, fx.d, fx.loc(store.PathRevisionLink, fx.manifest3, ""), fx.manifest3.String()+"\n")
			tag := pathOf(t, fx.loc(store.PathTagCurrentLink, "", "v1"))
			rep := run(t, fx.d, true)
			byPath := map[string]Problem{}
			for _, p := range rep.Problems {
				byPath[p.Path] = p
			}
			if p := byPath[tag]; p.Kind != DanglingLink || p.Fix != FixRepush || p.Repaired {
				t.Errorf("tag: %+v", p)
			}
			if p := byPath[rev]; p.Kind != MalformedLink || p.Fix != FixRewrite || !p.Repaired {
				t.Errorf("revision: %+v", p)
			}
			for _, l := range []store.Location{fx.loc(store.PathTagCurrentLink, "", "v1"), fx.loc(store.PathRevisionLink, fx.manifest2, ""),
				fx.loc(store.PathTagIndexEntryLink, fx.manifest2, "v1")} {
				b, err := fx.d.GetContent(ctx, pathOf(t, l))
				if err != nil || string(b) != fx.manifest2.String() {
					t.Errorf("repair touched %s: %q, %v", pathOf(t, l), b, err)
				}
			}
			if b, _ := fx.d.GetContent(ctx, rev); string(b) != fx.manifest3.String() {
				t.Errorf("revision link after repair: %q", b)
			}
			for _, c := range rep.Removed {
				if c.Reason != ReasonEmptyDirectory { // the deleted blob's directory, on disk
					t.Errorf("removed %v", c)
				}
			}
			// The re-push.
			r := repo(t, newStore(t, fx.d), app)
			if _, err := r.Manifests().Put(ctx, schema2(fx.cfg, fx.layers[0]), "v1", ""); err != nil {
				t.Fatal(err)
			}
			if again := run(t, fx.d, false); !again.OK() {
				t.Errorf("after the re-push:%s", problemsString(again.Problems))
			}
		})
	}
}

// rewriting is a driver whose link at path reads as a registry's in-place
// rewrite makes it look for a moment: empty the first time (or always).
type rewriting struct {
	driver.StorageDriver
	path   string
	always bool
	mu     sync.Mutex
	reads  int
}

func (r *rewriting) GetContent(ctx context.Context, p string) ([]byte, error) {
	if p == r.path {
		r.mu.Lock()
		r.reads++
		first := r.reads == 1
		r.mu.Unlock()
		if first || r.always {
			return []byte{}, nil
		}
	}
	return r.StorageDriver.GetContent(ctx, p)
}

// TestConfirmsBeforeReporting: a link that reads empty once (a tag being
// rewritten in place) is not reported; one that stays empty is.
func TestConfirmsBeforeReporting(t *testing.T) {
	fx := newFixture(t, inmemory.New())
	tag := pathOf(t, fx.loc(store.PathTagCurrentLink, "", "v1"))
	d := &rewriting{StorageDriver: fx.d, path: tag}
	if rep := run(t, d, false); !rep.OK() || d.reads != 2 {
		t.Errorf("a link read bad once: %d reads, problems:%s", d.reads, problemsString(rep.Problems))
	}
	d = &rewriting{StorageDriver: fx.d, path: tag, always: true}
	rep := run(t, d, false)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != MalformedLink || rep.Problems[0].Path != tag || d.reads != 2 {
		t.Errorf("a link that stays bad: %d reads, problems:%s", d.reads, problemsString(rep.Problems))
	}
}

// flipping serves a blob's data wrong on the first read only, as when it
// is replaced during the check.
type flipping struct {
	driver.StorageDriver
	path  string
	mu    sync.Mutex
	reads int
}

func (f *flipping) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	if p == f.path {
		f.mu.Lock()
		f.reads++
		first := f.reads == 1
		f.mu.Unlock()
		if first {
			return io.NopCloser(strings.NewReader("torn")), nil
		}
	}
	return f.StorageDriver.Reader(ctx, p, off)
}

func TestConfirmsCorruptBlobs(t *testing.T) {
	fx := newFixture(t, inmemory.New())
	d := &flipping{StorageDriver: fx.d, path: pathOf(t, fx.loc(store.PathBlobData, fx.layers[0], ""))}
	if rep := run(t, d, false); !rep.OK() || d.reads != 2 {
		t.Errorf("a blob read wrong once: %d reads, problems:%s", d.reads, problemsString(rep.Problems))
	}
}

// TestSymlinks: every symbolic link is reported, nothing is read through
// it, and nothing below it is reported too.
func TestSymlinks(t *testing.T) {
	blob := pathOf(t, store.Location{Kind: store.PathBlobData, Digest: "sha256:248e2594fcdaad8f13804d84fb9070f01a3e25b70ee26237086d914edca65cdc"})
	repoDir := pathOf(t, store.Location{Kind: store.PathRepository, Repository: "library/ubuntu"})
	tag := pathOf(t, store.Location{Kind: store.PathTagCurrentLink, Repository: "hello", Tag: "latest"})
	d := &drivertest.Driver{StorageDriver: drivers[0].new(t, testdataRoot), Symlinks: []string{blob, repoDir, tag}}
	rep := run(t, d, false)
	var got []string
	for _, p := range rep.Problems {
		if p.Kind != Symlink || p.Fix != FixNone {
			t.Errorf("unexpected %s", p)
		}
		got = append(got, p.Path)
	}
	want := []string{blob, tag, repoDir}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("symlinks reported %v, want %v", got, want)
	}
	if rep.Blobs != 4 || rep.Repositories != 1 {
		t.Errorf("Blobs %d Repositories %d, want 4 (one is a link) and 1", rep.Blobs, rep.Repositories)
	}
	// A repair leaves them.
	if rep := run(t, d, true); len(rep.Removed)+len(rep.Rewritten) != 0 {
		t.Errorf("repair changed %v %v", rep.Removed, rep.Rewritten)
	}
}

// janitor is a driver with crash leftovers until Clean.
type janitor struct {
	driver.StorageDriver
	left    []string
	cleaned int
}

func (j *janitor) Leftovers(context.Context) ([]string, error) { return j.left, nil }
func (j *janitor) Clean(context.Context) error {
	j.left = nil
	j.cleaned++
	return nil
}

func TestLeftovers(t *testing.T) {
	left := []string{"/.regfs-trash/1", "/docker/registry/v2/repositories/hello/_layers/.#staging.2"}
	j := &janitor{StorageDriver: drivers[0].new(t, testdataRoot), left: left}
	rep := run(t, j, false)
	if len(rep.Problems) != 2 || j.cleaned != 0 {
		t.Fatalf("cleaned %d, problems:%s", j.cleaned, problemsString(rep.Problems))
	}
	for i, p := range rep.Problems {
		if p.Kind != Leftover || p.Path != left[i] || p.Fix != FixRemove || p.Repaired {
			t.Errorf("%+v", p)
		}
	}
	rep = run(t, j, true)
	if j.cleaned != 1 || len(rep.Removed) != 2 || !rep.Problems[0].Repaired || !rep.Problems[1].Repaired {
		t.Errorf("repair: cleaned %d, removed %v, problems:%s", j.cleaned, rep.Removed, problemsString(rep.Problems))
	}
	if rep := run(t, j, false); !rep.OK() {
		t.Errorf("after the repair:%s", problemsString(rep.Problems))
	}
}

// TestUnreadableDirectory: a directory that cannot be listed is a
// problem, and the run goes on with everything else.
func TestUnreadableDirectory(t *testing.T) {
	for _, dc := range drivers {
		revs := pathOf(t, store.Location{Kind: store.PathRevisions, Repository: "library/ubuntu"})
		prefix := pathOf(t, store.Location{Kind: store.PathBlobPrefix, Prefix: "24"})
		d := &drivertest.Driver{StorageDriver: dc.new(t, testdataRoot), Unreadable: []string{revs, prefix}}
		rep, err := Run(context.Background(), d, Options{RecheckAfter: time.Millisecond, Logger: quiet})
		if err != nil {
			t.Fatalf("%s: %v", dc.name, err)
		}
		kinds := map[string]Kind{}
		for _, p := range rep.Problems {
			kinds[p.Path] = p.Kind
			if p.Kind != Unreadable {
				t.Errorf("%s: unexpected %s", dc.name, p)
			}
		}
		if kinds[revs] != Unreadable || kinds[prefix] != Unreadable {
			t.Errorf("%s: problems:%s", dc.name, problemsString(rep.Problems))
		}
		// The rest was checked: 4 of 5 blobs, both repositories, every
		// tag, and the links outside the unreadable directory.
		if rep.Blobs != 4 || rep.Repositories != 2 || rep.Tags != 3 || rep.Links != 11 {
			t.Errorf("%s: %d blobs, %d repositories, %d tags, %d links", dc.name, rep.Blobs, rep.Repositories, rep.Tags, rep.Links)
		}
	}
}

func TestStaleUpload(t *testing.T) {
	fx := newFixture(t, inmemory.New())
	started := store.Location{Kind: store.PathUploadStartedAt, Repository: app, Upload: fx.upload}
	put(t, fx.d, started, fsckNow.Add(-8*24*time.Hour).Format(time.RFC3339))
	rep := run(t, fx.d, false)
	if !rep.OK() || len(rep.Uploads) != 1 {
		t.Fatalf("a stale upload is not a problem:%s %+v", problemsString(rep.Problems), rep.Uploads)
	}
	if up := rep.Uploads[0]; !up.Stale || up.Age != 8*24*time.Hour {
		t.Errorf("stale upload reported as %+v", up)
	}
	put(t, fx.d, started, fsckNow.Add(-24*time.Hour).Format(time.RFC3339))
	for _, c := range []struct {
		age   time.Duration
		stale bool
	}{{0, false}, {12 * time.Hour, true}} {
		rep, err := Run(context.Background(), fx.d, Options{StaleUploadAge: c.age, Now: func() time.Time { return fsckNow }, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Uploads[0].Stale != c.stale {
			t.Errorf("StaleUploadAge %v: Stale = %v, want %v", c.age, rep.Uploads[0].Stale, c.stale)
		}
	}
}

// TestUploadWithoutStartedAtAgedByItsTimes: an upload whose startedat is
// missing (its writer died before writing it) is aged by the latest
// modification time of its directory and files, marked as an estimate,
// and becomes stale like any other.
func TestUploadWithoutStartedAtAgedByItsTimes(t *testing.T) {
	for _, old := range []bool{false, true} {
		root := t.TempDir()
		d, err := filesystem.New(root)
		if err != nil {
			t.Fatal(err)
		}
		fx := newFixture(t, d)
		started := pathOf(t, store.Location{Kind: store.PathUploadStartedAt, Repository: app, Upload: fx.upload})
		if err := d.Delete(context.Background(), started); err != nil {
			t.Fatal(err)
		}
		age := time.Hour
		if old {
			age = 8 * 24 * time.Hour
		}
		mtime := fsckNow.Add(-age)
		dir := filepath.Join(root, filepath.FromSlash(pathOf(t, store.Location{Kind: store.PathUpload, Repository: app, Upload: fx.upload})))
		err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Chtimes(p, mtime, mtime)
		})
		if err != nil {
			t.Fatal(err)
		}
		rep := run(t, d, false)
		if !rep.OK() || len(rep.Uploads) != 1 {
			t.Fatalf("problems:%s uploads %+v", problemsString(rep.Problems), rep.Uploads)
		}
		up := rep.Uploads[0]
		if !up.StartedAt.IsZero() || !up.AgeEstimated || up.Age != age || up.AgeSeconds != int64(age/time.Second) ||
			!up.LastModified.Equal(mtime) || up.Stale != old {
			t.Errorf("upload without startedat, last written %v ago: %+v", age, up)
		}
	}
}

func TestProgress(t *testing.T) {
	d := inmemory.New()
	r := repo(t, newStore(t, d), "big")
	var total int64
	for i := range 5 {
		b := bytes.Repeat([]byte(fmt.Sprint(i)), (i+1)*700_000)
		pushBlob(t, r, b)
		total += int64(len(b))
	}
	var calls []Progress
	rep, err := Run(context.Background(), d, Options{Workers: 2, Logger: quiet, Progress: func(p Progress) { calls = append(calls, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.BlobBytes != total || len(calls) < 6 {
		t.Fatalf("report %+v, %d progress calls", rep, len(calls))
	}
	if last := calls[len(calls)-1]; last != (Progress{BlobsDone: 5, BlobsTotal: 5, BytesDone: total, BytesTotal: total}) {
		t.Errorf("last progress %+v", last)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i].BlobsDone < calls[i-1].BlobsDone || calls[i].BytesDone < calls[i-1].BytesDone {
			t.Errorf("progress went back: %+v after %+v", calls[i], calls[i-1])
		}
	}
}

// failingReader fails Reader for one path, like a disk with a bad sector.
type failingReader struct {
	driver.StorageDriver
	path string
}

func (f failingReader) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	if p == f.path {
		return nil, &driver.Error{Driver: "test", Op: "Reader", Path: p, Err: errors.New("input/output error")}
	}
	return f.StorageDriver.Reader(ctx, p, off)
}

func TestUnreadableBlob(t *testing.T) {
	fx := newFixture(t, inmemory.New())
	p := pathOf(t, fx.loc(store.PathBlobData, fx.layers[0], ""))
	rep := run(t, failingReader{fx.d, p}, false)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != Unreadable || rep.Problems[0].Path != p {
		t.Errorf("problems:%s", problemsString(rep.Problems))
	}
}

func TestCancelled(t *testing.T) {
	fx := newFixture(t, inmemory.New())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, fx.d, Options{Logger: quiet}); !errors.Is(err, context.Canceled) {
		t.Errorf("Run on a cancelled context: %v", err)
	}
}
