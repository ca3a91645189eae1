package integration

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestInterop proves that regfs and Debian's docker/distribution registry
// (2.8.2) share one storage root: each writes what the other reads, and
// deletes and uploads seen by one are seen by the other. Each scenario runs
// its own registry on a free 127.0.0.1 port over its own temp root, with
// regfs (filesystem driver) mounting the same root.
func TestInterop(t *testing.T) {
	requireTools(t, registryBin, "skopeo", "sha256sum")
	t.Run("RegistryWritesRegfsReads", testRegistryWritesRegfsReads)
	t.Run("RegfsWritesRegistryServes", testRegfsWritesRegistryServes)
	t.Run("DeletesAgree", testDeletesAgree)
	t.Run("AbandonedUploadCancelled", testAbandonedUploadCancelled)
	t.Run("CrossRepositoryLink", testCrossRepositoryLink)
}

var (
	platformAMD64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	platformARM64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// testRegistryWritesRegfsReads pushes every manifest kind with skopeo into
// the registry, then checks that the mount lists every repository, tag and
// revision and serves the registry's bytes.
func testRegistryWritesRegfsReads(t *testing.T) {
	root := t.TempDir()
	r := startRegistry(t, root)

	// Two platforms sharing a base layer; amd64 has a few MiB layer.
	amd := newTestImage(t, platformAMD64, layerSpec{1, 4096}, layerSpec{2, 3 << 20}, layerSpec{3, 10})
	arm := newTestImage(t, platformARM64, layerSpec{1, 4096}, layerSpec{4, 200 << 10})
	l := newOCILayout(t)
	l.addImage("amd", amd)
	l.addIndex("multi", amd, arm)
	src := func(tag string) string { return "oci:" + l.Dir + ":" + tag }

	skopeoCopy(t, "--format", "oci", src("amd"), r.ref("interop/oci", "v1"))
	skopeoCopy(t, "--format", "oci", src("amd"), r.ref("interop/oci", "latest"))
	skopeoCopy(t, "--format", "v2s2", src("amd"), r.ref("interop/docker", "v1"))
	skopeoCopy(t, "--format", "v2s1", src("amd"), r.ref("interop/schema1", "v1"))
	skopeoCopy(t, "--multi-arch", "all", "--format", "oci", src("multi"), r.ref("interop/deep/index", "v1"))
	skopeoCopy(t, "--multi-arch", "all", "--format", "v2s2", src("multi"), r.ref("list", "v1"))

	want := map[string]string{ // repository -> media type of its v1 tag
		"interop/oci":        v1.MediaTypeImageManifest,
		"interop/docker":     mtDockerManifest,
		"interop/schema1":    mtSchema1Signed,
		"interop/deep/index": v1.MediaTypeImageIndex,
		"list":               mtDockerManifestList,
	}
	repos := r.catalog()
	if len(repos) != len(want) {
		t.Fatalf("registry catalog %v, want the %d pushed repositories", repos, len(want))
	}
	for _, repo := range repos {
		if m := r.mustGetManifest(repo, "v1"); m.ContentType != want[repo] {
			t.Fatalf("%s:v1 served as %q, want %q (harness did not push the kind it meant to)", repo, m.ContentType, want[repo])
		}
	}
	// The OCI index's children are the OCI manifests built here, byte for byte.
	for _, img := range []testImage{amd, arm} {
		if got := r.mustGetManifest("interop/deep/index", img.Manifest.Desc.Digest.String()); !bytes.Equal(got.Body, img.Manifest.Data) {
			t.Fatalf("registry serves index child %s with other bytes", img.Manifest.Desc.Digest)
		}
	}

	m := startMount(t, "filesystem", mountOpts{Root: root})

	top := listDir(t, m.Dir)
	for _, name := range []string{"interop", "list"} {
		if !slices.Contains(top, name) {
			t.Errorf("mount root lists %v, missing %q", top, name)
		}
	}
	if got := listDir(t, m.path("interop", "deep")); !slices.Contains(got, "index") {
		t.Errorf("%s lists %v, missing the repository index", m.path("interop", "deep"), got)
	}

	for _, repo := range repos {
		t.Run(strings.ReplaceAll(repo, "/", "_"), func(t *testing.T) {
			checkRepoMatches(t, r, m, repo)
		})
	}
}

// checkRepoMatches checks one repository through the mount against the
// registry: the same tags and revisions, each manifest with the registry's
// bytes (for schema1: the same payload, signatures that verify), every
// layer hashing to its name.
func checkRepoMatches(t *testing.T, r *registry, m *mount, repo string) {
	var tags, revs []string
	for _, name := range listDir(t, m.path(repo, "_manifests")) {
		if strings.HasPrefix(name, "sha256:") {
			revs = append(revs, name)
		} else {
			tags = append(tags, name)
		}
	}
	wantTags := r.tags(repo)
	slices.Sort(wantTags)
	if !slices.Equal(tags, wantTags) {
		t.Errorf("ls %s lists tags %v, registry lists %v", m.path(repo, "_manifests"), tags, wantTags)
	}
	var wantRevs []string
	for _, d := range r.revisions(repo) {
		wantRevs = append(wantRevs, d.String())
	}
	slices.Sort(wantRevs)
	if !slices.Equal(revs, wantRevs) {
		t.Errorf("ls %s lists revisions %v, registry has %v", m.path(repo, "_manifests"), revs, wantRevs)
	}

	for _, ref := range append(wantTags, wantRevs...) {
		served := r.mustGetManifest(repo, ref)
		got := catFile(t, m.path(repo, "_manifests", ref))
		sameManifest(t, repo+"/_manifests/"+ref, got, served)
		if strings.HasPrefix(ref, "sha256:") && served.Digest.String() != ref {
			t.Errorf("registry serves %s@%s with Docker-Content-Digest %s", repo, ref, served.Digest)
		}
	}

	layersDir := m.path(repo, "_layers")
	layers := listDir(t, layersDir)
	var wantLayers []string
	ents, err := os.ReadDir(filepath.Join(r.Root, "docker/registry/v2/repositories", repo, "_layers/sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(r.Root, "docker/registry/v2/repositories", repo, "_layers/sha256", e.Name(), "link")); err == nil {
			wantLayers = append(wantLayers, "sha256:"+e.Name())
		}
	}
	if !slices.Equal(layers, wantLayers) {
		t.Errorf("ls %s lists %v, registry links %v", layersDir, layers, wantLayers)
	}
	// sha256sum reads every layer through the mount, big ones included.
	out := sh(t, "cd "+shellQuote(layersDir)+" && sha256sum -- sha256:*")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || "sha256:"+sum != name {
			t.Errorf("sha256sum %s: %q: content does not hash to its name", layersDir, line)
		}
	}
	for _, name := range layers {
		status, size := r.headBlob(repo, digest.Digest(name))
		if status != http.StatusOK {
			t.Errorf("registry HEAD %s blob %s: %d", repo, name, status)
			continue
		}
		if got := statSize(t, filepath.Join(layersDir, name)); got != size {
			t.Errorf("stat %s: size %d, registry says %d", name, got, size)
		}
	}
}

