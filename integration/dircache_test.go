package integration

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestOtherWriterListedWithinDirCacheTime runs the registry beside a mount
// with --dir-cache-time 2s. What the registry (and the driver underneath)
// adds or removes shows in the mount's listings within that time, though
// the listings were cached before: a new repository, a new tag, a deleted
// tag. A name looked up directly is found at once.
func TestOtherWriterListedWithinDirCacheTime(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	const dirCacheTime = 2 * time.Second
	root := t.TempDir()
	r := startRegistry(t, root)
	l := newOCILayout(t)
	l.addImage("img", newTestImage(t, platformAMD64, layerSpec{40, 2000}))
	src := "oci:" + l.Dir + ":img"
	skopeoCopy(t, "--format", "oci", src, r.ref("app", "v1"))
	skopeoCopy(t, "--format", "oci", src, r.ref("app", "old"))
	m := startMount(t, "filesystem", mountOpts{Root: root, Extra: []string{"--dir-cache-time", dirCacheTime.String()}})

	if got := listDir(t, m.Dir); !slices.Equal(got, []string{".regfs", "app"}) {
		t.Fatalf("mount root lists %v", got)
	}
	manifests := m.path("app", "_manifests")
	rev := r.mustGetManifest("app", "v1").Digest.String()
	if got := listDir(t, manifests); !slices.Equal(got, []string{"old", rev, "v1"}) {
		t.Fatalf("%s lists %v", manifests, got)
	}

	// The other writer: a push to a new repository, a new tag, and a tag
	// deleted in storage (what a registry's tag delete removes).
	skopeoCopy(t, "--format", "oci", src, r.ref("newrepo", "v1"))
	skopeoCopy(t, "--format", "oci", src, r.ref("app", "v2"))
	if err := os.RemoveAll(filepath.Join(root, "docker/registry/v2/repositories/app/_manifests/tags/old")); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for _, p := range []string{m.path("newrepo", "_manifests", "v1"), m.path("app", "_manifests", "v2")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("stat %s right after the push: %v", p, err)
		}
	}

	deadline := changed.Add(dirCacheTime + 3*time.Second) // slack for the expiry's batching and a slow machine
	for {
		top, tags := listDir(t, m.Dir), listDir(t, manifests)
		if slices.Equal(top, []string{".regfs", "app", "newrepo"}) && slices.Equal(tags, []string{rev, "v1", "v2"}) {
			t.Logf("the other writer's changes listed after %v", time.Since(changed).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the other writer's changes (--dir-cache-time %v): root lists %v, %s lists %v",
				time.Since(changed).Round(time.Millisecond), dirCacheTime, top, manifests, tags)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
