package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Digests used by the fixtures in testdata/manifests: each is the sha256 of
// its name.
var (
	fxConfig  = digest.FromString("config")
	fxLayer1  = digest.FromString("layer1")
	fxLayer2  = digest.FromString("layer2")
	fxForeign = digest.FromString("foreign")
	fxAMD64   = digest.FromString("child-amd64")
	fxARM64   = digest.FromString("child-arm64")
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "manifests", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// problemMatcher checks one expected problem.
type problemMatcher struct {
	desc  string
	match func(error) bool
}

// invalid expects exactly &ManifestInvalidError{Reason: reason}.
func invalid(reason string) problemMatcher {
	return problemMatcher{
		desc: fmt.Sprintf("*ManifestInvalidError{%q}", reason),
		match: func(err error) bool {
			var e *ManifestInvalidError
			return errors.As(err, &e) && e.Reason == reason
		},
	}
}

// invalidAny expects an *ManifestInvalidError whose reason comes from another
// package (encoding/json's message, for instance).
func invalidAny() problemMatcher {
	return problemMatcher{
		desc: "*ManifestInvalidError{any reason}",
		match: func(err error) bool {
			var e *ManifestInvalidError
			return errors.As(err, &e)
		},
	}
}

// unverified expects an *ManifestUnverifiedError, the reason being libtrust's.
func unverified() problemMatcher {
	return problemMatcher{
		desc: "*ManifestUnverifiedError",
		match: func(err error) bool {
			var e *ManifestUnverifiedError
			return errors.As(err, &e)
		},
	}
}

// unverifiedReason expects exactly &ManifestUnverifiedError{Reason: reason}.
func unverifiedReason(reason string) problemMatcher {
	return problemMatcher{
		desc: fmt.Sprintf("*ManifestUnverifiedError{%q}", reason),
		match: func(err error) bool {
			var e *ManifestUnverifiedError
			return errors.As(err, &e) && e.Reason == reason
		},
	}
}

// badDigest expects an error wrapping ErrInvalidDigest and nothing else.
func badDigest() problemMatcher {
	return problemMatcher{
		desc: "ErrInvalidDigest",
		match: func(err error) bool {
			var inv *ManifestInvalidError
			var unv *ManifestUnverifiedError
			return errors.Is(err, ErrInvalidDigest) && !errors.As(err, &inv) && !errors.As(err, &unv)
		},
	}
}

// checkProblems asserts that got holds exactly the expected problems, in
// order.
func checkProblems(t *testing.T, got []error, want ...problemMatcher) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = want[i].match(got[i])
	}
	if ok {
		return
	}
	var g, w []string
	for _, e := range got {
		g = append(g, fmt.Sprintf("%T %v", e, e))
	}
	for _, m := range want {
		w = append(w, m.desc)
	}
	t.Fatalf("problems:\n  got  %d: %s\n  want %d: %s", len(got), strings.Join(g, "\n           "), len(want), strings.Join(w, "\n           "))
}

func TestParseManifestSchema2(t *testing.T) {
	content := readFixture(t, "schema2.json")
	p, problems := parseManifest(content, "library/app", "latest")
	checkProblems(t, problems)
	if p.MediaType != MediaTypeSchema2 {
		t.Errorf("MediaType = %q, want %q", p.MediaType, MediaTypeSchema2)
	}
	if !bytes.Equal(p.Canonical, content) {
		t.Error("Canonical differs from content: a schema2 manifest is stored unchanged")
	}
	// The foreign layer is excluded, the repeated layer listed once.
	if want := []digest.Digest{fxConfig, fxLayer1, fxLayer2}; !slices.Equal(p.Blobs, want) {
		t.Errorf("Blobs = %v, want %v", p.Blobs, want)
	}
	if slices.Contains(p.Blobs, fxForeign) {
		t.Errorf("Blobs lists the foreign layer %s", fxForeign)
	}
	if p.Manifests != nil || p.Signatures != nil || p.Name != "" || p.Tag != "" {
		t.Errorf("unexpected fields for schema2: %+v", p)
	}
	if got := detectMediaType(content); got != MediaTypeSchema2 {
		t.Errorf("detectMediaType = %q", got)
	}
}

