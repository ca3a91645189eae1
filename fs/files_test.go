package fs

import (
	"errors"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

func TestParseViewManifestLayers(t *testing.T) {
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	for _, tc := range []struct {
		name, mediaType, content string
		want                     []digest.Digest
	}{
		{"oci", store.MediaTypeOCIManifest,
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"digest":"` + a.String() + `"},{"digest":"` + b.String() + `"}]}`,
			[]digest.Digest{a, b}},
		{"schema2", store.MediaTypeSchema2,
			`{"schemaVersion":2,"layers":[{"digest":"` + c.String() + `"},{"digest":"` + a.String() + `"}]}`,
			[]digest.Digest{c, a}},
		// schema1 lists the newest layer first.
		{"schema1", store.MediaTypeSchema1Signed,
			`{"schemaVersion":1,"fsLayers":[{"blobSum":"` + c.String() + `"},{"blobSum":"` + b.String() + `"},{"blobSum":"` + a.String() + `"}]}`,
			[]digest.Digest{a, b, c}},
		{"media type from the content", "",
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"digest":"` + a.String() + `"}]}`,
			[]digest.Digest{a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseViewManifest([]byte(tc.content), tc.mediaType)
			if err != nil {
				t.Fatal(err)
			}
			var got []digest.Digest
			for _, l := range m.layers {
				got = append(got, l.Digest)
			}
			if m.index || !slices.Equal(got, tc.want) {
				t.Errorf("layers %v (index %v), want %v", got, m.index, tc.want)
			}
		})
	}
}

func TestParseViewManifestPlatforms(t *testing.T) {
	a, b, c, d := digest.FromString("a"), digest.FromString("b"), digest.FromString("c"), digest.FromString("d")
	content := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
		{"digest":"` + a.String() + `","platform":{"os":"linux","architecture":"amd64"}},
		{"digest":"` + b.String() + `","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
		{"digest":"` + c.String() + `","platform":{"os":"linux","architecture":"amd64"}},
		{"digest":"` + d.String() + `","platform":{"os":"unknown","architecture":"unknown"}},
		{"digest":"` + d.String() + `"},
		{"digest":"` + d.String() + `","platform":{"os":"linux","architecture":"../x"}}]}`
	m, err := parseViewManifest([]byte(content), store.MediaTypeOCIIndex)
	if err != nil {
		t.Fatal(err)
	}
	want := []platformChild{{"linux-amd64", a}, {"linux-arm64-v8", b}}
	if !m.index || !slices.Equal(m.platforms, want) {
		t.Errorf("platforms %v, want %v: the first of a platform, none without one or with a slash", m.platforms, want)
	}
}

func TestParseViewManifestRefuses(t *testing.T) {
	for _, tc := range []struct{ name, mediaType, content string }{
		{"not JSON", store.MediaTypeOCIManifest, `{`},
		{"another media type", "application/vnd.example+json", `{}`},
	} {
		_, err := parseViewManifest([]byte(tc.content), tc.mediaType)
		if !errors.Is(err, errImageUnsupported) {
			t.Errorf("%s: %v, want errImageUnsupported", tc.name, err)
		}
	}
}

func TestEncodeDev(t *testing.T) {
	// new_encode_dev: /dev/null is 1,3; a minor above 255 goes high.
	for _, tc := range []struct {
		major, minor int64
		want         uint32
	}{{1, 3, 0x103}, {7, 9, 0x709}, {8, 0x123, 0x100823}} {
		if got := encodeDev(tc.major, tc.minor); got != tc.want {
			t.Errorf("encodeDev(%d, %d) = %#x, want %#x", tc.major, tc.minor, got, tc.want)
		}
	}
}
