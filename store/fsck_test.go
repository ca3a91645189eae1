package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
)

// fsckNow is the clock of every fsck test: a day after testdata's upload
// started.
var fsckNow = time.Date(2024, 1, 3, 3, 4, 5, 0, time.UTC)

func runFsck(t *testing.T, d driver.StorageDriver, repair bool) *FsckReport {
	t.Helper()
	rep, err := Fsck(context.Background(), d, FsckOptions{
		Repair: repair,
		Now:    func() time.Time { return fsckNow },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("Fsck: %v", err)
	}
	return rep
}

// fsckFixture is a store holding every kind of object fsck checks:
// layers, a tagged schema2 manifest, a schema1 manifest with a signature
// link, a re-tagged tag (two index entries) and an upload in progress.
type fsckFixture struct {
	d         driver.StorageDriver
	cfg       digest.Digest
	layers    []digest.Digest
	manifest  digest.Digest
	manifest2 digest.Digest
	schema1   digest.Digest
	upload    string
}

func newFsckFixture(t *testing.T, d driver.StorageDriver) *fsckFixture {
	t.Helper()
	ctx := context.Background()
	s := newStore(t, d)
	r := repo(t, s, "team/app")
	fx := &fsckFixture{d: d}
	fx.cfg = pushBlob(t, r, []byte(`{"architecture":"amd64","os":"linux"}`))
	fx.layers = []digest.Digest{pushBlob(t, r, []byte("layer one")), pushBlob(t, r, []byte("layer two"))}
	var err error
	if fx.manifest, err = r.Manifests().Put(ctx, schema2(fx.cfg, fx.layers...), "v1", ""); err != nil {
		t.Fatal(err)
	}
	if fx.manifest2, err = r.Manifests().Put(ctx, schema2(fx.cfg, fx.layers[0]), "v1", ""); err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	signed, _ := signSchema1Test(t, key, "team/app", "old", fx.layers[0])
	if fx.schema1, err = r.Manifests().Put(ctx, signed, "old", ""); err != nil {
		t.Fatal(err)
	}
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
	// The upload's startedat is "now" by the wall clock; put it an hour
	// before the test clock so its age is known.
	put(t, d, uploadStartedAtPathSpec{name: "team/app", id: fx.upload}, fsckNow.Add(-time.Hour).Format(time.RFC3339))
	return fx
}

// put writes content at spec's path.
func put(t *testing.T, d driver.StorageDriver, spec pathSpec, content string) string {
	t.Helper()
	p := mustPath(spec)
	if err := d.PutContent(context.Background(), p, []byte(content)); err != nil {
		t.Fatal(err)
	}
	return p
}

func problemsString(ps []FsckProblem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

func TestFsckCleanStore(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, testdataRoot)
			fx := newFsckFixture(t, td)
			before := snapshot(t, td)
			rep := runFsck(t, td, false)
			if !rep.OK() {
				t.Fatalf("clean store reported problems:%s", problemsString(rep.Problems))
			}
			// testdata: 5 blobs; fixture: config, 2 layers, 2 schema2
			// manifests, the schema1 payload and its signature.
			if rep.Blobs != 12 {
				t.Errorf("Blobs = %d, want 12", rep.Blobs)
			}
			if rep.Repositories != 3 {
				t.Errorf("Repositories = %d, want 3", rep.Repositories)
			}
			// testdata: 4 layer, 2 revision, 3 current and 3 index links;
			// fixture: 3 layer, 3 revision, 1 signature, 2 current and 3
			// index links.
			if rep.Links != 12+12 {
				t.Errorf("Links = %d, want 24", rep.Links)
			}
			if rep.Tags != 5 {
				t.Errorf("Tags = %d, want 5", rep.Tags)
			}
			want := []FsckUpload{
				{Repository: "hello", ID: tdUploadID, Size: 16,
					StartedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Age: 24 * time.Hour, AgeSeconds: 86400},
				{Repository: "team/app", ID: fx.upload, Expected: digest.FromString("not finished"), Size: 3,
					StartedAt: fsckNow.Add(-time.Hour), Age: time.Hour, AgeSeconds: 3600},
			}
			for i := range want {
				want[i].Path = mustPath(uploadPathSpec{name: want[i].Repository, id: want[i].ID})
			}
			if !slices.Equal(rep.Uploads, want) {
				t.Errorf("Uploads = %+v\nwant %+v", rep.Uploads, want)
			}
			if len(rep.Removed) != 0 {
				t.Errorf("Removed = %v without repair", rep.Removed)
			}
			if diff := diffSnapshots(before, snapshot(t, td)); diff != "" {
				t.Errorf("fsck changed storage:\n%s", diff)
			}
		})
	}
}

