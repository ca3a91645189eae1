package store

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"
	"github.com/regfs/regfs/internal/testsupport"
)

// schema1Doc is a docker schema1 manifest as docker 1.x built it.
type schema1Doc struct {
	SchemaVersion int    `json:"schemaVersion"`
	Name          string `json:"name"`
	Tag           string `json:"tag"`
	Architecture  string `json:"architecture"`
	FSLayers      []struct {
		BlobSum digest.Digest `json:"blobSum"`
	} `json:"fsLayers"`
	History []struct {
		V1Compatibility string `json:"v1Compatibility"`
	} `json:"history"`
}

// schema1Payload builds an unsigned schema1 manifest, indented with three
// spaces as docker does, with one fsLayer per blobSum and history entries.
func schema1Payload(t testing.TB, name, tag string, blobSums []digest.Digest, history int) []byte {
	t.Helper()
	m := schema1Doc{SchemaVersion: 1, Name: name, Tag: tag, Architecture: "amd64"}
	for _, b := range blobSums {
		m.FSLayers = append(m.FSLayers, struct {
			BlobSum digest.Digest `json:"blobSum"`
		}{b})
	}
	for i := range history {
		m.History = append(m.History, struct {
			V1Compatibility string `json:"v1Compatibility"`
		}{fmt.Sprintf(`{"id":"layer-%d","created":"2015-01-02T03:04:05Z"}`, i)})
	}
	b, err := json.MarshalIndent(m, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signPayload signs payload with each key the way docker 1.x did.
func signPayload(t testing.TB, payload []byte, keys ...libtrust.PrivateKey) []byte {
	t.Helper()
	return testsupport.SignSchema1(t, payload, keys...)
}

func newKey(t testing.TB) libtrust.PrivateKey {
	t.Helper()
	k, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// handSigned assembles a pretty JWS by hand, with a protected header of our
// choosing: visible is what precedes the signatures in the document, and
// libtrust rebuilds the signed payload as visible[:formatLength]+formatTail.
// The signature is over payload, so it verifies when the rebuilt payload
// equals it.
func handSigned(t testing.TB, key libtrust.PrivateKey, visible, payload []byte, formatLength int, formatTail string) []byte {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	header, err := json.Marshal(map[string]any{
		"formatLength": formatLength,
		"formatTail":   b64([]byte(formatTail)),
		"time":         "2015-01-02T03:04:05Z",
	})
	if err != nil {
		t.Fatal(err)
	}
	protected := b64(header)
	sig, alg, err := key.Sign(strings.NewReader(protected+"."+b64(payload)), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := json.Marshal(key.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(bytes.Clone(visible), `,"signatures":[{"header":{"jwk":%s,"alg":%q},"signature":%q,"protected":%q}]}`,
		jwk, alg, b64(sig), protected)
}

// verifiedKeys parses a served schema1 manifest as a client would and
// returns the IDs of the keys that signed it and the signed payload.
func verifiedKeys(t testing.TB, signed []byte) ([]string, []byte) {
	t.Helper()
	js, err := libtrust.ParsePrettySignature(signed, "signatures")
	if err != nil {
		t.Fatalf("served manifest does not parse as a JWS: %v", err)
	}
	keys, err := js.Verify()
	if err != nil {
		t.Fatalf("served manifest does not verify: %v", err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.KeyID())
	}
	payload, err := js.Payload()
	if err != nil {
		t.Fatal(err)
	}
	return ids, payload
}

func TestSchema1RoundTrip(t *testing.T) {
	key := newKey(t)
	blobs := []digest.Digest{fxLayer2, fxLayer1, fxLayer2}
	payload := schema1Payload(t, "library/app", "v1", blobs, 3)
	content := signPayload(t, payload, key)

	p, problems := parseManifest(content, "library/app", "v1")
	checkProblems(t, problems)
	if p.MediaType != MediaTypeSchema1Signed {
		t.Errorf("MediaType = %q", p.MediaType)
	}
	// Stored as distribution stores it: the payload, signatures stripped.
	if !bytes.Equal(p.Canonical, payload) {
		t.Fatalf("Canonical is not the signed payload:\n%s", p.Canonical)
	}
	if p.Name != "library/app" || p.Tag != "v1" {
		t.Errorf("Name, Tag = %q, %q", p.Name, p.Tag)
	}
	if want := []digest.Digest{fxLayer2, fxLayer1}; !slices.Equal(p.Blobs, want) {
		t.Errorf("Blobs = %v, want %v (deduplicated, order kept)", p.Blobs, want)
	}
	if p.Manifests != nil {
		t.Errorf("Manifests = %v", p.Manifests)
	}
	if len(p.Signatures) != 1 {
		t.Fatalf("%d signatures, want 1", len(p.Signatures))
	}
	if got := detectMediaType(p.Canonical); got != MediaTypeSchema1Signed {
		t.Errorf("detectMediaType(Canonical) = %q", got)
	}

	served, err := signSchema1(p.Canonical, p.Signatures, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, got := verifiedKeys(t, served)
	if !slices.Equal(ids, []string{key.KeyID()}) {
		t.Errorf("signed by %v, want %v", ids, key.KeyID())
	}
	if !bytes.Equal(got, p.Canonical) {
		t.Error("served payload differs from the stored revision")
	}
	// What docker pushed comes back byte for byte.
	if !bytes.Equal(served, content) {
		t.Errorf("served manifest differs from the pushed one:\n%s\nwant\n%s", served, content)
	}
	// And it can be pushed again (e.g. copied to another repository's tag).
	p2, problems := parseManifest(served, "library/app", "")
	checkProblems(t, problems)
	if !bytes.Equal(p2.Canonical, p.Canonical) || !slices.EqualFunc(p2.Signatures, p.Signatures, bytes.Equal) {
		t.Error("re-parsing the served manifest changed what would be stored")
	}
}

func TestSchema1TwoSignatures(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	payload := schema1Payload(t, "team/app", "latest", []digest.Digest{fxLayer1}, 1)
	p, problems := parseManifest(signPayload(t, payload, k1, k2), "team/app", "latest")
	checkProblems(t, problems)
	if len(p.Signatures) != 2 {
		t.Fatalf("%d signatures, want 2", len(p.Signatures))
	}
	served, err := signSchema1(p.Canonical, p.Signatures, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := verifiedKeys(t, served)
	want := []string{k1.KeyID(), k2.KeyID()}
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("signed by %v, want %v", ids, want)
	}
}

func TestSchema1PushByDigestSkipsTagCheck(t *testing.T) {
	content := signPayload(t, schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1}, 1), newKey(t))
	_, problems := parseManifest(content, "library/app", "")
	checkProblems(t, problems)
	_, problems = parseManifest(content, "library/app", "v2")
	checkProblems(t, problems, invalid(`tag "v1" does not match tag "v2"`))
}

func TestSchema1Problems(t *testing.T) {
	key := newKey(t)
	good := func(t *testing.T) []byte {
		return signPayload(t, schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1, fxLayer2}, 2), key)
	}
	// tamperSignature changes one character of the (only) signature value.
	tamperSignature := func(t *testing.T, content []byte) []byte {
		t.Helper()
		const field = `"signature": "`
		i := bytes.Index(content, []byte(field))
		if i < 0 {
			t.Fatalf("no signature in %s", content)
		}
		out := bytes.Clone(content)
		j := i + len(field) + 5
		if out[j] == 'A' {
			out[j] = 'B'
		} else {
			out[j] = 'A'
		}
		return out
	}

	for _, tc := range []struct {
		name    string
		content func(t *testing.T) []byte
		tag     string
		want    []problemMatcher
		// blobs are the references still extracted; nil p expected when
		// noRefs.
		blobs  []digest.Digest
		noRefs bool
	}{
		{
			name:    "tampered signature",
			content: func(t *testing.T) []byte { return tamperSignature(t, good(t)) },
			want:    []problemMatcher{unverified()},
			blobs:   []digest.Digest{fxLayer1, fxLayer2},
		},
		{
			name: "payload changed after signing",
			content: func(t *testing.T) []byte {
				return bytes.Replace(good(t), []byte(`layer-1`), []byte(`layer-X`), 1)
			},
			want:  []problemMatcher{unverified()},
			blobs: []digest.Digest{fxLayer1, fxLayer2},
		},
		{
			name: "bad signature, wrong name and mismatched lengths all reported",
			content: func(t *testing.T) []byte {
				return tamperSignature(t, signPayload(t, schema1Payload(t, "library/other", "v1", []digest.Digest{fxLayer1, fxLayer2}, 3), key))
			},
			want: []problemMatcher{
				invalid(`name "library/other" does not match repository "library/app"`),
				invalid("fsLayers has 2 entries but history has 3"),
				unverified(),
			},
			blobs: []digest.Digest{fxLayer1, fxLayer2},
		},
		{
			name: "wrong name and tag",
			content: func(t *testing.T) []byte {
				return signPayload(t, schema1Payload(t, "library/other", "v9", []digest.Digest{fxLayer1}, 1), key)
			},
			want: []problemMatcher{
				invalid(`name "library/other" does not match repository "library/app"`),
				invalid(`tag "v9" does not match tag "v1"`),
			},
			blobs: []digest.Digest{fxLayer1},
		},
		{
			name: "no layers",
			content: func(t *testing.T) []byte {
				return signPayload(t, schema1Payload(t, "library/app", "v1", nil, 0), key)
			},
			want: []problemMatcher{invalid("fsLayers is empty")},
		},
		{
			name: "invalid blobSums",
			content: func(t *testing.T) []byte {
				return signPayload(t, schema1Payload(t, "library/app", "v1", []digest.Digest{"sha256:1234", fxLayer1, digest.Digest("tarsum.dev+sha256:" + fxLayer1.Encoded())}, 3), key)
			},
			want:  []problemMatcher{badDigest(), badDigest()},
			blobs: []digest.Digest{fxLayer1},
		},
		{
			name: "unsigned",
			content: func(t *testing.T) []byte {
				return schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1}, 1)
			},
			want:  []problemMatcher{unverified()},
			blobs: []digest.Digest{fxLayer1},
		},
		{
			name: "unsigned with the v1+json media type",
			content: func(t *testing.T) []byte {
				return []byte(`{"schemaVersion": 1, "mediaType": "` + MediaTypeSchema1 + `", "name": "library/app", "tag": "v1",
					"fsLayers": [{"blobSum": "` + fxLayer1.String() + `"}], "history": [{"v1Compatibility": "{}"}]}`)
			},
			want:  []problemMatcher{unverified()},
			blobs: []digest.Digest{fxLayer1},
		},
		{
			name: "empty signatures array",
			content: func(t *testing.T) []byte {
				return []byte(`{"schemaVersion": 1, "name": "library/app", "tag": "v1",
					"fsLayers": [{"blobSum": "` + fxLayer1.String() + `"}], "history": [{"v1Compatibility": "{}"}], "signatures": []}`)
			},
			want:  []problemMatcher{unverifiedReason("manifest has no signatures")},
			blobs: []digest.Digest{fxLayer1},
		},
		{
			name: "schema1 with config field",
			content: func(t *testing.T) []byte {
				payload := []byte(`{"schemaVersion": 1, "name": "library/app", "tag": "v1", "config": {},
					"fsLayers": [{"blobSum": "` + fxLayer1.String() + `"}], "history": [{"v1Compatibility": "{}"}]}`)
				return signPayload(t, payload, key)
			},
			want:  []problemMatcher{invalid("schema1 manifest must not have config, layers or manifests fields")},
			blobs: []digest.Digest{fxLayer1},
		},
		{
			// libtrust slices the document with the header's formatLength
			// without checking its sign: this must not panic.
			name: "negative formatLength",
			content: func(t *testing.T) []byte {
				payload := schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1}, 1)
				return handSigned(t, key, payload[:len(payload)-1], payload, -3, "}")
			},
			want:  []problemMatcher{unverified()},
			blobs: []digest.Digest{fxLayer1},
		},
		{
			// What is signed (and stored) is visible[:formatLength] +
			// formatTail, which may differ from the visible document:
			// fields are read from the signed payload.
			name: "signed payload is another kind of manifest",
			content: func(t *testing.T) []byte {
				visible := schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1}, 1)
				visible = visible[:len(visible)-1]
				tail := `,"schemaVersion": 2}`
				payload := append(bytes.Clone(visible), tail...)
				return handSigned(t, key, visible, payload, len(visible), tail)
			},
			want:   []problemMatcher{invalid("signed payload is not a schema1 manifest")},
			noRefs: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := tc.tag
			if tag == "" {
				tag = "v1"
			}
			p, problems := parseManifest(tc.content(t), "library/app", tag)
			checkProblems(t, problems, tc.want...)
			if tc.noRefs {
				if p != nil {
					t.Fatalf("p = %+v, want nil", p)
				}
				return
			}
			if p == nil {
				t.Fatal("p = nil, want references despite the problems")
			}
			if p.MediaType != MediaTypeSchema1Signed || !slices.Equal(p.Blobs, tc.blobs) {
				t.Errorf("MediaType %q, Blobs %v; want %q, %v", p.MediaType, p.Blobs, MediaTypeSchema1Signed, tc.blobs)
			}
		})
	}
}