// sameManifest checks that manifest bytes read through the mount are what
// the registry serves. The registry stores a schema1 manifest as its
// unsigned payload and signs it with its own key on every GET, so there the
// payloads must match and both signatures verify.
func sameManifest(t *testing.T, what string, got []byte, served servedManifest) {
	t.Helper()
	if served.ContentType != mtSchema1Signed {
		if !bytes.Equal(got, served.Body) {
			t.Errorf("%s: mount gives %d bytes (%s), registry serves %d bytes (%s)",
				what, len(got), digest.FromBytes(got), len(served.Body), served.Digest)
		}
		return
	}
	gotPayload, _, err := schema1Payload(got)
	if err != nil {
		t.Errorf("%s through the mount: schema1 signatures do not verify: %v\n%s", what, err, got)
		return
	}
	servedPayload, _, err := schema1Payload(served.Body)
	if err != nil {
		t.Fatalf("%s: registry's schema1 does not verify: %v", what, err)
	}
	if !bytes.Equal(gotPayload, servedPayload) {
		t.Errorf("%s: schema1 payload through the mount differs from the registry's:\n%s\n---\n%s", what, gotPayload, servedPayload)
	}
	if d := digest.FromBytes(gotPayload); d != served.Digest {
		t.Errorf("%s: schema1 payload through the mount hashes to %s, registry's digest is %s", what, d, served.Digest)
	}
}