func TestFsckEmptyStorage(t *testing.T) {
	rep := runFsck(t, inmemory.New(), false)
	if !rep.OK() || rep.Blobs != 0 || rep.Repositories != 0 || len(rep.Uploads) != 0 {
		t.Errorf("empty storage: %+v", rep)
	}
}

// plantedProblem is one problem planted in a fsckFixture, and what fsck
// must report for it.
type plantedProblem struct {
	name string
	// plant damages storage and returns the path fsck must report.
	plant  func(t *testing.T, fx *fsckFixture) string
	kind   FsckProblemKind
	digest func(fx *fsckFixture) digest.Digest
}

var missing = digest.FromString("no such blob")

var plantedProblems = []plantedProblem{
	{"corrupt blob", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, blobDataPathSpec{digest: fx.layers[1]}, "layer tw0")
	}, FsckCorruptBlob, func(fx *fsckFixture) digest.Digest { return fx.layers[1] }},
	{"truncated blob", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, blobDataPathSpec{digest: fx.layers[0]}, "layer")
	}, FsckCorruptBlob, func(fx *fsckFixture) digest.Digest { return fx.layers[0] }},
	{"dangling layer link", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, layerLinkPathSpec{name: "team/app", digest: missing}, missing.String())
	}, FsckDanglingLink, func(*fsckFixture) digest.Digest { return missing }},
	{"layer whose blob was deleted", func(t *testing.T, fx *fsckFixture) string {
		if err := fx.d.Delete(context.Background(), mustPath(blobDataPathSpec{digest: fx.cfg})); err != nil {
			t.Fatal(err)
		}
		return mustPath(layerLinkPathSpec{name: "team/app", digest: fx.cfg})
	}, FsckDanglingLink, func(fx *fsckFixture) digest.Digest { return fx.cfg }},
	{"dangling revision link", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestRevisionLinkPathSpec{name: "team/app", revision: missing}, missing.String())
	}, FsckDanglingLink, func(*fsckFixture) digest.Digest { return missing }},
	{"dangling signature link", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestSignatureLinkPathSpec{name: "team/app", revision: fx.schema1, signature: missing}, missing.String())
	}, FsckDanglingLink, func(*fsckFixture) digest.Digest { return missing }},
	{"dangling tag index link", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestTagIndexEntryLinkPathSpec{name: "team/app", tag: "v1", revision: missing}, missing.String())
	}, FsckDanglingLink, func(*fsckFixture) digest.Digest { return missing }},
	{"dangling tag", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestTagCurrentLinkPathSpec{name: "team/app", tag: "gone"}, missing.String())
	}, FsckDanglingLink, func(*fsckFixture) digest.Digest { return missing }},
	{"link with a newline", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, layerLinkPathSpec{name: "team/app", digest: fx.layers[0]}, fx.layers[0].String()+"\n")
	}, FsckMalformedLink, func(fx *fsckFixture) digest.Digest { return fx.layers[0] }},
	{"link in upper case", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestRevisionLinkPathSpec{name: "team/app", revision: fx.manifest}, "sha256:"+strings.ToUpper(fx.manifest.Encoded()))
	}, FsckMalformedLink, func(fx *fsckFixture) digest.Digest { return fx.manifest }},
	{"empty tag link", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestTagCurrentLinkPathSpec{name: "team/app", tag: "v1"}, "")
	}, FsckMalformedLink, func(*fsckFixture) digest.Digest { return "" }},
	{"link of another algorithm", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestTagIndexEntryLinkPathSpec{name: "team/app", tag: "v1", revision: fx.manifest},
			digest.SHA512.FromString("x").String())
	}, FsckMalformedLink, func(fx *fsckFixture) digest.Digest { return fx.manifest }},
	{"link under another digest", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, layerLinkPathSpec{name: "team/app", digest: fx.layers[0]}, fx.layers[1].String())
	}, FsckLinkMismatch, func(fx *fsckFixture) digest.Digest { return fx.layers[1] }},
	{"tag pointing at a missing revision", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, manifestTagCurrentLinkPathSpec{name: "team/app", tag: "latest"}, fx.cfg.String())
	}, FsckTagRevisionMissing, func(fx *fsckFixture) digest.Digest { return fx.cfg }},
	{"tag whose revision was unlinked", func(t *testing.T, fx *fsckFixture) string {
		if err := fx.d.Delete(context.Background(), mustPath(manifestRevisionLinkPathSpec{name: "team/app", revision: fx.manifest2})); err != nil {
			t.Fatal(err)
		}
		return mustPath(manifestTagCurrentLinkPathSpec{name: "team/app", tag: "v1"})
	}, FsckTagRevisionMissing, func(fx *fsckFixture) digest.Digest { return fx.manifest2 }},
	{"upload with a bad startedat", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, uploadStartedAtPathSpec{name: "team/app", id: fx.upload}, "yesterday")
	}, FsckMalformedUpload, func(*fsckFixture) digest.Digest { return "" }},
	{"upload with a bad expected digest", func(t *testing.T, fx *fsckFixture) string {
		return put(t, fx.d, uploadExpectedPathSpec{name: "team/app", id: fx.upload}, "sha256:abc")
	}, FsckMalformedUpload, func(*fsckFixture) digest.Digest { return "" }},
	{"blob under the wrong prefix", func(t *testing.T, fx *fsckFixture) string {
		wrong := mustPath(blobsPathSpec{}) + "/00/" + fx.cfg.Encoded()
		if err := fx.d.PutContent(context.Background(), wrong+"/data", []byte("x")); err != nil {
			t.Fatal(err)
		}
		return wrong
	}, FsckUnexpectedEntry, func(*fsckFixture) digest.Digest { return "" }},
	{"layer directory not named by a digest", func(t *testing.T, fx *fsckFixture) string {
		dir := mustPath(layersPathSpec{name: "team/app"}) + "/latest"
		if err := fx.d.PutContent(context.Background(), dir+"/link", []byte(fx.cfg.String())); err != nil {
			t.Fatal(err)
		}
		return dir
	}, FsckUnexpectedEntry, func(*fsckFixture) digest.Digest { return "" }},
}