func TestParseManifestOCI(t *testing.T) {
	for _, name := range []string{"oci-manifest.json", "oci-manifest-no-mediatype.json"} {
		t.Run(name, func(t *testing.T) {
			content := readFixture(t, name)
			p, problems := parseManifest(content, "library/app", "")
			checkProblems(t, problems)
			if p.MediaType != MediaTypeOCIManifest {
				t.Errorf("MediaType = %q", p.MediaType)
			}
			if !bytes.Equal(p.Canonical, content) {
				t.Error("Canonical differs from content")
			}
			want := []digest.Digest{fxConfig, fxLayer1}
			if name == "oci-manifest.json" {
				// The nondistributable layer has urls: not in Blobs.
				want = append(want, fxLayer2)
			}
			if !slices.Equal(p.Blobs, want) {
				t.Errorf("Blobs = %v, want %v", p.Blobs, want)
			}
			if p.Manifests != nil {
				t.Errorf("Manifests = %v", p.Manifests)
			}
			if got := detectMediaType(content); got != MediaTypeOCIManifest {
				t.Errorf("detectMediaType = %q", got)
			}
		})
	}
}

func TestParseManifestIndexes(t *testing.T) {
	for _, tc := range []struct {
		fixture   string
		mediaType string
	}{
		{"manifest-list.json", MediaTypeManifestList},
		{"oci-index.json", MediaTypeOCIIndex}, // no mediaType field: told by structure
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			content := readFixture(t, tc.fixture)
			p, problems := parseManifest(content, "library/app", "multi")
			checkProblems(t, problems)
			if p.MediaType != tc.mediaType {
				t.Errorf("MediaType = %q, want %q", p.MediaType, tc.mediaType)
			}
			if !bytes.Equal(p.Canonical, content) {
				t.Error("Canonical differs from content")
			}
			if want := []digest.Digest{fxAMD64, fxARM64}; !slices.Equal(p.Manifests, want) {
				t.Errorf("Manifests = %v, want %v", p.Manifests, want)
			}
			if p.Blobs != nil {
				t.Errorf("Blobs = %v, want none", p.Blobs)
			}
			if got := detectMediaType(content); got != tc.mediaType {
				t.Errorf("detectMediaType = %q", got)
			}
		})
	}
}

func TestParseManifestSizeLimit(t *testing.T) {
	base := readFixture(t, "oci-manifest-no-mediatype.json")
	// Whitespace padding keeps the JSON valid, so only the size decides.
	atLimit := append(bytes.Clone(base), bytes.Repeat([]byte(" "), MaxManifestSize-len(base))...)
	p, problems := parseManifest(atLimit, "a", "")
	checkProblems(t, problems)
	if p == nil || len(p.Blobs) != 2 {
		t.Fatalf("manifest of exactly MaxManifestSize bytes: p = %+v", p)
	}

	over := append(atLimit, ' ')
	p, problems = parseManifest(over, "a", "")
	checkProblems(t, problems, invalid(fmt.Sprintf("manifest is %d bytes, more than the %d-byte limit", MaxManifestSize+1, MaxManifestSize)))
	if p != nil {
		t.Errorf("oversized manifest parsed anyway: %+v", p)
	}
}