// testRegfsWritesRegistryServes pushes images through the mount with cp
// (an OCI manifest, a docker schema2 manifest and a libtrust-signed schema1
// manifest) and pulls them from the registry with skopeo.
func testRegfsWritesRegistryServes(t *testing.T) {
	root := t.TempDir()
	r := startRegistry(t, root)
	m := startMount(t, "filesystem", mountOpts{Root: root})

	img := newTestImage(t, platformAMD64, layerSpec{10, 2000}, layerSpec{11, 4 << 20}, layerSpec{12, 3000})
	repo := "team/app"
	sh(t, "mkdir -p "+shellQuote(m.path(repo)))
	pushBlobs(t, m, repo, img.blobs()...)
	docker := img.dockerManifest(t)
	cpManifest(t, m, repo, "v1", img.Manifest.Data)
	cpManifest(t, m, repo, "docker", docker.Data)

	// OCI: skopeo pulls into an OCI layout; every blob is what was written.
	out := newOCILayout(t)
	skopeoCopy(t, r.ref(repo, "v1"), "oci:"+out.Dir+":v1")
	if d := readLayout(t, out.Dir, "v1"); d.Digest != img.Manifest.Desc.Digest {
		t.Errorf("skopeo pulled %s:v1 as %s, pushed %s", repo, d.Digest, img.Manifest.Desc.Digest)
	}
	for _, b := range append(img.blobs(), img.Manifest) {
		if got := layoutBlob(t, out.Dir, b.Desc.Digest); !bytes.Equal(got, b.Data) {
			t.Errorf("pulled blob %s differs", b.Desc.Digest)
		}
	}
	// Docker schema2: the dir transport keeps the manifest as served.
	dir := t.TempDir()
	skopeoCopy(t, r.ref(repo, "docker"), "dir:"+dir)
	if got, err := os.ReadFile(filepath.Join(dir, "manifest.json")); err != nil || !bytes.Equal(got, docker.Data) {
		t.Errorf("skopeo pulled %s:docker manifest %s (%v), pushed %s", repo, got, err, docker.Data)
	}
	for _, b := range img.blobs() {
		if got, err := os.ReadFile(filepath.Join(dir, b.Desc.Digest.Encoded())); err != nil || !bytes.Equal(got, b.Data) {
			t.Errorf("skopeo pulled blob %s: %d bytes (%v), pushed %d", b.Desc.Digest, len(got), err, len(b.Data))
		}
	}
	if s := r.mustGetManifest(repo, "docker"); s.ContentType != mtDockerManifest || s.Digest != docker.Desc.Digest {
		t.Errorf("registry serves %s:docker as %s %s, pushed %s %s", repo, s.ContentType, s.Digest, mtDockerManifest, docker.Desc.Digest)
	}

	// Schema1, signed with a fresh libtrust key: the registry serves the same
	// payload (re-signed by itself), and the mount gives the pushed
	// signature back.
	key, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	legacy := "team/legacy"
	sh(t, "mkdir -p "+shellQuote(m.path(legacy)))
	pushBlobs(t, m, legacy, img.Layers...)
	signed, canonical := img.schema1Manifest(t, key, legacy, "v1")
	wantPayload, _, err := schema1Payload(signed)
	if err != nil {
		t.Fatal(err)
	}
	cpManifest(t, m, legacy, "v1", signed)
	served := r.mustGetManifest(legacy, "v1")
	if served.ContentType != mtSchema1Signed || served.Digest != canonical {
		t.Errorf("registry serves %s:v1 as %s %s, want %s %s", legacy, served.ContentType, served.Digest, mtSchema1Signed, canonical)
	}
	if p, _, err := schema1Payload(served.Body); err != nil || !bytes.Equal(p, wantPayload) {
		t.Errorf("registry's %s:v1: payload differs or does not verify (%v):\n%s", legacy, err, served.Body)
	}
	back := catFile(t, m.path(legacy, "_manifests", canonical.String()))
	if p, ids, err := schema1Payload(back); err != nil || !bytes.Equal(p, wantPayload) || !slices.Contains(ids, key.KeyID()) {
		t.Errorf("schema1 read back through the mount: err %v, payload equal %v, signed by %v, want a signature by %s",
			err, bytes.Equal(p, wantPayload), ids, key.KeyID())
	}
	// A real client pulls it from the registry.
	skopeoCopy(t, r.ref(legacy, "v1"), "dir:"+t.TempDir())
}

