package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"
)

// FuzzParseManifest feeds arbitrary bytes to parseManifest, which reads what
// anyone with write access to the mount writes. It must never panic, must
// report problems only as the typed errors callers match on, and whatever it
// accepts must be storable and servable: non-empty canonical bytes, valid
// and distinct references, a media type detectMediaType agrees with, and
// schema1 signatures that verify once reassembled.
func FuzzParseManifest(f *testing.F) {
	const repo = "library/app"
	files, err := filepath.Glob(filepath.Join("testdata", "manifests", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "latest")
	}
	key, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		f.Fatal(err)
	}
	payload := schema1Payload(f, repo, "v1", []digest.Digest{fxLayer1, fxLayer2, fxLayer1}, 3)
	f.Add(signPayload(f, payload, key), "v1")
	f.Add(signPayload(f, payload, key), "")
	f.Add(payload, "v1")
	f.Add(handSigned(f, key, payload[:len(payload)-1], payload, -3, "}"), "v1")
	f.Add([]byte(`{"schemaVersion": 2, "manifests": [{"digest": "sha256:0"}]}`), "")
	f.Add([]byte(`{"schemaVersion": 2, "config": null, "layers": [{"urls": ["http://x/#"]}]}`), "")
	f.Add([]byte(`null`), "")

	known := []string{MediaTypeSchema1Signed, MediaTypeSchema2, MediaTypeManifestList, MediaTypeOCIManifest, MediaTypeOCIIndex}
	f.Fuzz(func(t *testing.T, content []byte, tag string) {
		p, problems := parseManifest(content, repo, tag)
		for _, e := range problems {
			var inv *ManifestInvalidError
			var unv *ManifestUnverifiedError
			if !errors.As(e, &inv) && !errors.As(e, &unv) && !errors.Is(e, ErrInvalidDigest) {
				t.Errorf("untyped problem %T: %v", e, e)
			}
		}
		if p == nil {
			if len(problems) == 0 {
				t.Fatal("no manifest and no problem")
			}
			return
		}
		if !slices.Contains(known, p.MediaType) {
			t.Errorf("MediaType %q", p.MediaType)
		}
		for _, refs := range [][]digest.Digest{p.Blobs, p.Manifests} {
			seen := map[digest.Digest]bool{}
			for _, d := range refs {
				if err := d.Validate(); err != nil {
					t.Errorf("reference %q: %v", d, err)
				}
				if seen[d] {
					t.Errorf("reference %s listed twice", d)
				}
				seen[d] = true
			}
		}
		if len(problems) > 0 {
			return
		}

		if len(p.Canonical) == 0 {
			t.Fatal("accepted with empty Canonical")
		}
		if got := detectMediaType(p.Canonical); got != p.MediaType {
			t.Errorf("detectMediaType(Canonical) = %q, parsed as %q", got, p.MediaType)
		}
		if p.MediaType != MediaTypeSchema1Signed {
			if !bytes.Equal(p.Canonical, content) || p.Signatures != nil {
				t.Error("non-schema1 manifest not stored unchanged")
			}
			return
		}
		if p.Name != repo || (tag != "" && p.Tag != tag) || len(p.Blobs) == 0 {
			t.Errorf("accepted schema1 name %q tag %q blobs %v", p.Name, p.Tag, p.Blobs)
		}
		if p.Signatures == nil {
			return
		}
		served, err := signSchema1(p.Canonical, p.Signatures, nil)
		if err != nil {
			t.Fatalf("kept signatures do not reassemble: %v", err)
		}
		again, problems := parseManifest(served, repo, "")
		if len(problems) > 0 || !bytes.Equal(again.Canonical, p.Canonical) {
			t.Fatalf("served manifest does not parse back to the stored one: %v", problems)
		}
	})
}