// TestSignSchema1Resign covers the registry 2.3+ case: the revision was
// stored without signatures, and serving signs it with the store's key.
func TestSignSchema1Resign(t *testing.T) {
	payload := schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1}, 1)
	key := newKey(t)
	served, err := signSchema1(payload, nil, key)
	if err != nil {
		t.Fatal(err)
	}
	ids, got := verifiedKeys(t, served)
	if !slices.Equal(ids, []string{key.KeyID()}) {
		t.Errorf("signed by %v, want %v", ids, key.KeyID())
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("payload changed by signing:\n%s", got)
	}
	p, problems := parseManifest(served, "library/app", "v1")
	checkProblems(t, problems)
	if !bytes.Equal(p.Canonical, payload) {
		t.Error("re-signed manifest would be stored under another digest")
	}

	if _, err := signSchema1(payload, nil, nil); err == nil {
		t.Error("signSchema1 without signatures or key succeeded")
	}
}

// TestSignSchema1BadStoredSignatures: signatures that do not verify over the
// payload are not served; the key signs instead, or it is an error.
func TestSignSchema1BadStoredSignatures(t *testing.T) {
	signer := newKey(t)
	other := schema1Payload(t, "library/app", "other", []digest.Digest{fxLayer1}, 1)
	p, problems := parseManifest(signPayload(t, other, signer), "library/app", "other")
	checkProblems(t, problems)
	payload := schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1}, 1)

	if _, err := signSchema1(payload, p.Signatures, nil); err == nil {
		t.Fatal("signatures over another payload served without complaint")
	}
	if _, err := signSchema1(payload, [][]byte{[]byte("not json")}, nil); err == nil {
		t.Fatal("garbage signatures served without complaint")
	}
	key := newKey(t)
	served, err := signSchema1(payload, p.Signatures, key)
	if err != nil {
		t.Fatal(err)
	}
	ids, got := verifiedKeys(t, served)
	if !slices.Equal(ids, []string{key.KeyID()}) || !bytes.Equal(got, payload) {
		t.Errorf("fallback signing: keys %v, payload equal %v", ids, bytes.Equal(got, payload))
	}
}

