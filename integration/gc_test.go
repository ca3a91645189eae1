package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/store"
)

// gcFixture is a storage root the registry wrote, with one of each case a
// collector must tell apart, and what each case's objects are.
type gcFixture struct {
	root string
	// tags maps repo:tag to the manifest bytes pushed under it.
	tags map[string][]byte
	// Cases, by digests.
	untagged  digest.Digest   // app: v1 before it was re-pushed
	untaggedB []digest.Digest // blobs only the untagged revision has
	deleted   digest.Digest   // app: a revision deleted through the API
	deletedB  []digest.Digest // blobs only the deleted revision had
	referrer  digest.Digest   // app: an OCI manifest whose subject is app:v2
	referrerB []digest.Digest // its config and layer
	children  []digest.Digest // multi (OCI index) and dlist (manifest list) children
	childrenB []digest.Digest // their blobs
	uploadID  string          // app: an unfinished upload, started 8 days ago
}

// pushBlobHTTP uploads data into repo through the registry's API (POST,
// then PUT with the digest).
func pushBlobHTTP(t *testing.T, r *registry, repo string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	u := r.startUpload(repo)
	sep := "?"
	if strings.Contains(u.Location, "?") {
		sep = "&"
	}
	resp := r.doURL(http.MethodPut, u.Location+sep+"digest="+d.String(),
		http.Header{"Content-Type": {"application/octet-stream"}}, data)
	if resp.Status != http.StatusCreated {
		t.Fatalf("PUT blob %s in %s: %d %s", d, repo, resp.Status, resp.Body)
	}
	return d
}

// putManifestHTTP stores a manifest under ref (a tag or its digest).
func putManifestHTTP(t *testing.T, r *registry, repo, ref, mediaType string, body []byte) digest.Digest {
	t.Helper()
	resp := r.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {mediaType}}, body)
	if resp.Status != http.StatusCreated {
		t.Fatalf("PUT manifest %s:%s: %d %s", repo, ref, resp.Status, resp.Body)
	}
	return digest.Digest(resp.Header.Get("Docker-Content-Digest"))
}

func blobDigests(img testImage) []digest.Digest {
	var out []digest.Digest
	for _, b := range img.blobs() {
		out = append(out, b.Desc.Digest)
	}
	return out
}