// pushBlobs copies each blob into repo's _uploads/sha256:<hex> and checks
// that it was committed into _layers.
func pushBlobs(t *testing.T, m *mount, repo string, blobs ...blob) {
	t.Helper()
	for _, b := range blobs {
		name := b.Desc.Digest.String()
		sh(t, "cp "+shellQuote(writeFile(t, b.Data))+" "+shellQuote(m.path(repo, "_uploads", name)))
		if got := statSize(t, m.path(repo, "_layers", name)); got != b.Desc.Size {
			t.Fatalf("%s/_layers/%s: size %d after upload, want %d", repo, name, got, b.Desc.Size)
		}
		if slices.Contains(listDir(t, m.path(repo, "_uploads")), name) {
			t.Errorf("%s/_uploads still lists %s after it was committed", repo, name)
		}
	}
}

// cpManifest pushes a manifest with cp into repo's _manifests/<tag>.
func cpManifest(t *testing.T, m *mount, repo, tag string, data []byte) {
	t.Helper()
	sh(t, "cp "+shellQuote(writeFile(t, data))+" "+shellQuote(m.path(repo, "_manifests", tag)))
}

// testDeletesAgree deletes through each side and checks the other sees it.
func testDeletesAgree(t *testing.T) {
	root := t.TempDir()
	r := startRegistry(t, root)
	repo := "del/app"
	imgs := map[string]testImage{}
	l := newOCILayout(t)
	for i, tag := range []string{"a", "b", "c"} {
		imgs[tag] = newTestImage(t, platformAMD64, layerSpec{20, 1000}, layerSpec{uint64(21 + i), 5000})
		l.addImage(tag, imgs[tag])
	}
	for _, tag := range []string{"a", "b", "c"} {
		skopeoCopy(t, "--format", "oci", "oci:"+l.Dir+":"+tag, r.ref(repo, tag))
	}
	skopeoCopy(t, "--format", "oci", "oci:"+l.Dir+":a", r.ref(repo, "a2"))
	dA, dB, dC := imgs["a"].Manifest.Desc.Digest, imgs["b"].Manifest.Desc.Digest, imgs["c"].Manifest.Desc.Digest
	// Listings another writer changes show within --dir-cache-time;
	// waitGone waits 5 s.
	m := startMount(t, "filesystem", mountOpts{Root: root, Extra: []string{"--dir-cache-time", "2s"}})
	manifests := m.path(repo, "_manifests")

	// rm of a revision through the mount deletes it and both its tags.
	sh(t, "rm "+shellQuote(filepath.Join(manifests, dA.String())))
	if s := r.getManifest(repo, dA.String()); s.Status != http.StatusNotFound {
		t.Errorf("after rm _manifests/%s: registry GET by digest answers %d, want 404", dA, s.Status)
	}
	for _, tag := range []string{"a", "a2"} {
		if s := r.getManifest(repo, tag); s.Status != http.StatusNotFound {
			t.Errorf("after rm _manifests/%s: registry GET %s:%s answers %d (%s), want 404", dA, repo, tag, s.Status, s.Digest)
		}
	}
	if tags := r.tags(repo); !sameSet(tags, []string{"b", "c"}) {
		t.Errorf("after rm _manifests/%s: registry lists tags %v, want [b c]", dA, tags)
	}
	if got := listDir(t, manifests); slices.Contains(got, dA.String()) || slices.Contains(got, "a") || slices.Contains(got, "a2") {
		t.Errorf("after rm _manifests/%s the mount still lists %v", dA, got)
	}

	// DELETE through the registry: the mount stops listing the revision and
	// its tag once the directory cache time has run out.
	if status := r.deleteManifest(repo, dB); status != http.StatusAccepted {
		t.Fatalf("registry DELETE %s@%s: %d", repo, dB, status)
	}
	waitGone(t, manifests, "b", dB.String())

	// rm of a tag through the mount untags; the registry still serves the
	// revision by digest.
	sh(t, "rm "+shellQuote(filepath.Join(manifests, "c")))
	if s := r.getManifest(repo, "c"); s.Status != http.StatusNotFound {
		t.Errorf("after rm _manifests/c: registry GET %s:c answers %d, want 404", repo, s.Status)
	}
	if s := r.getManifest(repo, dC.String()); s.Status != http.StatusOK || !bytes.Equal(s.Body, imgs["c"].Manifest.Data) {
		t.Errorf("after rm _manifests/c: registry GET %s@%s answers %d, want 200 with the pushed manifest", repo, dC, s.Status)
	}
	if got := listDir(t, manifests); slices.Contains(got, "c") || !slices.Contains(got, dC.String()) {
		t.Errorf("after rm _manifests/c the mount lists %v, want %s and no tag c", got, dC)
	}
	if tags := r.tags(repo); len(tags) != 0 {
		t.Errorf("registry still lists tags %v", tags)
	}

	// DELETE of a blob through the registry unlinks it from the
	// repository: the mount stops listing it.
	layer := imgs["c"].Layers[1].Desc.Digest
	if status := r.deleteBlob(repo, layer); status != http.StatusAccepted {
		t.Fatalf("registry DELETE blob %s: %d", layer, status)
	}
	waitGone(t, m.path(repo, "_layers"), layer.String())
}