// TestFsckFindsEachProblem plants one problem at a time in a clean store
// and checks that exactly it is reported, with its kind, path and digest,
// on both drivers.
func TestFsckFindsEachProblem(t *testing.T) {
	for _, dc := range drivers {
		for _, pp := range plantedProblems {
			t.Run(dc.name+"/"+pp.name, func(t *testing.T) {
				fx := newFsckFixture(t, dc.new(t, ""))
				p := pp.plant(t, fx)
				rep := runFsck(t, fx.d, false)
				if len(rep.Problems) != 1 {
					t.Fatalf("want exactly one problem, got %d:%s", len(rep.Problems), problemsString(rep.Problems))
				}
				got := rep.Problems[0]
				if got.Kind != pp.kind || got.Path != p || got.Digest != pp.digest(fx) || got.Repaired {
					t.Errorf("got %+v\nwant kind %s path %s digest %s", got, pp.kind, p, pp.digest(fx))
				}
				if got.Detail == "" {
					t.Error("problem without detail")
				}
				if got.Kind.Repairable() != (got.Kind == FsckDanglingLink || got.Kind == FsckMalformedLink) {
					t.Errorf("%s: Repairable = %v", got.Kind, got.Kind.Repairable())
				}
			})
		}
	}
}

func TestFsckStaleUpload(t *testing.T) {
	fx := newFsckFixture(t, inmemory.New())
	put(t, fx.d, uploadStartedAtPathSpec{name: "team/app", id: fx.upload}, fsckNow.Add(-8*24*time.Hour).Format(time.RFC3339))
	rep := runFsck(t, fx.d, false)
	if !rep.OK() {
		t.Errorf("a stale upload is not a problem:%s", problemsString(rep.Problems))
	}
	if len(rep.Uploads) != 1 {
		t.Fatalf("Uploads = %+v", rep.Uploads)
	}
	up := rep.Uploads[0]
	if !up.Stale || up.Age != 8*24*time.Hour || up.Path != mustPath(uploadPathSpec{name: "team/app", id: fx.upload}) {
		t.Errorf("stale upload reported as %+v", up)
	}
	// A custom threshold: a day-old upload is stale after 12 h, not
	// after the default week.
	put(t, fx.d, uploadStartedAtPathSpec{name: "team/app", id: fx.upload}, fsckNow.Add(-24*time.Hour).Format(time.RFC3339))
	for _, c := range []struct {
		age   time.Duration
		stale bool
	}{{0, false}, {12 * time.Hour, true}} {
		rep, err := Fsck(context.Background(), fx.d, FsckOptions{StaleUploadAge: c.age, Now: func() time.Time { return fsckNow }})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Uploads[0].Stale != c.stale {
			t.Errorf("StaleUploadAge %v: Stale = %v, want %v", c.age, rep.Uploads[0].Stale, c.stale)
		}
	}
}