// newGCFixture has the registry write every case, then ages the tree two
// days (the registry's collector has no grace window; regfs's default one
// must not hide the cases) and stops the registry.
func newGCFixture(t *testing.T) *gcFixture {
	t.Helper()
	requireTools(t, registryBin, "skopeo")
	f := &gcFixture{root: t.TempDir(), tags: map[string][]byte{}}
	r := startRegistry(t, f.root)
	amd := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm := v1.Platform{OS: "linux", Architecture: "arm64"}

	// app:v1, re-pushed: the first image becomes an untagged revision.
	// app:v2 shares a layer with it.
	first := newTestImage(t, amd, layerSpec{1, 3000}, layerSpec{2, 3000})
	second := newTestImage(t, amd, layerSpec{3, 3000})
	v2 := newTestImage(t, amd, layerSpec{1, 3000}, layerSpec{4, 3000})
	l := newOCILayout(t)
	l.addImage("first", first)
	l.addImage("second", second)
	l.addImage("v2", v2)
	skopeoCopy(t, "oci:"+l.Dir+":first", r.ref("app", "v1"))
	skopeoCopy(t, "oci:"+l.Dir+":second", r.ref("app", "v1"))
	skopeoCopy(t, "oci:"+l.Dir+":v2", r.ref("app", "v2"))
	f.tags["app:v1"], f.tags["app:v2"] = second.Manifest.Data, v2.Manifest.Data
	f.untagged = first.Manifest.Desc.Digest
	f.untaggedB = []digest.Digest{first.Config.Desc.Digest, first.Layers[1].Desc.Digest}

	// A revision deleted through the API.
	gone := newTestImage(t, amd, layerSpec{5, 3000})
	l.addImage("gone", gone)
	skopeoCopy(t, "oci:"+l.Dir+":gone", r.ref("app", "gone"))
	f.deleted = gone.Manifest.Desc.Digest
	f.deletedB = blobDigests(gone)
	if status := r.deleteManifest("app", f.deleted); status != http.StatusAccepted {
		t.Fatalf("DELETE: %d", status)
	}

	// A referrer of app:v2 (a signature), pushed by digest as ORAS and
	// cosign do; skopeo cannot push one.
	sigCfg := newBlob(v1.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	sigPayload := newBlob("application/vnd.dev.cosign.simplesigning.v1+json", []byte(`{"critical":{"image":{"docker-manifest-digest":"`+v2.Manifest.Desc.Digest.String()+`"}}}`))
	pushBlobHTTP(t, r, "app", sigCfg.Data)
	pushBlobHTTP(t, r, "app", sigPayload.Data)
	sigManifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"size":%d,"digest":%q},"layers":[{"mediaType":%q,"size":%d,"digest":%q}],"subject":{"mediaType":%q,"size":%d,"digest":%q}}`,
		v1.MediaTypeImageManifest, sigCfg.Desc.MediaType, sigCfg.Desc.Size, sigCfg.Desc.Digest,
		sigPayload.Desc.MediaType, sigPayload.Desc.Size, sigPayload.Desc.Digest,
		v1.MediaTypeImageManifest, v2.Manifest.Desc.Size, v2.Manifest.Desc.Digest)
	f.referrer = digest.FromString(sigManifest)
	if got := putManifestHTTP(t, r, "app", f.referrer.String(), v1.MediaTypeImageManifest, []byte(sigManifest)); got != f.referrer {
		t.Fatalf("referrer stored as %s, want %s", got, f.referrer)
	}
	f.referrerB = []digest.Digest{sigCfg.Desc.Digest, sigPayload.Desc.Digest}

	// An unfinished upload, started eight days ago.
	u := r.patch(r.startUpload("app"), []byte("half a layer"))
	f.uploadID = u.UUID
	startedAt := filepath.Join(f.root, "docker/registry/v2/repositories/app/_uploads", u.UUID, "startedat")
	if err := os.WriteFile(startedAt, []byte(time.Now().Add(-8*24*time.Hour).UTC().Format(time.RFC3339)), 0o644); err != nil {
		t.Fatal(err)
	}

	// multi:latest, an OCI index over two platforms (skopeo pushes the
	// children by digest: untagged revisions).
	e := newTestImage(t, amd, layerSpec{6, 3000})
	g := newTestImage(t, arm, layerSpec{7, 3000})
	idx := l.addIndex("multi", e, g)
	skopeoCopy(t, "--all", "oci:"+l.Dir+":multi", r.ref("multi", "latest"))
	f.tags["multi:latest"] = idx.Data
	f.children = append(f.children, e.Manifest.Desc.Digest, g.Manifest.Desc.Digest)
	f.childrenB = append(f.childrenB, blobDigests(e)...)
	f.childrenB = append(f.childrenB, blobDigests(g)...)

	// dlist:latest, a docker manifest list over two schema2 manifests.
	var entries []string
	for _, img := range []testImage{newTestImage(t, amd, layerSpec{8, 3000}), newTestImage(t, arm, layerSpec{9, 3000})} {
		for _, b := range img.blobs() {
			pushBlobHTTP(t, r, "dlist", b.Data)
		}
		dm := img.dockerManifest(t)
		putManifestHTTP(t, r, "dlist", dm.Desc.Digest.String(), mtDockerManifest, dm.Data)
		entries = append(entries, fmt.Sprintf(`{"mediaType":%q,"size":%d,"digest":%q,"platform":{"architecture":%q,"os":"linux"}}`,
			mtDockerManifest, dm.Desc.Size, dm.Desc.Digest, img.Platform.Architecture))
		f.children = append(f.children, dm.Desc.Digest)
		f.childrenB = append(f.childrenB, blobDigests(img)...)
	}
	list := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, mtDockerManifestList, strings.Join(entries, ",")))
	putManifestHTTP(t, r, "dlist", "latest", mtDockerManifestList, list)
	f.tags["dlist:latest"] = list

	// old:s1, a signed schema1 manifest over layers pushed for it.
	key, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	s1img := newTestImage(t, amd, layerSpec{10, 3000}, layerSpec{11, 3000})
	for _, b := range s1img.Layers {
		pushBlobHTTP(t, r, "old", b.Data)
	}
	signed, _ := s1img.schema1Manifest(t, key, "old", "s1")
	putManifestHTTP(t, r, "old", "s1", mtSchema1Signed, signed)
	f.tags["old:s1"] = nil // served re-signed: compared by payload

	r.stop()
	ageTree(t, f.root, 48*time.Hour)
	return f
}

// ageTree moves every time below root back by d.
func ageTree(t *testing.T, root string, d time.Duration) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		old := fi.ModTime().Add(-d)
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// copyTree copies root into a new temporary directory, times included.
func copyTree(t *testing.T, root string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	runCmd(t, "cp", "-a", root, dst)
	return dst
}

// treeObjects lists every file below docker/registry/v2, relative.
func treeObjects(t *testing.T, root string) map[string]bool {
	t.Helper()
	v2 := filepath.Join(root, "docker/registry/v2")
	out := map[string]bool{}
	err := filepath.WalkDir(v2, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(v2, p)
		out[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// gcDeleted is what a collector removed from a tree, by kind.
type gcDeleted struct {
	blobs     []digest.Digest
	revisions []string // repo@digest
	links     []string // repo@digest of _layers links
	uploads   []string // repo/id
	other     []string
}

// diffTrees classifies the files in before that are gone from after.
func diffTrees(before, after map[string]bool) gcDeleted {
	var g gcDeleted
	for p := range before {
		if after[p] {
			continue
		}
		parts := strings.Split(p, "/")
		switch {
		case parts[0] == "blobs" && len(parts) == 5:
			g.blobs = append(g.blobs, digest.NewDigestFromEncoded(digest.SHA256, parts[3]))
		case strings.Contains(p, "/_manifests/revisions/sha256/") && strings.HasSuffix(p, "/link") && !strings.Contains(p, "/signatures/"):
			repo, rest, _ := strings.Cut(strings.TrimPrefix(p, "repositories/"), "/_manifests/")
			g.revisions = append(g.revisions, repo+"@sha256:"+strings.Split(rest, "/")[2])
		case strings.Contains(p, "/_layers/sha256/"):
			repo, rest, _ := strings.Cut(strings.TrimPrefix(p, "repositories/"), "/_layers/")
			g.links = append(g.links, repo+"@sha256:"+strings.Split(rest, "/")[1])
		case strings.Contains(p, "/_uploads/"):
			repo, rest, _ := strings.Cut(strings.TrimPrefix(p, "repositories/"), "/_uploads/")
			u := repo + "/" + strings.Split(rest, "/")[0]
			if !slices.Contains(g.uploads, u) {
				g.uploads = append(g.uploads, u)
			}
		default:
			g.other = append(g.other, p)
		}
	}
	slices.Sort(g.blobs)
	slices.Sort(g.revisions)
	slices.Sort(g.links)
	slices.Sort(g.uploads)
	slices.Sort(g.other)
	return g
}

// registryGC runs the registry's own collector on root.
func registryGC(t *testing.T, root string, deleteUntagged bool) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, registryConfig, "", "  filesystem:\n    rootdirectory: "+root, "127.0.0.1:0"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"garbage-collect"}
	if deleteUntagged {
		args = append(args, "--delete-untagged")
	}
	out, err := exec.Command(registryBin, append(args, conf)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", registryBin, args, err, out)
	}
	return string(out)
}

// regfsGCReport is the part of regfs gc --json the tests read.
type regfsGCReport struct {
	Total struct {
		Revisions, Links, Uploads, Blobs, Repositories int
		Bytes                                          int64
	} `json:"total"`
	Spared   struct{ Grace, Recheck, Fenced int } `json:"spared"`
	Problems []string                             `json:"problems"`
	Complete bool                                 `json:"complete"`
}

// regfsGC runs regfs gc --json on root and fails the test unless it exits 0.
func regfsGC(t *testing.T, root string, args ...string) regfsGCReport {
	t.Helper()
	cmd := exec.Command(regfsBin, append([]string{"gc", "--root", root, "--json"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var rep regfsGCReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil || err != nil || !rep.Complete {
		t.Fatalf("regfs gc %v: %v (%v)\n%s\n%s", args, err, jerr, out, stderr.Bytes())
	}
	return rep
}

func revs(repo string, ds ...digest.Digest) []string {
	var out []string
	for _, d := range ds {
		out = append(out, repo+"@"+d.String())
	}
	return out
}

func sortedDigests(dss ...[]digest.Digest) []digest.Digest {
	var out []digest.Digest
	for _, ds := range dss {
		for _, d := range ds {
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	slices.Sort(out)
	return out
}

func minus(a, b []digest.Digest) []digest.Digest {
	var out []digest.Digest
	for _, d := range a {
		if !slices.Contains(b, d) {
			out = append(out, d)
		}
	}
	return out
}

// TestGCAgainstRegistryGC runs the registry's garbage-collect and regfs gc
// on two copies of one tree the registry wrote, and compares what each
// deleted, case by case. Then the registry serves the tree regfs collected:
// every tag pulls byte-exact and regfs fsck finds nothing wrong.
func TestGCAgainstRegistryGC(t *testing.T) {
	f := newGCFixture(t)
	before := treeObjects(t, f.root)

	t.Run("default", func(t *testing.T) {
		reg, rfs, plain := copyTree(t, f.root), copyTree(t, f.root), copyTree(t, f.root)
		registryGC(t, reg, false)
		regfsGC(t, rfs, "--unreferenced-layers")
		regfsGC(t, plain)
		byReg := diffTrees(before, treeObjects(t, reg))
		byRegfs := diffTrees(before, treeObjects(t, rfs))
		byPlain := diffTrees(before, treeObjects(t, plain))
		t.Logf("registry deleted %+v", byReg)
		t.Logf("regfs --unreferenced-layers deleted %+v", byRegfs)

		// The deleted revision's manifest and its own blobs: both agree.
		want := sortedDigests([]digest.Digest{f.deleted}, f.deletedB)
		if !slices.Equal(byReg.blobs, want) {
			t.Errorf("registry deleted blobs %v, want the deleted revision's %v", byReg.blobs, want)
		}
		if !slices.Equal(byRegfs.blobs, byReg.blobs) {
			t.Errorf("regfs deleted blobs %v, the registry %v", byRegfs.blobs, byReg.blobs)
		}
		// The registry leaves the _layers links to what it deleted
		// (dangling); regfs removes them first.
		if len(byReg.links) != 0 || !slices.Equal(byRegfs.links, revs("app", sortedDigests(f.deletedB)...)) {
			t.Errorf("links removed: registry %v, regfs %v", byReg.links, byRegfs.links)
		}
		// Only regfs purges the abandoned upload.
		if len(byReg.uploads) != 0 || !slices.Equal(byRegfs.uploads, []string{"app/" + f.uploadID}) {
			t.Errorf("uploads removed: registry %v, regfs %v", byReg.uploads, byRegfs.uploads)
		}
		// Without --unreferenced-layers a link keeps its blob: only the
		// deleted manifest goes.
		if !slices.Equal(byPlain.blobs, []digest.Digest{f.deleted}) || len(byPlain.links) != 0 {
			t.Errorf("regfs gc without flags deleted %+v", byPlain)
		}
		for _, g := range []gcDeleted{byReg, byRegfs, byPlain} {
			if len(g.revisions)+len(g.other) != 0 {
				t.Errorf("revisions or other files deleted: %+v", g)
			}
		}
		checkTreeConsistent(t, rfs)
		checkTreeConsistent(t, plain)
		checkServes(t, f, rfs)
	})

	t.Run("delete-untagged", func(t *testing.T) {
		reg, rfs := copyTree(t, f.root), copyTree(t, f.root)
		registryGC(t, reg, true)
		regfsGC(t, rfs, "--delete-untagged", "--unreferenced-layers")
		byReg := diffTrees(before, treeObjects(t, reg))
		byRegfs := diffTrees(before, treeObjects(t, rfs))
		t.Logf("registry -m deleted %+v", byReg)
		t.Logf("regfs --delete-untagged --unreferenced-layers deleted %+v", byRegfs)

		// Where the registry is right, both delete the untagged revision
		// and the blobs only it and the deleted revision had.
		agreed := sortedDigests([]digest.Digest{f.untagged, f.deleted}, f.untaggedB, f.deletedB)
		if !slices.Equal(byRegfs.blobs, agreed) {
			t.Errorf("regfs deleted blobs %v, want %v", byRegfs.blobs, agreed)
		}
		if !slices.Equal(byRegfs.revisions, revs("app", f.untagged)) {
			t.Errorf("regfs deleted revisions %v, want %v", byRegfs.revisions, revs("app", f.untagged))
		}
		// Where it is wrong, it also deletes the children of the index and
		// of the manifest list (distribution #3178: their revisions, configs
		// and layers; the index still marks their manifest blobs) and the
		// referrer with its blobs; regfs keeps them.
		wrong := sortedDigests(f.childrenB, []digest.Digest{f.referrer}, f.referrerB)
		if got := minus(byReg.blobs, byRegfs.blobs); !slices.Equal(got, wrong) {
			t.Errorf("registry deleted, beyond regfs, %v; want the children's blobs and the referrer %v", got, wrong)
		}
		wrongRevs := slices.Concat(revs("app", f.untagged, f.referrer), revs("multi", f.children[:2]...), revs("dlist", f.children[2:]...))
		slices.Sort(wrongRevs)
		if !slices.Equal(byReg.revisions, wrongRevs) {
			t.Errorf("registry deleted revisions %v, want the untagged one, the referrer and the children %v", byReg.revisions, wrongRevs)
		}
		if extra := minus(byRegfs.blobs, byReg.blobs); len(extra) != 0 {
			t.Errorf("regfs deleted blobs the registry kept: %v", extra)
		}
		checkTreeConsistent(t, rfs)
		checkServes(t, f, rfs)
		// The registry's collection broke the index: its children are gone.
		r := startRegistry(t, reg)
		if m := r.getManifest("multi", f.children[0].String()); m.Status != http.StatusNotFound {
			t.Errorf("after the registry's gc -m the index child answers %d; the comparison assumed it deleted", m.Status)
		}
	})
}

// checkServes starts the registry on root and pulls every fixture tag
// with skopeo (which checks every digest), comparing the manifests served
// with those pushed, and the referrer by digest.
func checkServes(t *testing.T, f *gcFixture, root string) {
	t.Helper()
	r := startRegistry(t, root)
	for ref, want := range f.tags {
		repo, tag, _ := strings.Cut(ref, ":")
		m := r.mustGetManifest(repo, tag)
		if want != nil && !bytes.Equal(m.Body, want) {
			t.Errorf("%s serves another manifest after gc", ref)
		}
		skopeoCopy(t, "--all", r.ref(repo, tag), "oci:"+filepath.Join(t.TempDir(), "pull")+":x")
	}
	if m := r.getManifest("app", f.referrer.String()); m.Status != http.StatusOK {
		t.Errorf("referrer answers %d after gc", m.Status)
	}
	r.stop()
}

// gcLoop runs regfs gc with args on root again and again until stop is
// closed, and returns how many runs there were and the first failure.
func gcLoop(root string, stop <-chan struct{}, args ...string) <-chan gcLoopResult {
	done := make(chan gcLoopResult, 1)
	go func() {
		var res gcLoopResult
		for {
			select {
			case <-stop:
				done <- res
				return
			default:
			}
			out, err := exec.Command(regfsBin, append([]string{"gc", "--root", root, "--json"}, args...)...).CombinedOutput()
			res.runs++
			var rep regfsGCReport
			if jerr := json.Unmarshal(out, &rep); jerr == nil {
				res.blobs += rep.Total.Blobs
				res.spared += rep.Spared.Grace + rep.Spared.Recheck
			}
			if err != nil && res.err == nil {
				res.err = fmt.Errorf("regfs gc run %d: %v\n%s", res.runs, err, out)
			}
		}
	}()
	return done
}

type gcLoopResult struct {
	runs, blobs, spared int
	err                 error
}

// TestGCBesidePushes pushes images through the registry and through a
// running mount while regfs gc runs again and again with the default grace
// window and --delete-untagged on the same storage, on a tree that holds
// old garbage, some of whose bytes the pushes send again. Every push
// completes and pulls back byte-exact, the garbage not pushed again goes,
// and the tree checks clean.
func TestGCBesidePushes(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	root := t.TempDir()
	r := startRegistry(t, root)
	amd := v1.Platform{OS: "linux", Architecture: "amd64"}

	// Old garbage: revisions deleted and layers unlinked through the API.
	var garbage []testImage
	l := newOCILayout(t)
	for i := range 4 {
		img := newTestImage(t, amd, layerSpec{uint64(100 + i), 20000})
		garbage = append(garbage, img)
		tag := fmt.Sprintf("g%d", i)
		l.addImage(tag, img)
		skopeoCopy(t, "oci:"+l.Dir+":"+tag, r.ref("junk", tag))
		if status := r.deleteManifest("junk", img.Manifest.Desc.Digest); status != http.StatusAccepted {
			t.Fatalf("DELETE manifest: %d", status)
		}
		for _, b := range img.blobs() {
			if status := r.deleteBlob("junk", b.Desc.Digest); status != http.StatusAccepted {
				t.Fatalf("DELETE blob: %d", status)
			}
		}
	}
	ageTree(t, root, 48*time.Hour)
	m := startMount(t, "filesystem", mountOpts{Root: root})
	sh(t, "mkdir -p "+shellQuote(m.path("live", "mount")))

	stop := make(chan struct{})
	loop := gcLoop(root, stop, "--delete-untagged")
	// Images 0 and 1 send the layers of garbage images 0 and 1 again.
	pushed := map[string]testImage{}
	for i := range 10 {
		layers := []layerSpec{{uint64(200 + i), 30000}}
		if i < 2 {
			layers = append(layers, layerSpec{uint64(100 + i), 20000})
		}
		img := newTestImage(t, amd, layers...)
		tag := fmt.Sprintf("p%d", i)
		l.addImage(tag, img)
		skopeoCopy(t, "oci:"+l.Dir+":"+tag, r.ref("live/registry", tag))
		pushed["live/registry:"+tag] = img
		// The same through the mount: blobs with cp, then the manifest.
		mimg := newTestImage(t, amd, layerSpec{uint64(300 + i), 30000})
		pushBlobs(t, m, "live/mount", mimg.blobs()...)
		cpManifest(t, m, "live/mount", tag, mimg.Manifest.Data)
		pushed["live/mount:"+tag] = mimg
	}
	close(stop)
	res := <-loop
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Logf("%d gc runs during the pushes deleted %d blobs, spared %d", res.runs, res.blobs, res.spared)
	m.stop()

	// One more run after the pushes, as the loop may have ended before the
	// garbage was old enough to go (it was aged before the loop started).
	regfsGC(t, root, "--delete-untagged")
	for ref, img := range pushed {
		repo, tag, _ := strings.Cut(ref, ":")
		if got := r.mustGetManifest(repo, tag); !bytes.Equal(got.Body, img.Manifest.Data) {
			t.Errorf("%s serves another manifest", ref)
		}
		for _, b := range img.blobs() {
			if status, body := r.getBlob(repo, b.Desc.Digest); status != http.StatusOK || !bytes.Equal(body, b.Data) {
				t.Errorf("%s: blob %s: status %d, %d bytes", ref, b.Desc.Digest, status, len(body))
			}
		}
		skopeoCopy(t, r.ref(repo, tag), "oci:"+filepath.Join(t.TempDir(), "pull")+":x")
	}
	// The garbage not sent again is gone.
	for i, img := range garbage {
		for _, b := range img.Layers {
			_, err := os.Stat(filepath.Join(root, "docker/registry/v2/blobs/sha256", b.Desc.Digest.Encoded()[:2], b.Desc.Digest.Encoded(), "data"))
			if i >= 2 && err == nil {
				t.Errorf("garbage layer %s of image %d still there", b.Desc.Digest, i)
			}
		}
	}
	checkTreeConsistent(t, root)
}

// buildGarbageTree writes, through the store, repositories that each hold
// a tagged image (kept), untagged images, unlinked blobs and an abandoned
// upload, plus repositories left empty; it returns the kept images'
// manifests by repo:tag and every blob they need.
func buildGarbageTree(t *testing.T, root string, repos int) (map[string]digest.Digest, []digest.Digest) {
	t.Helper()
	ctx := context.Background()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(d, store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	push := func(repo store.Repository, content string) digest.Digest {
		dg := digest.FromString(content)
		up, err := repo.Uploads().Create(ctx, dg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		if _, err := up.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return dg
	}
	image := func(repo store.Repository, seed, tag string) (digest.Digest, []digest.Digest) {
		cfg := push(repo, "config "+seed)
		shared := push(repo, "a layer every image has")
		own := push(repo, "layer of "+seed)
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":1,"digest":%q},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1,"digest":%q},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1,"digest":%q}]}`,
			v1.MediaTypeImageManifest, cfg, shared, own)
		md, err := repo.Manifests().Put(ctx, []byte(m), tag, "")
		if err != nil {
			t.Fatal(err)
		}
		return md, []digest.Digest{md, cfg, shared, own}
	}
	kept := map[string]digest.Digest{}
	var keptBlobs []digest.Digest
	for i := range repos {
		name := fmt.Sprintf("team%d/app", i)
		repo, err := st.Repository(name)
		if err != nil {
			t.Fatal(err)
		}
		md, blobs := image(repo, name+" v1", "v1")
		kept[name+":v1"] = md
		keptBlobs = append(keptBlobs, blobs...)
		for j := range 3 {
			image(repo, fmt.Sprintf("%s untagged %d", name, j), "")
		}
		for j := range 20 {
			b := push(repo, fmt.Sprintf("%s loose %d", name, j))
			if err := repo.Layers().Unlink(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		up, err := repo.Uploads().Create(ctx, digest.FromString("never finished"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write([]byte("half")); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		p, _ := store.Location{Kind: store.PathUploadStartedAt, Repository: name, Upload: up.ID()}.Path()
		if err := d.PutContent(ctx, p, []byte(time.Now().Add(-10*24*time.Hour).UTC().Format(time.RFC3339))); err != nil {
			t.Fatal(err)
		}
		// A repository whose only blob was unlinked: empty.
		empty, err := st.Repository(fmt.Sprintf("team%d/gone", i))
		if err != nil {
			t.Fatal(err)
		}
		b := push(empty, fmt.Sprintf("team%d gone", i))
		if err := empty.Layers().Unlink(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	return kept, keptBlobs
}

// visibleObjects is treeObjects without the filesystem driver's hidden
// leftovers (".#" names) of deletes a kill interrupted.
func visibleObjects(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := treeObjects(t, root)
	for p := range out {
		if strings.Contains(p, "/.#") {
			delete(out, p)
		}
	}
	return out
}

// TestGCKilledAndRerun kills regfs gc with SIGKILL at a random point of
// its run, on four copies of one tree, then runs it to the end on each:
// each tree is what one uninterrupted run makes, fsck finds nothing wrong,
// and every kept image is whole.
func TestGCKilledAndRerun(t *testing.T) {
	orig := t.TempDir()
	kept, keptBlobs := buildGarbageTree(t, orig, 20)
	ageTree(t, orig, 10*24*time.Hour)
	flags := []string{"--delete-untagged", "--unreferenced-layers", "--prune-empty"}

	ref := copyTree(t, orig)
	start := time.Now()
	rep := regfsGC(t, ref, flags...)
	full := time.Since(start)
	want := treeObjects(t, ref)
	t.Logf("uninterrupted run: %v, deleted %+v", full, rep.Total)

	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	before := len(treeObjects(t, orig))
	for i := range 4 {
		root := copyTree(t, orig)
		cmd := exec.Command(regfsBin, append([]string{"gc", "--root", root}, flags...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		after := time.Duration(rng.Int64N(int64(full)))
		time.Sleep(after)
		_ = cmd.Process.Kill()
		err := cmd.Wait()
		t.Logf("run %d killed after %v (%v): %d objects of %d left, %d when done", i, after, err, len(visibleObjects(t, root)), before, len(want))
		regfsGC(t, root, flags...)
		checkGCResult(t, root, want, kept, keptBlobs)
	}
}

// checkGCResult checks a collected tree against the one an uninterrupted
// run made: same objects, fsck clean, kept images whole.
func checkGCResult(t *testing.T, root string, want map[string]bool, kept map[string]digest.Digest, keptBlobs []digest.Digest) {
	t.Helper()
	got := visibleObjects(t, root)
	for p := range want {
		if !got[p] {
			t.Errorf("%s: kept by one run, gone after the killed run", p)
		}
	}
	for p := range got {
		if !want[p] {
			t.Errorf("%s: deleted by one run, still there after the killed run and a rerun", p)
		}
	}
	out, err := exec.Command(regfsBin, "fsck", "--root", root, "--json").Output()
	var fr fsckReport
	if jerr := json.Unmarshal(out, &fr); jerr != nil || err != nil || !fr.Complete || len(fr.Problems) > 0 {
		t.Errorf("fsck after the killed run: %v %v %+v", err, jerr, fr.Problems)
	}
	for ref, md := range kept {
		repo, tag, _ := strings.Cut(ref, ":")
		b, err := os.ReadFile(filepath.Join(root, "docker/registry/v2/repositories", repo, "_manifests/tags", tag, "current/link"))
		if err != nil || string(b) != md.String() {
			t.Errorf("%s: tag lost (%v)", ref, err)
		}
	}
	for _, d := range keptBlobs {
		b, err := os.ReadFile(filepath.Join(root, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data"))
		if err != nil || digest.FromBytes(b) != d {
			t.Errorf("kept blob %s lost or damaged (%v)", d, err)
		}
	}
}

// TestGCInsideMount runs the mount's own collector every 200 ms with no
// grace window while images are pushed through the mount, some re-sending
// the bytes of garbage blobs: the fence keeps what the mount is uploading,
// committing and linking, so every push reads back, the garbage not sent
// again goes, and the tree checks clean.
func TestGCInsideMount(t *testing.T) {
	root := t.TempDir()
	buildGarbageTree(t, root, 3)
	ageTree(t, root, 10*24*time.Hour)
	loose := filepath.Join(root, "docker/registry/v2/blobs/sha256", digest.FromString("team2/app loose 19").Encoded()[:2], digest.FromString("team2/app loose 19").Encoded(), "data")
	if _, err := os.Stat(loose); err != nil {
		t.Fatal(err)
	}
	m := startMount(t, "filesystem", mountOpts{Root: root, Extra: []string{"--gc-interval", "200ms", "--gc-grace", "0s"}})
	sh(t, "mkdir -p "+shellQuote(m.path("pushed")))
	amd := v1.Platform{OS: "linux", Architecture: "amd64"}
	type pushedImage struct {
		tag string
		img testImage
	}
	var pushed []pushedImage
	for i := range 12 {
		img := newTestImage(t, amd, layerSpec{uint64(400 + i), 40000})
		if i%3 == 0 {
			// The bytes of a garbage blob, sent again through the mount.
			g := []byte(fmt.Sprintf("team%d/app loose %d", i%3, i))
			img.Layers = append(img.Layers, newBlob(v1.MediaTypeImageLayer, g))
			img.Manifest = newBlob(v1.MediaTypeImageManifest, mustJSON(t, v1.Manifest{
				Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest,
				Config: img.Config.Desc, Layers: descs(img.Layers),
			}))
		}
		tag := fmt.Sprintf("t%d", i)
		pushBlobs(t, m, "pushed", img.blobs()...)
		cpManifest(t, m, "pushed", tag, img.Manifest.Data)
		pushed = append(pushed, pushedImage{tag, img})
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(loose); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("garbage not collected inside the mount within 60s\n%s", m.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range pushed {
		if got := catFile(t, m.path("pushed", "_manifests", p.tag)); !bytes.Equal(got, p.img.Manifest.Data) {
			t.Errorf("%s: manifest differs", p.tag)
		}
		for _, b := range p.img.blobs() {
			if got := catFile(t, m.path("pushed", "_layers", b.Desc.Digest.String())); !bytes.Equal(got, b.Data) {
				t.Errorf("%s: blob %s differs", p.tag, b.Desc.Digest)
			}
		}
	}
	// .regfs/stats shows the mount's collections.
	var stats struct {
		GC *struct {
			Runs                int64 `json:"runs"`
			ReclaimedBytesTotal int64 `json:"reclaimedBytesTotal"`
		} `json:"gc"`
	}
	if err := json.Unmarshal(catFile(t, m.path(".regfs", "stats")), &stats); err != nil {
		t.Fatal(err)
	}
	if stats.GC == nil || stats.GC.Runs == 0 || stats.GC.ReclaimedBytesTotal == 0 {
		t.Errorf(".regfs/stats does not show the mount's gc runs: %+v", stats.GC)
	}
	m.stop()
	if !strings.Contains(m.logText(), "gc finished") {
		t.Errorf("no gc run logged:\n%s", m.logText())
	}
	checkTreeConsistent(t, root)
}

// TestGCInsideMountDropsCachedListings: the mount's own collector removes
// an upload abandoned a week ago, and the mount drops the kernel's copy of
// the _uploads/ listing at once, though listings are cached for an hour
// (--dir-cache-time): ls no longer shows what gc removed.
func TestGCInsideMountDropsCachedListings(t *testing.T) {
	root := t.TempDir()
	const id = "0b6f0a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
	dir := filepath.Join(root, "docker/registry/v2/repositories/app/_uploads", id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeStarted := func(at time.Time) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "startedat"), []byte(at.UTC().Format(time.RFC3339)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeStarted(time.Now())
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("abandoned"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An upload in progress keeps the repository and _uploads/ there.
	const live = "1b6f0a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
	liveDir := filepath.Join(filepath.Dir(dir), live)
	if err := os.MkdirAll(liveDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(liveDir, "startedat"), []byte(time.Now().UTC().Format(time.RFC3339)), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startMount(t, "filesystem", mountOpts{Root: root, Extra: []string{"--gc-interval", "300ms", "--gc-grace", "0s", "--dir-cache-time", "1h"}})
	if got := listDir(t, m.path("app", "_uploads")); !slices.Equal(got, []string{id, live}) {
		t.Fatalf("_uploads lists %v, want both uploads", got)
	}
	// Now abandoned for ten days: the next collection removes it.
	writeStarted(time.Now().Add(-10 * 24 * time.Hour))
	ageTree(t, dir, 10*24*time.Hour)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload not collected inside the mount within 60s\n%s", m.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The run's report reaches the mount right after the deletion.
	for {
		got := listDir(t, m.path("app", "_uploads"))
		if slices.Equal(got, []string{live}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("_uploads still lists %v after gc removed it (the cached listing was not dropped)", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGCOnS3 collects a bucket that a mount wrote through versitygw: the
// same rules on the S3 driver, fsck clean after, and the kept image whole.
func TestGCOnS3(t *testing.T) {
	m := startMount(t, "s3", mountOpts{Prefix: "reg"})
	kept := pushImage(t, m, "app", "v1", 2)
	untagged := pushImage(t, m, "app", "old", 1)
	loose := randomBytes(t, 5000)
	looseD := pushLayer(t, m, "app", loose)
	sh(t, fmt.Sprintf("rm %q %q", m.path("app", "_manifests", "old"), m.path("app", "_layers", looseD)))
	m.stop()

	s3Args := []string{"--driver", "s3", "--s3-bucket", m.Bucket, "--s3-endpoint", m.S3.Endpoint, "--s3-region", m.S3.Region, "--s3-prefix", m.Prefix}
	run := func(cmdArgs ...string) []byte {
		t.Helper()
		cmd := exec.Command(regfsBin, cmdArgs...)
		cmd.Env = append(os.Environ(), m.S3.Env()...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("regfs %v: %v\n%s", cmdArgs, err, out)
		}
		return out
	}
	// Just written: the grace window keeps everything.
	var rep regfsGCReport
	if err := json.Unmarshal(run(append([]string{"gc", "--json", "--delete-untagged", "--unreferenced-layers"}, s3Args...)...), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Total.Blobs+rep.Total.Revisions+rep.Total.Links != 0 || rep.Spared.Grace == 0 {
		t.Fatalf("inside the grace window: %+v", rep)
	}
	if err := json.Unmarshal(run(append([]string{"gc", "--json", "--grace", "0", "--delete-untagged", "--unreferenced-layers"}, s3Args...)...), &rep); err != nil {
		t.Fatal(err)
	}
	// The untagged revision, its manifest, config and layer, its links,
	// and the unlinked layer.
	if rep.Total.Revisions != 1 || rep.Total.Blobs != 4 || rep.Total.Links != 2 {
		t.Fatalf("deleted %+v", rep.Total)
	}
	keys, err := m.S3.Keys(context.Background(), m.Bucket, m.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, strings.TrimPrefix(looseD, "sha256:")) || strings.Contains(k, strings.TrimPrefix(sha(untagged), "sha256:")) {
			t.Errorf("%s still in the bucket", k)
		}
	}
	run(append([]string{"fsck"}, s3Args...)...)
	m2 := startMount(t, "s3", mountOpts{Bucket: m.Bucket, Prefix: m.Prefix})
	if got := readFile(t, m2.path("app", "_manifests", "v1")); !bytes.Equal(got, kept) {
		t.Fatal("kept manifest differs")
	}
	for _, l := range lines(sh(t, "ls "+m2.path("app/_layers"))) {
		if sum := strings.Fields(sh(t, "sha256sum "+m2.path("app/_layers", l)))[0]; "sha256:"+sum != l {
			t.Errorf("layer %s hashes to %s", l, sum)
		}
	}
}
