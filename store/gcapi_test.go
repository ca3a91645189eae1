package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestManifestReferences(t *testing.T) {
	a, b, c, s := digest.FromString("a"), digest.FromString("b"), digest.FromString("c"), digest.FromString("s")
	for _, tc := range []struct {
		name      string
		content   string
		blobs     []digest.Digest
		manifests []digest.Digest
		subject   digest.Digest
	}{
		{"schema2", string(schema2(a, b, c)), []digest.Digest{a, b, c}, nil, ""},
		{"oci with subject and a foreign layer", fmt.Sprintf(
			`{"schemaVersion":2,"mediaType":%q,"config":{"digest":%q},"layers":[{"digest":%q,"urls":["https://example.com/x"]},{"digest":%q}],"subject":{"digest":%q}}`,
			MediaTypeOCIManifest, a, b, b, s), []digest.Digest{a, b}, nil, s},
		{"index", string(ociIndex(a, b)), nil, []digest.Digest{a, b}, ""},
		{"schema1", fmt.Sprintf(`{"schemaVersion":1,"fsLayers":[{"blobSum":%q},{"blobSum":%q},{"blobSum":%q}],"signatures":[{}]}`, a, b, a),
			[]digest.Digest{a, b}, nil, ""},
		{"invalid digests skipped", fmt.Sprintf(`{"config":{"digest":"sha256:nothex"},"layers":[{"digest":"md5:00"},{"digest":%q}]}`, c),
			[]digest.Digest{c}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ManifestReferences([]byte(tc.content))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Blobs, tc.blobs) || !slices.Equal(r.Manifests, tc.manifests) || r.Subject != tc.subject {
				t.Fatalf("got %+v", r)
			}
		})
	}
	for _, bad := range []string{"", "[]", "not json", `{"layers":5}`} {
		if _, err := ManifestReferences([]byte(bad)); !errors.Is(err, ErrNotManifest) {
			t.Errorf("%q: %v, want ErrNotManifest", bad, err)
		}
	}
}