// plantAll plants every problem in one fixture and returns the paths
// reported per kind.
func plantAll(t *testing.T, fx *fsckFixture) map[FsckProblemKind][]string {
	t.Helper()
	want := map[FsckProblemKind][]string{}
	skip := map[string]bool{
		// These damage what another planting damages too, or what it
		// needs intact (the config blob a tag is pointed at).
		"link with a newline": true, "empty tag link": true, "tag whose revision was unlinked": true,
		"layer whose blob was deleted": true,
	}
	for _, pp := range plantedProblems {
		if skip[pp.name] {
			continue
		}
		want[pp.kind] = append(want[pp.kind], pp.plant(t, fx))
	}
	return want
}

func reportedPaths(rep *FsckReport) map[FsckProblemKind][]string {
	got := map[FsckProblemKind][]string{}
	for _, p := range rep.Problems {
		got[p.Kind] = append(got[p.Kind], p.Path)
	}
	for _, ps := range got {
		sort.Strings(ps)
	}
	return got
}

func sortedPaths(m map[FsckProblemKind][]string) map[FsckProblemKind][]string {
	for _, ps := range m {
		sort.Strings(ps)
	}
	return m
}

func samePaths(a, b map[FsckProblemKind][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestFsckChangesNothing runs fsck over every problem at once and checks
// that storage is byte for byte, directory for directory, what it was.
func TestFsckChangesNothing(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			fx := newFsckFixture(t, dc.new(t, testdataRoot))
			want := sortedPaths(plantAll(t, fx))
			if td, ok := fx.d.(*testDriver); ok && td.root != "" {
				// An empty directory, which only a repair removes.
				if err := os.MkdirAll(filepath.Join(td.root, mustPath(layersPathSpec{name: "hello"}), missing.Encoded()), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, fx.d)
			rep := runFsck(t, fx.d, false)
			if got := reportedPaths(rep); !samePaths(got, want) {
				t.Errorf("reported %v\nwant %v", got, want)
			}
			if diff := diffSnapshots(before, snapshot(t, fx.d)); diff != "" {
				t.Errorf("fsck without repair changed storage:\n%s", diff)
			}
		})
	}
}