// waitGone polls for up to 5s until dir lists none of names and stat fails
// for each: what another writer removed may be cached for a short while.
func waitGone(t *testing.T, dir string, names ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		listed := listDir(t, dir)
		var still []string
		for _, name := range names {
			if slices.Contains(listed, name) {
				still = append(still, "listed "+name)
			}
			if out, err := shErr(t, "stat -c %s "+shellQuote(filepath.Join(dir, name))); err == nil {
				still = append(still, "stat "+name+" succeeds: size "+strings.TrimSpace(out))
			}
		}
		if len(still) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("5s after the registry deleted them, %s still shows them: %s (ls lists %v)", dir, strings.Join(still, "; "), listed)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testAbandonedUploadCancelled leaves chunked uploads unfinished in the
// registry and cancels them through the mount.
func testAbandonedUploadCancelled(t *testing.T) {
	root := t.TempDir()
	r := startRegistry(t, root)
	l := newOCILayout(t)
	l.addImage("v1", newTestImage(t, platformAMD64, layerSpec{30, 1000}))
	skopeoCopy(t, "oci:"+l.Dir+":v1", r.ref("up/app", "v1"))
	m := startMount(t, "filesystem", mountOpts{Root: root})

	// One upload in a repository with an image, one in a repository the
	// interrupted push was creating (its only directory is _uploads).
	for _, repo := range []string{"up/app", "up/fresh"} {
		t.Run(strings.ReplaceAll(repo, "/", "_"), func(t *testing.T) {
			u := r.startUpload(repo)
			u = r.patch(u, bytes.Repeat([]byte("a"), 300<<10))
			u = r.patch(u, bytes.Repeat([]byte("b"), 12345))
			const size = 300<<10 + 12345
			if s := r.uploadStatus(u); s.Status != http.StatusNoContent || s.Header.Get("Range") != "0-"+strconv.Itoa(size-1) {
				t.Fatalf("registry upload status %d Range %q, want 204 0-%d", s.Status, s.Header.Get("Range"), size-1)
			}
			uploads := m.path(repo, "_uploads")
			path := filepath.Join(uploads, u.UUID)
			// The upload was made after the mount: uploads have a short
			// validity, so poll.
			deadline := time.Now().Add(5 * time.Second)
			for !slices.Contains(listDir(t, uploads), u.UUID) {
				if time.Now().After(deadline) {
					t.Fatalf("5s after the registry started upload %s, ls %s lists %v", u.UUID, uploads, listDir(t, uploads))
				}
				time.Sleep(100 * time.Millisecond)
			}
			if got := statSize(t, path); got != size {
				t.Errorf("stat %s: size %d, the registry holds %d bytes", path, got, size)
			}
			sh(t, "rm "+shellQuote(path))
			s := r.uploadStatus(u)
			if s.Status != http.StatusNotFound || !slices.Contains(s.errorCodes(), "BLOB_UPLOAD_UNKNOWN") {
				t.Errorf("after rm %s: registry upload status %d %s, want 404 BLOB_UPLOAD_UNKNOWN", path, s.Status, s.Body)
			}
			if got := listDir(t, uploads); slices.Contains(got, u.UUID) {
				t.Errorf("after rm the mount still lists %v", got)
			}
		})
	}
}

// testCrossRepositoryLink links blobs from one repository into another with
// ln through the mount; the registry then serves them from the second.
func testCrossRepositoryLink(t *testing.T) {
	root := t.TempDir()
	r := startRegistry(t, root)
	img := newTestImage(t, platformAMD64, layerSpec{40, 2 << 20}, layerSpec{41, 700})
	l := newOCILayout(t)
	l.addImage("v1", img)
	skopeoCopy(t, "--format", "oci", "oci:"+l.Dir+":v1", r.ref("src/app", "v1"))
	m := startMount(t, "filesystem", mountOpts{Root: root})

	dst := "dst/app"
	for _, b := range img.blobs() {
		if status, _ := r.headBlob(dst, b.Desc.Digest); status != http.StatusNotFound {
			t.Fatalf("registry HEAD %s blob %s before ln: %d, want 404", dst, b.Desc.Digest, status)
		}
	}
	sh(t, "mkdir -p "+shellQuote(m.path(dst)))
	for _, b := range img.blobs() {
		name := b.Desc.Digest.String()
		sh(t, "ln "+shellQuote(m.path("src/app", "_layers", name))+" "+shellQuote(m.path(dst, "_layers", name)))
		status, body := r.getBlob(dst, b.Desc.Digest)
		if status != http.StatusOK || !bytes.Equal(body, b.Data) {
			t.Errorf("after ln: registry GET %s blob %s: %d, %d bytes, want 200 with the %d bytes of the blob", dst, name, status, len(body), len(b.Data))
		}
	}
	if !slices.Contains(r.catalog(), dst) {
		t.Errorf("after ln the registry's catalog %v lacks %s", r.catalog(), dst)
	}
	// The linked blobs are enough for a manifest push into the second
	// repository, which the registry then serves.
	cpManifest(t, m, dst, "v1", img.Manifest.Data)
	if s := r.getManifest(dst, "v1"); s.Status != http.StatusOK || !bytes.Equal(s.Body, img.Manifest.Data) {
		t.Errorf("registry GET %s:v1: %d, want 200 with the pushed manifest", dst, s.Status)
	}
	skopeoCopy(t, r.ref(dst, "v1"), "oci:"+t.TempDir()+":v1")
}

// listDir lists dir with ls in a child process (so a hung mount fails the
// test instead of hanging it), sorted, without . and ...
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	out := runCmd(t, "ls", "-1A", "--", dir)
	names := strings.Fields(string(out))
	slices.Sort(names)
	return names
}

// catFile reads a file with cat in a child process.
func catFile(t *testing.T, path string) []byte {
	t.Helper()
	return runCmd(t, "cat", "--", path)
}

// statSize returns a file's size as stat reports it.
func statSize(t *testing.T, path string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(string(runCmd(t, "stat", "-c", "%s", "--", path))), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runCmd runs a command under a timeout and returns its standard output;
// the test fails when it fails.
func runCmd(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// shellQuote quotes s for bash.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