// TestSchema1SignaturesNotSurvivingReassembly: a valid JWS whose protected
// formatLength reaches into trailing whitespace verifies as pushed, but not
// once reassembled from the payload (libtrust recomputes formatLength). Such
// signatures are not kept; the manifest is still accepted, as the registry
// accepts it, and is served re-signed.
func TestSchema1SignaturesNotSurvivingReassembly(t *testing.T) {
	key := newKey(t)
	payload := schema1Payload(t, "library/app", "v1", []digest.Digest{fxLayer1}, 1)
	payload = append(payload[:len(payload)-1], " }"...) // "... ] }"
	fl := len(payload) - 1                              // includes the space
	content := handSigned(t, key, payload[:fl], payload, fl, "}")

	// Precondition: the stored signature really does not survive.
	js, err := libtrust.ParsePrettySignature(content, "signatures")
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := js.Signatures()
	if err != nil {
		t.Fatal(err)
	}
	if reassembled, err := assembleSchema1(payload, sigs); err == nil {
		if checkSchema1(reassembled, payload) == nil {
			t.Fatal("test premise broken: the signature survives reassembly")
		}
	}

	p, problems := parseManifest(content, "library/app", "v1")
	checkProblems(t, problems)
	if !bytes.Equal(p.Canonical, payload) {
		t.Fatalf("Canonical = %q", p.Canonical)
	}
	if p.Signatures != nil {
		t.Errorf("kept %d signatures that cannot be served", len(p.Signatures))
	}
	served, err := signSchema1(p.Canonical, p.Signatures, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, got := verifiedKeys(t, served); !bytes.Equal(got, payload) {
		t.Error("served payload differs")
	}
}