// TestFsckRepair checks that a repair removes exactly the dangling and
// malformed links (and, on disk, the directories left empty) and nothing
// else, and that a second run finds only what a repair does not fix.
func TestFsckRepair(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, testdataRoot)
			fx := newFsckFixture(t, td)
			want := sortedPaths(plantAll(t, fx))
			var emptyDirs []string
			if td.root != "" {
				// Directories the registry leaves when it unlinks a layer,
				// and a blob directory a crash left without data.
				for _, dir := range []string{
					mustPath(layerPathSpec{name: "hello", digest: missing}),
					mustPath(manifestTagPathSpec{name: "hello", tag: "deleted"}) + "/index/sha256",
					filepath.Dir(mustPath(blobDataPathSpec{digest: missing})),
				} {
					if err := os.MkdirAll(filepath.Join(td.root, dir), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				emptyDirs = []string{
					mustPath(layerPathSpec{name: "hello", digest: missing}),
					mustPath(manifestTagPathSpec{name: "hello", tag: "deleted"}),
					// blobs/sha256/<hh>/ is new too, so it goes whole.
					filepath.Dir(filepath.Dir(mustPath(blobDataPathSpec{digest: missing}))),
				}
			}
			before := snapshot(t, td)
			rep := runFsck(t, td, true)
			if got := reportedPaths(rep); !samePaths(got, want) {
				t.Errorf("reported %v\nwant %v", got, want)
			}
			repairable := append(slices.Clone(want[FsckDanglingLink]), want[FsckMalformedLink]...)
			var removedLinks, removedDirs []string
			for _, r := range rep.Removed {
				if r.Reason == "empty directory" {
					removedDirs = append(removedDirs, r.Path)
				} else {
					removedLinks = append(removedLinks, r.Path)
				}
			}
			sort.Strings(repairable)
			sort.Strings(removedLinks)
			if !slices.Equal(removedLinks, repairable) {
				t.Errorf("removed links %v\nwant %v", removedLinks, repairable)
			}
			for _, p := range rep.Problems {
				if p.Repaired != p.Kind.Repairable() {
					t.Errorf("%s: Repaired = %v", p, p.Repaired)
				}
			}
			// Storage lost exactly the repaired links' files (and, on
			// disk, the empty directories); nothing was added or changed.
			after := snapshot(t, td)
			beforeFiles, afterFiles := files(before), files(after)
			for _, p := range repairable {
				if _, ok := beforeFiles[p]; !ok {
					t.Fatalf("planted link %s was not in storage", p)
				}
				delete(beforeFiles, p)
			}
			if diff := diffSnapshots(beforeFiles, afterFiles); diff != "" {
				t.Errorf("repair changed more than the dangling and malformed links:\n%s", diff)
			}
			if td.root != "" {
				sort.Strings(removedDirs)
				sort.Strings(emptyDirs)
				// The directories of removed links go too when nothing
				// else is in them.
				for _, p := range repairable {
					if dir := filepath.Dir(p); after[dir] == "" && before[dir] == dirMarker && !slices.Contains(removedDirs, dir) && !underAny(dir, removedDirs) {
						t.Errorf("%s left empty by the repair was not removed", dir)
					}
				}
				for _, d := range emptyDirs {
					if !slices.Contains(removedDirs, d) {
						t.Errorf("empty directory %s not removed; removed %v", d, removedDirs)
					}
				}
				for _, d := range removedDirs {
					if _, err := os.Stat(filepath.Join(td.root, d)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("reported removed %s still exists: %v", d, err)
					}
				}
				for _, keep := range []string{
					mustPath(layersPathSpec{name: "hello"}),
					mustPath(manifestTagsPathSpec{name: "hello"}),
					mustPath(blobsPathSpec{}),
				} {
					if after[keep] != dirMarker {
						t.Errorf("repair removed %s", keep)
					}
				}
			}
			// A second run: only the problems a repair leaves.
			again := runFsck(t, td, false)
			for _, p := range again.Problems {
				if p.Kind.Repairable() {
					t.Errorf("after repair: %s", p)
				}
			}
			wantLeft := 0
			for k, ps := range want {
				if !k.Repairable() {
					wantLeft += len(ps)
				}
			}
			if len(again.Problems) != wantLeft {
				t.Errorf("after repair %d problems, want %d:%s", len(again.Problems), wantLeft, problemsString(again.Problems))
			}
			if td.root != "" {
				if third := runFsck(t, td, true); len(third.Removed) != 0 {
					t.Errorf("a second repair removed %v", third.Removed)
				}
			}
		})
	}
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

func TestFsckProgress(t *testing.T) {
	d := inmemory.New()
	r := repo(t, newStore(t, d), "big")
	var total int64
	for i := range 5 {
		b := []byte(strings.Repeat(fmt.Sprint(i), (i+1)*700_000))
		pushBlob(t, r, b)
		total += int64(len(b))
	}
	var calls []FsckProgress
	rep, err := Fsck(context.Background(), d, FsckOptions{Workers: 2, Progress: func(p FsckProgress) { calls = append(calls, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.BlobBytes != total {
		t.Fatalf("report %+v, want %d bytes", rep, total)
	}
	if len(calls) < 6 {
		t.Fatalf("%d progress calls, want one per blob and more", len(calls))
	}
	last := calls[len(calls)-1]
	if last != (FsckProgress{BlobsDone: 5, BlobsTotal: 5, BytesDone: total, BytesTotal: total}) {
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

var errBadSector = errors.New("input/output error")

func (f failingReader) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	if p == f.path {
		return nil, &driver.Error{Driver: "test", Op: "Reader", Path: p, Err: errBadSector}
	}
	return f.StorageDriver.Reader(ctx, p, off)
}

func TestFsckUnreadableBlob(t *testing.T) {
	fx := newFsckFixture(t, inmemory.New())
	p := mustPath(blobDataPathSpec{digest: fx.layers[0]})
	rep := runFsck(t, failingReader{fx.d, p}, false)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != FsckUnreadable || rep.Problems[0].Path != p {
		t.Errorf("problems:%s", problemsString(rep.Problems))
	}
}

func TestFsckCancelled(t *testing.T) {
	fx := newFsckFixture(t, inmemory.New())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Fsck(ctx, fx.d, FsckOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Fsck on a cancelled context: %v", err)
	}
}
