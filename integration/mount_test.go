package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// scenario is one named user story run against the real binary on every driver.
type scenario struct {
	name string
	run  func(t *testing.T, m *mount)
}

// TestScenarios runs every DESIGN section 3 row on both drivers.
func TestScenarios(t *testing.T) {
	scenarios := []scenario{
		{"ListAndStat", testListAndStat},
		{"ReadAtOffsets", testReadAtOffsets},
		{"UploadCommitsOnClose", testUploadCommits},
		{"UploadMismatchKeepsUploadForAppend", testUploadMismatch},
		{"UploadWriteNotAtEndIsRefused", testUploadWriteNotAtEnd},
		{"UploadRmCancels", testUploadRm},
		{"UploadNameMustBeDigest", testUploadBadName},
		{"ManifestPushByTag", testManifestPushByTag},
		{"ManifestPushByDigest", testManifestPushByDigest},
		{"ManifestMissingLayersRejected", testManifestRejected},
		{"LnRevisionTags", testLnTags},
		{"RmTagUntags", testRmTag},
		{"RmRevisionDeletesItsTags", testRmRevision},
		{"LnLayerAcrossRepositories", testLnLayer},
		{"RmLayerUnlinks", testRmLayer},
		{"MkdirRmdir", testMkdirRmdir},
		{"InvalidNames", testInvalidNames},
		{"ControlFiles", testControlFiles},
	}
	for _, d := range drivers {
		t.Run(d, func(t *testing.T) {
			for _, s := range scenarios {
				t.Run(s.name, func(t *testing.T) {
					m := startMount(t, d, mountOpts{})
					s.run(t, m)
				})
			}
		})
	}
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushLayer copies content into repo's _uploads with cp and returns its digest.
func pushLayer(t *testing.T, m *mount, repo string, content []byte) string {
	t.Helper()
	d := sha(content)
	src := writeFile(t, content)
	sh(t, fmt.Sprintf("mkdir -p %q && cp %q %q", m.path(repo), src, m.path(repo, "_uploads", d)))
	return d
}

// imageManifest returns an OCI image manifest over config and layers.
func imageManifest(t *testing.T, config []byte, layers ...[]byte) []byte {
	t.Helper()
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	mf := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, "application/vnd.oci.image.manifest.v1+json",
		desc{"application/vnd.oci.image.config.v1+json", sha(config), len(config)}, []desc{}}
	for _, l := range layers {
		mf.Layers = append(mf.Layers, desc{"application/vnd.oci.image.layer.v1.tar+gzip", sha(l), len(l)})
	}
	b, err := json.MarshalIndent(mf, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushImage pushes a config, layers and a manifest tagged tag; it returns the
// manifest bytes.
func pushImage(t *testing.T, m *mount, repo, tag string, nLayers int) []byte {
	t.Helper()
	config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"tag":%q}`, tag))
	pushLayer(t, m, repo, config)
	var layers [][]byte
	for i := 0; i < nLayers; i++ {
		l := randomBytes(t, 1000+i*70000)
		pushLayer(t, m, repo, l)
		layers = append(layers, l)
	}
	mf := imageManifest(t, config, layers...)
	src := writeFile(t, mf)
	sh(t, fmt.Sprintf("cp %q %q", src, m.path(repo, "_manifests", tag)))
	return mf
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lines(s string) []string {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func testListAndStat(t *testing.T, m *mount) {
	mf := pushImage(t, m, "library/ubuntu", "22.04", 2)
	pushImage(t, m, "team/app/api", "v1", 1)
	got := sh(t, fmt.Sprintf("cd %q && ls", m.Dir))
	if !strings.Contains(got, "library") || !strings.Contains(got, "team") {
		t.Fatalf("ls of the mount: %q", got)
	}
	got = sh(t, fmt.Sprintf("cd %q && find . -path '*/_manifests/*' | sort", m.Dir))
	for _, want := range []string{"./library/ubuntu/_manifests/22.04", "./team/app/api/_manifests/v1", "./library/ubuntu/_manifests/" + sha(mf)} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("find does not list %s:\n%s", want, got)
		}
	}
	// stat sizes are exact.
	size := strings.TrimSpace(sh(t, fmt.Sprintf("stat -c %%s %q", m.path("library/ubuntu/_manifests/22.04"))))
	if size != strconv.Itoa(len(mf)) {
		t.Errorf("stat size of tag = %s, want %d", size, len(mf))
	}
	layers := lines(sh(t, fmt.Sprintf("ls %q", m.path("library/ubuntu/_layers"))))
	if len(layers) != 4-1 { // config + 2 layers
		t.Errorf("_layers lists %d entries, want 3: %v", len(layers), layers)
	}
	for _, l := range layers {
		sum := strings.Fields(sh(t, fmt.Sprintf("sha256sum %q", m.path("library/ubuntu/_layers", l))))[0]
		if "sha256:"+sum != l {
			t.Errorf("layer %s hashes to %s", l, sum)
		}
	}
	// A tag reads as the manifest it points to, identical to its revision.
	if !bytes.Equal(readFile(t, m.path("library/ubuntu/_manifests/22.04")), mf) ||
		!bytes.Equal(readFile(t, m.path("library/ubuntu/_manifests", sha(mf))), mf) {
		t.Error("tag or revision does not read back as the pushed manifest")
	}
}

func testReadAtOffsets(t *testing.T, m *mount) {
	content := randomBytes(t, 5<<20+123)
	d := pushLayer(t, m, "r", content)
	p := m.path("r/_layers", d)
	for _, off := range []int{0, 1, 4096, 1 << 20, 3<<20 + 77, len(content) - 10} {
		out := sh(t, fmt.Sprintf("dd if=%q bs=1 skip=%d count=10 status=none | od -An -tx1 | tr -d ' \\n'", p, off))
		end := min(off+10, len(content))
		want := fmt.Sprintf("%x", content[off:end])
		if out != want {
			t.Errorf("dd at %d: %s, want %s", off, out, want)
		}
	}
	// Block-sized dd from an offset, then a whole cat.
	out := sh(t, fmt.Sprintf("dd if=%q bs=65536 skip=7 status=none | sha256sum", p))
	if want := sha(content[7*65536:])[7:]; !strings.HasPrefix(out, want) {
		t.Errorf("dd skip=7: %s, want %s", out, want)
	}
	if got := readFile(t, p); !bytes.Equal(got, content) {
		t.Error("cat of the layer differs from what was pushed")
	}
}

func testUploadCommits(t *testing.T, m *mount) {
	content := randomBytes(t, 3<<20)
	d := pushLayer(t, m, "repo", content)
	if _, err := os.Stat(m.path("repo/_uploads", d)); !os.IsNotExist(err) {
		t.Errorf("committed upload still in _uploads: %v", err)
	}
	if ls := sh(t, "ls "+m.path("repo/_uploads")); strings.TrimSpace(ls) != "" {
		t.Errorf("_uploads not empty after commit: %q", ls)
	}
	if got := readFile(t, m.path("repo/_layers", d)); !bytes.Equal(got, content) {
		t.Error("committed layer reads differently")
	}
	if m.Root != "" {
		hex := d[7:]
		blob := filepath.Join(m.Root, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
		if got := readFile(t, blob); !bytes.Equal(got, content) {
			t.Error("blob data in storage differs")
		}
		link := readFile(t, filepath.Join(m.Root, "docker/registry/v2/repositories/repo/_layers/sha256", hex, "link"))
		if string(link) != d {
			t.Errorf("layer link = %q, want %q", link, d)
		}
	}
}

func testUploadMismatch(t *testing.T, m *mount) {
	content := randomBytes(t, 1<<20)
	d := sha(content)
	up := m.path("r/_uploads", d)
	first := writeFile(t, content[:300000])
	sh(t, "mkdir -p "+m.path("r"))
	out, err := shErr(t, fmt.Sprintf("cp %q %q", first, up))
	if err == nil || !strings.Contains(out, "Bad message") {
		t.Fatalf("cp of a partial layer: err=%v out=%q, want close to fail with EBADMSG", err, out)
	}
	if size := strings.TrimSpace(sh(t, "stat -c %s "+up)); size != "300000" {
		t.Fatalf("upload size after mismatch = %s, want 300000", size)
	}
	if _, err := os.Stat(m.path("r/_layers", d)); !os.IsNotExist(err) {
		t.Fatalf("layer visible after a mismatch: %v", err)
	}
	errs := sh(t, "cat "+m.path(".regfs/errors"))
	if !strings.Contains(errs, d) {
		t.Errorf(".regfs/errors does not name the expected digest:\n%s", errs)
	}
	// Append the middle with >>, the rest with dd conv=notrunc seek=.
	mid := writeFile(t, content[300000:700000])
	sh(t, fmt.Sprintf("cat %q >> %q || true", mid, up))
	rest := writeFile(t, content[700000:])
	sh(t, fmt.Sprintf("dd if=%q of=%q bs=100000 seek=7 conv=notrunc status=none", rest, up))
	if got := readFile(t, m.path("r/_layers", d)); !bytes.Equal(got, content) {
		t.Error("resumed layer reads differently")
	}
}

func testUploadWriteNotAtEnd(t *testing.T, m *mount) {
	content := randomBytes(t, 200000)
	d := sha(content)
	up := m.path("r/_uploads", d)
	sh(t, "mkdir -p "+m.path("r"))
	_, _ = shErr(t, fmt.Sprintf("head -c 100000 %q > %q", writeFile(t, content), up))
	out, err := shErr(t, fmt.Sprintf("dd if=%q of=%q bs=1000 seek=50 count=1 conv=notrunc status=none", writeFile(t, content[50000:51000]), up))
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Fatalf("write in the middle: err=%v out=%q, want EINVAL", err, out)
	}
	if size := strings.TrimSpace(sh(t, "stat -c %s "+up)); size != "100000" {
		t.Errorf("upload size = %s after a refused write, want 100000", size)
	}
}

func testUploadRm(t *testing.T, m *mount) {
	// More than an S3 part, so that an S3 upload has sent one.
	content := randomBytes(t, 12<<20)
	d := sha(content)
	up := m.path("r/_uploads", d)
	sh(t, "mkdir -p "+m.path("r"))
	_, _ = shErr(t, fmt.Sprintf("head -c %d %q > %q", 11<<20, writeFile(t, content), up))
	if m.Driver == "s3" {
		if keys := pendingUploads(t, m); len(keys) != 1 {
			t.Errorf("pending multipart uploads before rm: %q, want the staged one", keys)
		}
	}
	sh(t, "rm "+up)
	if ls := strings.TrimSpace(sh(t, "ls "+m.path("r/_uploads"))); ls != "" {
		t.Errorf("_uploads after rm: %q", ls)
	}
	if m.Driver == "s3" {
		if keys := pendingUploads(t, m); len(keys) != 0 {
			t.Errorf("pending multipart uploads after rm: %q", keys)
		}
	}
	if m.Root != "" {
		if out := sh(t, fmt.Sprintf("find %q -path '*/_uploads/*' -type f", m.Root)); strings.TrimSpace(out) != "" {
			t.Errorf("upload files left in storage after rm:\n%s", out)
		}
	}
}

func testUploadBadName(t *testing.T, m *mount) {
	sh(t, "mkdir -p "+m.path("r"))
	for _, name := range []string{"layer.tgz", "sha256:abc", "sha512:" + strings.Repeat("a", 128), "sha256:" + strings.Repeat("A", 64)} {
		out, err := shErr(t, fmt.Sprintf("echo hi > %q", m.path("r/_uploads", name)))
		if err == nil || !strings.Contains(out, "Invalid argument") {
			t.Errorf("create _uploads/%s: err=%v out=%q, want EINVAL", name, err, out)
		}
	}
}

func testManifestPushByTag(t *testing.T, m *mount) {
	mf := pushImage(t, m, "app", "latest", 2)
	revs := sh(t, "ls "+m.path("app/_manifests"))
	if !strings.Contains(revs, sha(mf)) || !strings.Contains(revs, "latest") {
		t.Fatalf("_manifests lists %q", revs)
	}
	if m.Root != "" {
		hex := sha(mf)[7:]
		base := filepath.Join(m.Root, "docker/registry/v2/repositories/app/_manifests")
		for _, p := range []string{"revisions/sha256/" + hex + "/link", "tags/latest/current/link", "tags/latest/index/sha256/" + hex + "/link"} {
			if got := string(readFile(t, filepath.Join(base, p))); got != sha(mf) {
				t.Errorf("%s = %q", p, got)
			}
		}
	}
	// Re-tagging by writing another manifest to the same tag moves it.
	mf2 := pushImage(t, m, "app", "latest", 1)
	if got := readFile(t, m.path("app/_manifests/latest")); !bytes.Equal(got, mf2) {
		t.Error("tag does not read the newly pushed manifest")
	}
	if _, err := os.Stat(m.path("app/_manifests", sha(mf))); err != nil {
		t.Errorf("old revision gone after re-tag: %v", err)
	}
}

func testManifestPushByDigest(t *testing.T, m *mount) {
	config := []byte(`{"architecture":"arm64","os":"linux"}`)
	pushLayer(t, m, "app", config)
	mf := imageManifest(t, config)
	sh(t, fmt.Sprintf("cp %q %q", writeFile(t, mf), m.path("app/_manifests", sha(mf))))
	if got := readFile(t, m.path("app/_manifests", sha(mf))); !bytes.Equal(got, mf) {
		t.Error("revision pushed by digest reads differently")
	}
	if tags := strings.Fields(sh(t, "ls "+m.path("app/_manifests"))); len(tags) != 1 {
		t.Errorf("push by digest must not tag: %v", tags)
	}
	// Content that does not hash to the name is refused.
	other := imageManifest(t, []byte(`{}`))
	_ = other
	wrong := "sha256:" + strings.Repeat("ab", 32)
	out, err := shErr(t, fmt.Sprintf("cp %q %q", writeFile(t, mf), m.path("app/_manifests", wrong)))
	if err == nil || !strings.Contains(out, "Bad message") {
		t.Errorf("push under a wrong digest: err=%v out=%q, want EBADMSG", err, out)
	}
}

func testManifestRejected(t *testing.T, m *mount) {
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	pushLayer(t, m, "app", config)
	missing := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	mf := imageManifest(t, config, missing...)
	var before string
	if m.Root != "" {
		before = sh(t, fmt.Sprintf("cd %q && find . -type f | sort | xargs sha256sum", m.Root))
	}
	out, err := shErr(t, fmt.Sprintf("cp %q %q", writeFile(t, mf), m.path("app/_manifests/v1")))
	if err == nil || !strings.Contains(out, "Bad message") {
		t.Fatalf("push with missing layers: err=%v out=%q, want EBADMSG", err, out)
	}
	errs := sh(t, "cat "+m.path(".regfs/errors"))
	for _, l := range missing {
		if !strings.Contains(errs, sha(l)) {
			t.Errorf(".regfs/errors does not name missing layer %s:\n%s", sha(l), errs)
		}
	}
	if _, err := os.Stat(m.path("app/_manifests/v1")); !os.IsNotExist(err) {
		t.Errorf("rejected tag visible: %v", err)
	}
	if m.Root != "" {
		if after := sh(t, fmt.Sprintf("cd %q && find . -type f | sort | xargs sha256sum", m.Root)); after != before {
			t.Errorf("storage changed by a rejected push:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
	// Malformed JSON is rejected too.
	out, err = shErr(t, fmt.Sprintf("echo '{not json' > %q", m.path("app/_manifests/bad")))
	if err == nil || !strings.Contains(out, "Bad message") {
		t.Errorf("malformed manifest: err=%v out=%q", err, out)
	}
}

func testLnTags(t *testing.T, m *mount) {
	mf := pushImage(t, m, "app", "v1", 1)
	sh(t, fmt.Sprintf("ln %q %q", m.path("app/_manifests", sha(mf)), m.path("app/_manifests/stable")))
	if got := readFile(t, m.path("app/_manifests/stable")); !bytes.Equal(got, mf) {
		t.Error("ln-created tag reads differently")
	}
	// Tag and revision share an inode.
	ino := sh(t, fmt.Sprintf("stat -c %%i %q %q", m.path("app/_manifests/stable"), m.path("app/_manifests", sha(mf))))
	if f := strings.Fields(ino); len(f) != 2 || f[0] != f[1] {
		t.Errorf("tag and revision inodes differ: %v", f)
	}
}

func testRmTag(t *testing.T, m *mount) {
	mf := pushImage(t, m, "app", "v1", 1)
	sh(t, "rm "+m.path("app/_manifests/v1"))
	if _, err := os.Stat(m.path("app/_manifests/v1")); !os.IsNotExist(err) {
		t.Errorf("tag still there after rm: %v", err)
	}
	if got := readFile(t, m.path("app/_manifests", sha(mf))); !bytes.Equal(got, mf) {
		t.Error("revision gone after untag")
	}
}

func testRmRevision(t *testing.T, m *mount) {
	mf := pushImage(t, m, "app", "v1", 1)
	sh(t, fmt.Sprintf("ln %q %q", m.path("app/_manifests", sha(mf)), m.path("app/_manifests/v2")))
	keep := pushImage(t, m, "app", "other", 1)
	sh(t, "rm "+m.path("app/_manifests", sha(mf)))
	ls := sh(t, "ls "+m.path("app/_manifests"))
	for _, gone := range []string{"v1", "v2", sha(mf)} {
		if strings.Contains(ls, gone) {
			t.Errorf("%s still listed after rm of its revision:\n%s", gone, ls)
		}
	}
	if !strings.Contains(ls, "other") || !strings.Contains(ls, sha(keep)) {
		t.Errorf("unrelated tag or revision gone:\n%s", ls)
	}
}

func testLnLayer(t *testing.T, m *mount) {
	content := randomBytes(t, 400000)
	d := pushLayer(t, m, "a", content)
	sh(t, "mkdir -p "+m.path("b"))
	sh(t, fmt.Sprintf("ln %q %q", m.path("a/_layers", d), m.path("b/_layers")+"/"))
	if got := readFile(t, m.path("b/_layers", d)); !bytes.Equal(got, content) {
		t.Error("cross-mounted layer reads differently")
	}
	if m.Root != "" {
		n := strings.TrimSpace(sh(t, fmt.Sprintf("find %q -path '*/blobs/*' -name data | wc -l", m.Root)))
		if n != "1" {
			t.Errorf("%s blob files after a cross-repository ln, want 1 (no copy)", n)
		}
	}
	// ln of something not stored is refused.
	if _, err := shErr(t, fmt.Sprintf("ln %q %q", writeFile(t, content), m.path("b/_layers/x"))); err == nil {
		t.Error("ln from outside the mount succeeded")
	}
}

func testRmLayer(t *testing.T, m *mount) {
	content := randomBytes(t, 1000)
	d := pushLayer(t, m, "a", content)
	sh(t, "rm "+m.path("a/_layers", d))
	if _, err := os.Stat(m.path("a/_layers", d)); !os.IsNotExist(err) {
		t.Errorf("layer still there after rm: %v", err)
	}
	if m.Root != "" {
		hex := d[7:]
		if _, err := os.Stat(filepath.Join(m.Root, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")); err != nil {
			t.Errorf("blob data removed by unlink (must stay until gc): %v", err)
		}
	}
}

func testMkdirRmdir(t *testing.T, m *mount) {
	sh(t, "mkdir -p "+m.path("team/app"))
	for _, sub := range []string{"_layers", "_manifests", "_uploads"} {
		if fi, err := os.Stat(m.path("team/app", sub)); err != nil || !fi.IsDir() {
			t.Errorf("new directory lacks %s: %v", sub, err)
		}
	}
	if m.Root != "" {
		if _, err := os.Stat(filepath.Join(m.Root, "docker/registry/v2/repositories/team/_layers")); !os.IsNotExist(err) {
			t.Errorf("mkdir turned the namespace into a repository: %v", err)
		}
	}
	sh(t, "rmdir "+m.path("team/app"))
	if _, err := os.Stat(m.path("team/app")); !os.IsNotExist(err) {
		t.Errorf("rmdir left the directory: %v", err)
	}
	pushLayer(t, m, "full", []byte("x"))
	out, err := shErr(t, "rmdir "+m.path("full"))
	if err == nil || !strings.Contains(out, "Directory not empty") {
		t.Errorf("rmdir of a non-empty repository: err=%v out=%q", err, out)
	}
}

func testInvalidNames(t *testing.T, m *mount) {
	for _, name := range []string{"Upper", "a..b", "-lead", "trail-", "_reserved", strings.Repeat("a", 256)} {
		out, err := shErr(t, "mkdir "+m.path(name))
		if err == nil {
			t.Errorf("mkdir %q succeeded", name)
		} else if !strings.Contains(out, "Invalid argument") && !strings.Contains(out, "File name too long") {
			t.Errorf("mkdir %q: %q, want EINVAL", name, out)
		}
	}
}

func testControlFiles(t *testing.T, m *mount) {
	pushImage(t, m, "app", "v1", 1)
	sh(t, "cat "+m.path("app/_manifests/v1")+" > /dev/null")
	var stats map[string]any
	if err := json.Unmarshal(readFile(t, m.path(".regfs/stats")), &stats); err != nil {
		t.Fatalf(".regfs/stats is not JSON: %v", err)
	}
	if len(stats) == 0 {
		t.Error(".regfs/stats is empty")
	}
}

// TestReadOnly checks that every write gets EROFS and storage is unchanged.
func TestReadOnly(t *testing.T) {
	root := t.TempDir()
	rw := startMount(t, "filesystem", mountOpts{Root: root})
	mf := pushImage(t, rw, "app", "v1", 1)
	rw.stop()
	m := startMount(t, "filesystem", mountOpts{Root: root, Extra: []string{"--read-only"}})
	before := sh(t, fmt.Sprintf("cd %q && find . | sort && find . -type f | sort | xargs sha256sum", root))
	layer := strings.Fields(sh(t, "ls "+m.path("app/_layers")))[0]
	src := writeFile(t, []byte("hello"))
	for _, cmd := range []string{
		"mkdir " + m.path("new"),
		"rmdir " + m.path("app"),
		fmt.Sprintf("cp %q %q", src, m.path("app/_uploads", sha([]byte("hello")))),
		fmt.Sprintf("cp %q %q", src, m.path("app/_manifests/v2")),
		"rm " + m.path("app/_manifests/v1"),
		"rm " + m.path("app/_manifests", sha(mf)),
		"rm " + m.path("app/_layers", layer),
		fmt.Sprintf("ln %q %q", m.path("app/_manifests", sha(mf)), m.path("app/_manifests/v3")),
	} {
		out, err := shErr(t, cmd)
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("%s: err=%v out=%q, want EROFS", cmd, err, out)
		}
	}
	if got := readFile(t, m.path("app/_manifests/v1")); !bytes.Equal(got, mf) {
		t.Error("read-only mount does not read the manifest")
	}
	after := sh(t, fmt.Sprintf("cd %q && find . | sort && find . -type f | sort | xargs sha256sum", root))
	if before != after {
		t.Errorf("storage changed under --read-only")
	}
}

// TestCrashResume kills the daemon while an upload is being appended to,
// mounts the same storage again and finishes the upload from the size the
// mount then reports, which is what storage holds.
//
// What survives a crash depends on the driver. The filesystem driver writes
// straight into the data file, so the bytes written before the kill are
// kept (more than the first part closed below). On S3 an object's bytes
// exist in the bucket only once the writer is closed (an S3 multipart
// upload is invisible until completed), so the upload resumes from exactly
// the size at its last close. Either way, appending the rest commits a
// layer with the right digest, the hash state of the last close or a
// re-hash carrying over what the crash kept.
//
// On S3 the upload's bytes are staged in a multipart upload at the blob's
// key (see store/uploads.go): after the crash that upload is pending there
// and the blob is not, and once the rest is appended the commit completes
// it, leaving no multipart upload behind.
func TestCrashResume(t *testing.T) {
	for _, d := range []string{"filesystem", "s3"} {
		t.Run(d, func(t *testing.T) { testCrashResume(t, d) })
	}
}

func testCrashResume(t *testing.T, driver string) {
	m := startMount(t, driver, mountOpts{})
	content := randomBytes(t, 192<<20)
	src := writeFile(t, content)
	d := sha(content)
	up := m.path("big/_uploads", d)
	sh(t, "mkdir -p "+m.path("big"))
	// A first part, closed (its digest does not match yet, so it stays an
	// upload): durable on every driver.
	const first = 6<<20 + 123
	_, _ = shErr(t, fmt.Sprintf("head -c %d %q > %q", first, src, up))
	uploadSize := func() int {
		out := strings.TrimSpace(sh(t, "stat -c %s "+up))
		n, err := strconv.Atoi(out)
		if err != nil {
			t.Fatalf("stat size of the upload: %q", out)
		}
		return n
	}
	if n := uploadSize(); n != first {
		t.Fatalf("upload size after the first part = %d, want %d", n, first)
	}
	// cat appends in the background, reading a FIFO that a throttled writer
	// feeds, so the kill lands mid-way through the copy.
	fifo := filepath.Join(t.TempDir(), "layer.fifo")
	sh(t, "mkfifo "+fifo)
	sh(t, fmt.Sprintf("(tail -c +%d %q | (while dd bs=1M count=1 iflag=fullblock status=none; do sleep 0.02; done) > %q) >/dev/null 2>&1 &", first+1, src, fifo))
	sh(t, fmt.Sprintf("cat %q >> %q 2>/dev/null &", fifo, up))
	// The size through the mount is what the daemon has taken so far.
	partial := 0
	for i := 0; i < 1000 && partial < first+16<<20; i++ {
		partial = uploadSize()
		sh(t, "sleep 0.02")
	}
	if partial < first+16<<20 {
		t.Fatalf("upload did not get going: %d bytes", partial)
	}
	m.kill()
	sh(t, "sleep 0.2") // let the writer notice the dead mount and exit
	m.restart()
	size := uploadSize()
	switch {
	case size >= len(content):
		t.Fatalf("upload size after the crash = %d, the whole layer is %d", size, len(content))
	case driver == "s3" && size != first:
		t.Fatalf("upload size after the crash = %d, want %d (the last close)", size, first)
	case driver == "filesystem" && size <= first:
		t.Fatalf("upload size after the crash = %d, want more than the %d closed before", size, first)
	}
	t.Logf("%s: %d bytes taken before the kill, resuming at %d", driver, partial, size)
	if driver == "s3" {
		blobKey := path.Join(m.Prefix, "docker/registry/v2/blobs/sha256", d[7:9], d[7:], "data")
		if _, err := m.S3.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: &m.Bucket, Key: &blobKey}); err == nil {
			t.Fatal("the blob is at its key before the upload was verified")
		}
		if keys := pendingUploads(t, m); len(keys) != 1 || keys[0] != blobKey {
			t.Fatalf("pending multipart uploads after the crash: %q, want one at %s", keys, blobKey)
		}
	}
	sh(t, fmt.Sprintf("tail -c +%d %q >> %q", size+1, src, up))
	sum := strings.Fields(sh(t, "sha256sum "+m.path("big/_layers", d)))[0]
	if "sha256:"+sum != d {
		t.Fatalf("resumed layer hashes to %s, want %s", sum, d)
	}
	if driver == "s3" {
		if keys := pendingUploads(t, m); len(keys) != 0 {
			t.Errorf("pending multipart uploads after the commit: %q", keys)
		}
	}
}

// pendingUploads returns the keys of the multipart uploads in progress in
// an s3 mount's bucket.
func pendingUploads(t *testing.T, m *mount) []string {
	t.Helper()
	out, err := m.S3.Client().ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: &m.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, *u.Key)
	}
	return keys
}

// TestRegistryTestdataMounts mounts a tree written by hand in the registry's
// exact format (store/testdata/registry) and reads it through the mount.
func TestRegistryTestdataMounts(t *testing.T) {
	root := t.TempDir()
	sh(t, fmt.Sprintf("cp -a ../store/testdata/registry/. %q", root))
	before := sh(t, fmt.Sprintf("cd %q && find . -type f | sort | xargs sha256sum", root))
	m := startMount(t, "filesystem", mountOpts{Root: root, Extra: []string{"--read-only"}})
	v2 := filepath.Join(root, "docker/registry/v2")
	for _, repo := range []string{"hello", "library/ubuntu"} {
		// Every linked layer reads back and hashes to its name.
		links := lines(sh(t, fmt.Sprintf("cd %q && ls", filepath.Join(v2, "repositories", repo, "_layers/sha256"))))
		listed := lines(sh(t, "ls "+m.path(repo, "_layers")))
		if len(listed) != len(links) || len(links) == 0 {
			t.Errorf("%s: mount lists layers %v, storage links %v", repo, listed, links)
		}
		for _, hex := range links {
			sum := strings.Fields(sh(t, "sha256sum "+m.path(repo, "_layers", "sha256:"+hex)))[0]
			if sum != hex {
				t.Errorf("%s: layer sha256:%s hashes to %s", repo, hex, sum)
			}
		}
		// The tag reads the blob its current link names.
		cur := strings.TrimSpace(string(readFile(t, filepath.Join(v2, "repositories", repo, "_manifests/tags/latest/current/link"))))
		blob := readFile(t, filepath.Join(v2, "blobs/sha256", cur[7:9], cur[7:], "data"))
		if got := readFile(t, m.path(repo, "_manifests/latest")); !bytes.Equal(got, blob) {
			t.Errorf("%s: tag latest reads differently from blob %s", repo, cur)
		}
		if got := readFile(t, m.path(repo, "_manifests", cur)); !bytes.Equal(got, blob) {
			t.Errorf("%s: revision %s reads differently", repo, cur)
		}
	}
	// The registry's unfinished upload is listed with its size.
	data := filepath.Join(v2, "repositories/hello/_uploads/0b7e6a9c-3f1d-4c2e-9a55-6d3c1f2e8b40/data")
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	size := strings.TrimSpace(sh(t, "stat -c %s "+m.path("hello/_uploads/0b7e6a9c-3f1d-4c2e-9a55-6d3c1f2e8b40")))
	if size != strconv.FormatInt(fi.Size(), 10) {
		t.Errorf("registry upload size = %s, want %d", size, fi.Size())
	}
	if got := sh(t, fmt.Sprintf("cd %q && ls && ls library", m.Dir)); got != "hello\nlibrary\n_layers\n_manifests\n_uploads\nubuntu\n" {
		t.Errorf("top-level listing: %q", got)
	}
	m.stop()
	if after := sh(t, fmt.Sprintf("cd %q && find . -type f | sort | xargs sha256sum", root)); after != before {
		t.Error("reading the tree changed storage")
	}
}
