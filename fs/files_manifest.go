package fs

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/store"
)

// viewManifest is what the image file view needs of a stored manifest:
// the layers of an image, base first, or the platforms of a manifest list
// or OCI index.
type viewManifest struct {
	// layers are an image's layer descriptors in the order they apply.
	layers []v1.Descriptor
	// platforms are an index's children by directory name, in the
	// index's order; nil for an image.
	platforms []platformChild
	// index says the manifest is a manifest list or an OCI index.
	index bool
}

// platformChild is one child of an index, named <os>-<arch>[-<variant>].
type platformChild struct {
	name   string
	digest digest.Digest
}

// parseViewManifest reads content, a stored manifest of media type
// mediaType (as ManifestService.Get returns it). The store verified it
// when it was pushed; this only extracts. A schema1 manifest lists its
// fsLayers newest first, so they are reversed. Anything that is neither
// an image nor an index (an artifact's config-only manifest is an image
// with no layers) is an error.
func parseViewManifest(content []byte, mediaType string) (*viewManifest, error) {
	var m struct {
		MediaType string          `json:"mediaType"`
		Layers    []v1.Descriptor `json:"layers"`
		Manifests []v1.Descriptor `json:"manifests"`
		FSLayers  []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if err := json.Unmarshal(content, &m); err != nil {
		return nil, &because{why: "manifest is not JSON: " + err.Error(), kind: errImageUnsupported}
	}
	if mediaType == "" {
		mediaType = m.MediaType
	}
	switch mediaType {
	case store.MediaTypeSchema1, store.MediaTypeSchema1Signed:
		out := &viewManifest{}
		for i := len(m.FSLayers) - 1; i >= 0; i-- {
			out.layers = append(out.layers, v1.Descriptor{Digest: m.FSLayers[i].BlobSum})
		}
		return out, nil
	case store.MediaTypeSchema2, store.MediaTypeOCIManifest:
		return &viewManifest{layers: m.Layers}, nil
	case store.MediaTypeManifestList, store.MediaTypeOCIIndex:
		out := &viewManifest{index: true}
		seen := map[string]bool{}
		for _, c := range m.Manifests {
			name := platformName(c.Platform)
			if name == "" || name == "unknown-unknown" || seen[name] {
				// Only the first child of a platform shows, and none
				// without one (buildx's attestations say unknown/unknown):
				// every child is also in _files/ by its digest.
				continue
			}
			seen[name] = true
			out.platforms = append(out.platforms, platformChild{name: name, digest: c.Digest})
		}
		return out, nil
	}
	return nil, &because{why: fmt.Sprintf("manifest media type %q is neither an image nor an index", mediaType), kind: errImageUnsupported}
}

// platformName is the directory name of a platform: <os>-<arch>, and
// -<variant> when it has one ("linux-arm64-v8"). "" for a child without a
// platform, or whose fields would not make one name.
func platformName(p *v1.Platform) string {
	if p == nil || p.OS == "" || p.Architecture == "" {
		return ""
	}
	parts := []string{p.OS, p.Architecture}
	if p.Variant != "" {
		parts = append(parts, p.Variant)
	}
	name := strings.Join(parts, "-")
	if strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return ""
	}
	return name
}
