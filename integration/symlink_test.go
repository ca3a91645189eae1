package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// outsideSecret is the content of the file outside the storage root that
// planted links point to; no read through the mount may return it.
const outsideSecret = "root:x:0:0:outside-the-storage-root:/root:/bin/sh"

// TestSymlinksPlantedInStorage plants symbolic links in a filesystem root,
// as anyone who can write the storage could: a blob's data to a
// passwd-like file outside the root, a repository directory, a _layers
// entry and a tags directory to directories outside it. Reads through the
// mount get EIO, never the outside content; uploads, ln, mkdir, rm and mv
// through the mount create and change nothing outside the root; the
// daemon logs the link; the rest of the storage keeps working.
func TestSymlinksPlantedInStorage(t *testing.T) {
	m := startMount(t, "filesystem", mountOpts{})
	pushImage(t, m, "app", "v1", 1)
	pushImage(t, m, "tagged", "v1", 1)
	layer := pushLayer(t, m, "app", []byte("the layer whose data becomes a link"))
	other := pushLayer(t, m, "other", []byte("a layer of another repository"))
	m.stop() // plant on a quiet root; the restart has cold caches

	v2 := filepath.Join(m.Root, "docker/registry/v2")
	outside := t.TempDir()
	for p, content := range map[string]string{
		"passwd": outsideSecret,
		"repo/_layers/sha256/" + hexOf(other) + "/link":  other,
		"repo/_manifests/tags/v1/current/link":           other,
		"layerdir/link":                                  other,
		"tags/v1/current/link":                           other,
		"tags/v1/index/sha256/" + hexOf(other) + "/link": other,
	} {
		full := filepath.Join(outside, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hx := hexOf(layer)
	blobData := filepath.Join(v2, "blobs/sha256", hx[:2], hx, "data")
	plant := func(link, target string) {
		t.Helper()
		if err := os.RemoveAll(link); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	plant(blobData, filepath.Join(outside, "passwd"))
	plant(filepath.Join(v2, "repositories/evil"), filepath.Join(outside, "repo"))
	plant(filepath.Join(v2, "repositories/app/_layers/sha256", hexOf(other)), filepath.Join(outside, "layerdir"))
	plant(filepath.Join(v2, "repositories/tagged/_manifests/tags"), filepath.Join(outside, "tags"))
	before := treeHash(t, outside)
	m.restart()

	// Reads: EIO, and never the outside bytes.
	for _, c := range []struct{ what, cmd string }{
		{"cat of a layer whose data is a link", fmt.Sprintf("cat %q", m.path("app/_layers", layer))},
		{"stat of a layer whose data is a link", fmt.Sprintf("stat %q", m.path("app/_layers", layer))},
		{"cat of a layer entry that is a link", fmt.Sprintf("cat %q", m.path("app/_layers", other))},
		{"ls of a repository that is a link", fmt.Sprintf("ls -l %q", m.path("evil"))},
		{"cat in a repository that is a link", fmt.Sprintf("cat %q", m.path("evil/_manifests/v1"))},
		{"ls of a tags directory that is a link", fmt.Sprintf("ls -l %q", m.path("tagged/_manifests"))},
		{"cat of a tag below a link", fmt.Sprintf("cat %q", m.path("tagged/_manifests/v1"))},
	} {
		out, err := shErr(t, c.cmd)
		if err == nil {
			t.Errorf("%s succeeded:\n%s", c.what, out)
		} else if !strings.Contains(out, "Input/output error") {
			t.Errorf("%s: %v, want EIO:\n%s", c.what, err, out)
		}
		if strings.Contains(out, "outside-the-storage-root") {
			t.Errorf("%s printed what is outside the root:\n%s", c.what, out)
		}
	}

	// Writes through the links: none may land outside the root.
	src := writeFile(t, []byte("an upload aimed outside the root"))
	for _, c := range []struct{ what, cmd string }{
		{"upload into a linked repository", fmt.Sprintf("cp %q %q", src, m.path("evil/_uploads", sha([]byte("an upload aimed outside the root"))))},
		{"ln into a linked repository", fmt.Sprintf("ln %q %q", m.path("other/_layers", other), m.path("evil/_layers", other))},
		{"mkdir in a linked repository", fmt.Sprintf("mkdir %q", m.path("evil/sub"))},
		{"rm in a linked repository", fmt.Sprintf("rm %q", m.path("evil/_layers", other))},
		{"rm of a linked tag", fmt.Sprintf("rm %q", m.path("tagged/_manifests/v1"))},
		{"mv of a linked tag", fmt.Sprintf("mv %q %q", m.path("tagged/_manifests/v1"), m.path("tagged/_manifests/v2"))},
		{"ln onto a linked layer entry", fmt.Sprintf("ln %q %q", m.path("other/_layers", other), m.path("app/_layers", other))},
		{"upload of the layer whose data is a link", fmt.Sprintf("cp %q %q", writeFile(t, []byte("the layer whose data becomes a link")), m.path("app/_uploads", layer))},
	} {
		out, err := shErr(t, c.cmd)
		t.Logf("%s: %v %s", c.what, err, strings.TrimSpace(out))
	}
	if diff := treeDiff(before, treeHash(t, outside)); diff != "" {
		t.Errorf("the tree outside the root changed:\n%s", diff)
	}
	for _, p := range []string{blobData, filepath.Join(v2, "repositories/evil")} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is no longer the planted link: %v", p, err)
		}
	}

	// The rest of the storage works: a new layer uploads and reads back.
	fresh := []byte("a layer pushed beside the links")
	d := pushLayer(t, m, "app", fresh)
	if got := readFile(t, m.path("app/_layers", d)); string(got) != string(fresh) {
		t.Errorf("a new layer reads back %q", got)
	}

	m.stop()
	log := m.logText()
	if !strings.Contains(log, "symbolic link") || !strings.Contains(log, "/blobs/sha256/"+hx[:2]+"/"+hx+"/data") {
		t.Errorf("the daemon did not log the link at the blob's data:\n%s", log)
	}
}

// hexOf returns the hex part of a sha256 digest string.
func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }

// TestMountCleansLeftovers: what a crashed writer left in the filesystem
// driver's trash and staging directories is removed when the storage is
// mounted again, in the background, and logged.
func TestMountCleansLeftovers(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{".#regfs-trash/dead.1/tags/t/current/link", ".#regfs-tmp/dead.2"} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("left by a crash"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := startMount(t, "filesystem", mountOpts{Root: root})
	// Background work: wait for it, with a watchdog far beyond its need.
	for start := time.Now(); ; {
		if time.Since(start) > time.Minute {
			t.Fatalf("leftovers still there a minute after the mount\n%s", m.logText())
		}
		_, err1 := os.Lstat(filepath.Join(root, ".#regfs-trash"))
		_, err2 := os.Lstat(filepath.Join(root, ".#regfs-tmp"))
		if os.IsNotExist(err1) && os.IsNotExist(err2) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.stop()
	if log := m.logText(); !strings.Contains(log, "removed what a crash left") || !strings.Contains(log, "entries=2") {
		t.Errorf("the daemon did not log the cleaning:\n%s", log)
	}
}