func TestParseManifestProblems(t *testing.T) {
	c, l1, l2 := fxConfig.String(), fxLayer1.String(), fxLayer2.String()
	for _, tc := range []struct {
		name    string
		content string
		want    []problemMatcher
		// blobs and manifests are the references still extracted; nil
		// wantRefs means p must be nil.
		wantRefs  bool
		blobs     []digest.Digest
		manifests []digest.Digest
	}{
		{name: "empty", content: ``, want: []problemMatcher{invalidAny()}},
		{name: "truncated JSON", content: `{"schemaVersion": 2, "config": {`, want: []problemMatcher{invalidAny()}},
		{name: "trailing garbage", content: `{"schemaVersion": 2} x`, want: []problemMatcher{invalidAny()}},
		{name: "array", content: `[{"schemaVersion": 2}]`, want: []problemMatcher{invalid("manifest is not a JSON object")}},
		{name: "null", content: `null`, want: []problemMatcher{invalid("manifest is not a JSON object")}},
		{name: "string", content: `"manifest"`, want: []problemMatcher{invalid("manifest is not a JSON object")}},
		{name: "schemaVersion wrong type", content: `{"schemaVersion": "2"}`, want: []problemMatcher{invalidAny()}},
		{name: "schemaVersion missing", content: `{"mediaType": "` + MediaTypeOCIManifest + `"}`,
			want: []problemMatcher{invalid("schemaVersion missing")}},
		{name: "unknown media type",
			content: `{"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json", "config": {"digest": "` + c + `", "size": 1}}`,
			want:    []problemMatcher{invalid(`unsupported mediaType "application/vnd.example.thing+json"`)}},
		{name: "OCI with schemaVersion 3",
			content: `{"schemaVersion": 3, "mediaType": "` + MediaTypeOCIManifest + `", "config": {"digest": "` + c + `", "size": 1}}`,
			want:    []problemMatcher{invalid("unsupported schemaVersion 3 for " + MediaTypeOCIManifest + " (want 2)")}},
		{name: "schema2 with schemaVersion 1",
			content: `{"schemaVersion": 1, "mediaType": "` + MediaTypeSchema2 + `", "config": {"digest": "` + c + `", "size": 1}}`,
			want:    []problemMatcher{invalid("unsupported schemaVersion 1 for " + MediaTypeSchema2 + " (want 2)")}},
		{name: "schemaVersion 7 without mediaType", content: `{"schemaVersion": 7, "config": {}}`,
			want: []problemMatcher{invalid("unsupported schemaVersion 7")}},
		{name: "kind untold", content: `{"schemaVersion": 2}`,
			want: []problemMatcher{invalid("mediaType missing and the fields do not tell the manifest's kind")}},
		{name: "both config and manifests without mediaType",
			content: `{"schemaVersion": 2, "config": {"digest": "` + c + `"}, "manifests": []}`,
			want:    []problemMatcher{invalid("mediaType missing and the fields do not tell the manifest's kind")}},
		{name: "OCI manifest with manifests field",
			content:  `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIManifest + `", "config": {"digest": "` + c + `", "size": 1}, "layers": [], "manifests": [{"digest": "` + l1 + `"}]}`,
			want:     []problemMatcher{invalid(MediaTypeOCIManifest + " must not have a manifests field")},
			wantRefs: true, blobs: []digest.Digest{fxConfig}},
		{name: "OCI index with layers",
			content:  `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIIndex + `", "layers": [{"digest": "` + l1 + `"}], "manifests": [{"digest": "` + l2 + `", "size": 3}]}`,
			want:     []problemMatcher{invalid(MediaTypeOCIIndex + " must not have config or layers fields")},
			wantRefs: true, manifests: []digest.Digest{fxLayer2}},
		{name: "schema2 without config",
			content:  `{"schemaVersion": 2, "mediaType": "` + MediaTypeSchema2 + `", "layers": [{"digest": "` + l1 + `", "size": 3}]}`,
			want:     []problemMatcher{invalid("config missing")},
			wantRefs: true, blobs: []digest.Digest{fxLayer1}},
		{name: "config null",
			content:  `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIManifest + `", "config": null, "layers": []}`,
			want:     []problemMatcher{invalid("config missing")},
			wantRefs: true},
		{name: "invalid digests and a negative size, every one reported",
			content: `{"schemaVersion": 2, "mediaType": "` + MediaTypeSchema2 + `",
				"config": {"digest": "sha256:XYZ", "size": 3},
				"layers": [
					{"digest": "` + l1 + `", "size": -1},
					{"digest": "md5:d41d8cd98f00b204e9800998ecf8427e", "size": 3},
					{"digest": "` + strings.ToUpper(l2) + `", "size": 3},
					{"digest": "` + l2 + `", "size": 3}
				]}`,
			want:     []problemMatcher{badDigest(), invalid("layers[0]: negative size -1"), badDigest(), badDigest()},
			wantRefs: true, blobs: []digest.Digest{fxLayer2}},
		{name: "foreign layer without urls",
			content: `{"schemaVersion": 2, "mediaType": "` + MediaTypeSchema2 + `", "config": {"digest": "` + c + `", "size": 3},
				"layers": [{"mediaType": "` + mediaTypeDockerForeignLayer + `", "digest": "` + l1 + `", "size": 3}]}`,
			want:     []problemMatcher{invalid("layers[0]: foreign layer without urls")},
			wantRefs: true, blobs: []digest.Digest{fxConfig}},
		{name: "foreign layer urls not http",
			content: `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIManifest + `", "config": {"digest": "` + c + `", "size": 3},
				"layers": [{"digest": "` + l1 + `", "size": 3, "urls": ["ftp://example.com/l", "https://example.com/l#frag", "/relative", "http://example.com/ok"]}]}`,
			want: []problemMatcher{
				invalid(`layers[0]: urls[0] "ftp://example.com/l" is not an http or https URL without fragment`),
				invalid(`layers[0]: urls[1] "https://example.com/l#frag" is not an http or https URL without fragment`),
				invalid(`layers[0]: urls[2] "/relative" is not an http or https URL without fragment`),
			},
			wantRefs: true, blobs: []digest.Digest{fxConfig}},
		{name: "manifest list without manifests",
			content:  `{"schemaVersion": 2, "mediaType": "` + MediaTypeManifestList + `"}`,
			want:     []problemMatcher{invalid("manifests missing")},
			wantRefs: true},
		{name: "index child with invalid digest",
			content: `{"schemaVersion": 2, "mediaType": "` + MediaTypeManifestList + `", "manifests": [
				{"digest": "` + l1 + `", "size": 3}, {"digest": "sha256:abc", "size": 3}, {"size": 3}]}`,
			want:     []problemMatcher{badDigest(), badDigest()},
			wantRefs: true, manifests: []digest.Digest{fxLayer1}},
		{name: "OCI artifact with subject: subject is not a reference",
			content: `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIManifest + `", "artifactType": "application/vnd.example.sbom",
				"config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "` + c + `", "size": 2},
				"layers": [{"digest": "` + l1 + `", "size": 3}],
				"subject": {"mediaType": "` + MediaTypeOCIManifest + `", "digest": "` + l2 + `", "size": 9}}`,
			wantRefs: true, blobs: []digest.Digest{fxConfig, fxLayer1}},
		{name: "OCI index with invalid subject",
			content: `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIIndex + `", "manifests": [{"digest": "` + l1 + `", "size": 3}],
				"subject": {"digest": "sha256:nothex", "size": -9}}`,
			want:     []problemMatcher{badDigest(), invalid("subject: negative size -9")},
			wantRefs: true, manifests: []digest.Digest{fxLayer1}},
		{name: "wrong JSON type inside",
			content: `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIIndex + `", "manifests": {"digest": "` + l1 + `"}}`,
			want:    []problemMatcher{invalidAny()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, problems := parseManifest([]byte(tc.content), "library/app", "latest")
			checkProblems(t, problems, tc.want...)
			if !tc.wantRefs {
				if p != nil {
					t.Fatalf("p = %+v, want nil", p)
				}
				return
			}
			if p == nil {
				t.Fatal("p = nil, want the references extracted despite the problems")
			}
			if !slices.Equal(p.Blobs, tc.blobs) || !slices.Equal(p.Manifests, tc.manifests) {
				t.Errorf("Blobs = %v, Manifests = %v; want %v, %v", p.Blobs, p.Manifests, tc.blobs, tc.manifests)
			}
		})
	}
}

