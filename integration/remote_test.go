package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Tests of regfs mount --registry (issue 18): the store over a running
// registry's HTTP API, Debian's docker-registry on 127.0.0.1.

// startRegistryMount mounts the registry at url with --registry; extra
// flags and env are added. stateDir "" makes a fresh one.
func startRegistryMount(t *testing.T, url, stateDir string, env []string, extra ...string) *mount {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	m := &mount{t: t, Driver: "registry", Dir: t.TempDir(), bin: regfsBin, env: env}
	m.args = append([]string{"mount", "--registry", url, "--state-dir", stateDir, "--dir-cache-time", "1s"}, extra...)
	m.args = append(m.args, m.Dir)
	m.start()
	t.Cleanup(m.stop)
	return m
}

// pushFixtures pushes every manifest kind with skopeo, as
// testRegistryWritesRegfsReads does, and returns the repositories.
func pushFixtures(t *testing.T, r *registry) []string {
	t.Helper()
	amd := newTestImage(t, platformAMD64, layerSpec{1, 4096}, layerSpec{2, 9 << 20}, layerSpec{3, 10})
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
	return r.catalog()
}

// TestRemoteReads: fixtures skopeo pushed into a registry read through
// --registry byte for byte: repositories (nested too), tags, revisions
// (index children included), manifests of every kind, layers.
func TestRemoteReads(t *testing.T) {
	requireTools(t, registryBin, "skopeo", "sha256sum")
	r := startRegistry(t, t.TempDir())
	repos := pushFixtures(t, r)
	m := startRegistryMount(t, "http://"+r.Addr, "", nil)

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
	// A ranged read in the middle of the 9 MiB layer (several 4 MiB
	// blocks, each one ranged GET) gives the registry's bytes.
	for _, name := range listDir(t, m.path("interop/oci", "_layers")) {
		_, want := r.getBlob("interop/oci", digest.Digest(name))
		if len(want) < 8<<20 {
			continue
		}
		f, err := os.Open(m.path("interop/oci", "_layers", name))
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5<<20)
		n, err := f.ReadAt(got, 3<<20)
		f.Close()
		if err != nil || !bytes.Equal(got[:n], want[3<<20:8<<20]) {
			t.Errorf("pread of 5 MiB at 3 MiB of %s: %d bytes, %v; not the registry's", name, n, err)
		}
	}
	// A missing name is ENOENT, not EIO.
	for _, p := range []string{
		m.path("interop/oci", "_manifests", "nosuchtag"),
		m.path("interop/oci", "_layers", digest.FromString("missing").String()),
		m.path("interop/oci", "_manifests", digest.FromString("missing").String()),
		m.path("nosuchrepo"),
	} {
		if _, err := os.Stat(p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
	}
}

var _ = filepath.Join
var _ = v1.MediaTypeImageManifest
