package integration

import (
	"net/http"
	"testing"
)

// TestCotenancyRegistryCache shows why a registry that shares its storage
// with regfs must run without its blob descriptor cache, which Debian's
// default /etc/docker/registry/config.yml turns on ("blobdescriptor:
// inmemory"): two registries serve one root, one with the cache and one
// without; after `rm _layers/<digest>` through the mount, the one without
// answers 404 for the blob, and the one with the cache keeps answering 200
// (and serving the bytes) from its memory.
func TestCotenancyRegistryCache(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	root := t.TempDir()
	plain := startRegistry(t, root)
	cached := startRegistryWith(t, root, registryOptions{BlobDescriptorCache: true})
	img := newTestImage(t, platformAMD64, layerSpec{60, 3000})
	l := newOCILayout(t)
	l.addImage("v1", img)
	skopeoCopy(t, "oci:"+l.Dir+":v1", plain.ref("cache/app", "v1"))
	layer := img.Layers[0].Desc.Digest
	for _, r := range []*registry{plain, cached} {
		if status, _ := r.headBlob("cache/app", layer); status != http.StatusOK {
			t.Fatalf("HEAD blob before the rm: %d", status)
		}
	}
	m := startMount(t, "filesystem", mountOpts{Root: root})
	sh(t, "rm "+shellQuote(m.path("cache/app/_layers", layer.String())))
	if status, _ := plain.headBlob("cache/app", layer); status != http.StatusNotFound {
		t.Errorf("registry without the cache: HEAD of the unlinked blob answers %d, want 404", status)
	}
	status, _ := cached.headBlob("cache/app", layer)
	getStatus, _ := cached.getBlob("cache/app", layer)
	t.Logf("registry with blobdescriptor: inmemory, after rm of the link through the mount: HEAD %d, GET %d", status, getStatus)
	if status != http.StatusOK || getStatus != http.StatusOK {
		t.Errorf("registry with the cache: HEAD %d, GET %d of the unlinked blob; the documented hazard (it keeps serving it) did not show", status, getStatus)
	}
}