func TestParseManifestDigestErrorNamesField(t *testing.T) {
	content := `{"schemaVersion": 2, "mediaType": "` + MediaTypeOCIIndex + `", "manifests": [{"digest": "` + fxLayer1.String() + `"}, {"digest": "sha256:0"}]}`
	_, problems := parseManifest([]byte(content), "a", "")
	checkProblems(t, problems, badDigest())
	// The message is for people reading .regfs/errors: it says which entry.
	if msg := problems[0].Error(); !strings.Contains(msg, "manifests[1]") || !strings.Contains(msg, "sha256:0") {
		t.Errorf("message %q does not locate the bad digest", msg)
	}
}

func TestDetectMediaType(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    string
	}{
		{`{"schemaVersion": 2, "mediaType": "` + MediaTypeSchema2 + `", "config": {}}`, MediaTypeSchema2},
		{`{"schemaVersion": 2, "mediaType": "` + MediaTypeManifestList + `", "manifests": []}`, MediaTypeManifestList},
		{`{"schemaVersion": 2, "mediaType": "application/vnd.example+json"}`, "application/vnd.example+json"},
		{`{"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": [], "history": []}`, MediaTypeSchema1Signed},
		{`{"schemaVersion": 1, "mediaType": "` + MediaTypeSchema1 + `"}`, MediaTypeSchema1Signed},
		{`{"schemaVersion": 2, "config": {}, "layers": []}`, MediaTypeOCIManifest},
		{`{"schemaVersion": 2, "manifests": []}`, MediaTypeOCIIndex},
		{`{"schemaVersion": 2, "config": {}, "manifests": []}`, ""},
		{`{"schemaVersion": 2, "config": null, "manifests": []}`, MediaTypeOCIIndex},
		{`{"schemaVersion": 2}`, ""},
		{`not json`, ""},
		{``, ""},
	} {
		if got := detectMediaType([]byte(tc.content)); got != tc.want {
			t.Errorf("detectMediaType(%s) = %q, want %q", tc.content, got, tc.want)
		}
	}
}
