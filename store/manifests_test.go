package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/internal/testsupport"
)

// schema2 returns a docker schema2 manifest referencing config and layers
// (sizes are not checked against storage, as the registry does not).
func schema2(config digest.Digest, layers ...digest.Digest) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":%q},"layers":[`,
		MediaTypeSchema2, config)
	for i, l := range layers {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1,"digest":%q}`, l)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

func ociIndex(children ...digest.Digest) []byte {
	var parts []string
	for _, c := range children {
		parts = append(parts, fmt.Sprintf(`{"mediaType":%q,"size":1,"digest":%q,"platform":{"architecture":"amd64","os":"linux"}}`, MediaTypeOCIManifest, c))
	}
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, MediaTypeOCIIndex, strings.Join(parts, ",")))
}

// setup returns a store with repository "r" holding a config and two layers.
func setup(t *testing.T) (driver.StorageDriver, Store, Repository, digest.Digest, []digest.Digest) {
	t.Helper()
	d := inmemory.New()
	s := newStore(t, d)
	r := repo(t, s, "r")
	cfg := pushBlob(t, r, []byte(`{"architecture":"amd64","os":"linux"}`))
	l1 := pushBlob(t, r, []byte("layer one"))
	l2 := pushBlob(t, r, []byte("layer two"))
	return d, s, r, cfg, []digest.Digest{l1, l2}
}

// verificationErrs returns the problems of an *ManifestVerificationError.
func verificationErrs(t *testing.T, err error) []error {
	t.Helper()
	var mv *ManifestVerificationError
	if !errors.As(err, &mv) {
		t.Fatalf("error %v (%T) is not an *ManifestVerificationError", err, err)
	}
	return mv.Errs
}

func TestManifestPutMissingLayersNamed(t *testing.T) {
	ctx := context.Background()
	d, _, r, cfg, layers := setup(t)
	missing := []digest.Digest{digest.FromString("m1"), digest.FromString("m2"), digest.FromString("m3")}
	content := schema2(cfg, layers[0], missing[0], layers[1], missing[1], missing[2])
	before := snapshot(t, d)
	_, err := r.Manifests().Put(ctx, content, "v1", "")
	errs := verificationErrs(t, err)
	var named []digest.Digest
	for _, e := range errs {
		var bu *ManifestBlobUnknownError
		if !errors.As(e, &bu) {
			t.Fatalf("unexpected problem %v", e)
		}
		named = append(named, bu.Digest)
	}
	if !slices.Equal(named, missing) {
		t.Fatalf("missing blobs named %v, want %v", named, missing)
	}
	if !errors.Is(err, ErrBlobUnknown) {
		t.Fatal("errors.Is(err, ErrBlobUnknown) is false")
	}
	if diff := diffSnapshots(before, snapshot(t, d)); diff != "" {
		t.Fatalf("rejected put changed storage:\n%s", diff)
	}
}

// TestManifestPutRejections: each kind of problem is reported, and every
// rejected put leaves the driver's tree exactly as it was.
func TestManifestPutRejections(t *testing.T) {
	ctx := context.Background()
	d, s, r, cfg, layers := setup(t)
	good := schema2(cfg, layers...)
	goodDigest := digest.FromBytes(good)
	// A blob stored and linked elsewhere only, and one linked here whose
	// data is gone.
	foreign := pushBlob(t, repo(t, s, "other"), []byte("elsewhere"))
	gone := pushBlob(t, r, []byte("gone"))
	if err := d.Delete(ctx, mustPath(blobDataPathSpec{digest: gone})); err != nil {
		t.Fatal(err)
	}
	unknownChild := digest.FromString("no such manifest")

	type check func(t *testing.T, err error)
	isA := func(target any) check {
		return func(t *testing.T, err error) {
			for _, e := range verificationErrs(t, err) {
				if errors.As(e, target) {
					return
				}
			}
			t.Fatalf("no %T in %v", target, err)
		}
	}
	cases := []struct {
		name    string
		content []byte
		tag     string
		want    digest.Digest
		check   check
	}{
		{"malformed JSON", []byte(`{"schemaVersion":2,`), "t", "", isA(new(*ManifestInvalidError))},
		{"unknown media type", []byte(`{"schemaVersion":2,"mediaType":"application/x-nonsense","config":{}}`), "t", "", isA(new(*ManifestInvalidError))},
		{"oversized", append(append([]byte(nil), good[:len(good)-1]...), append(bytes.Repeat([]byte(" "), MaxManifestSize), '}')...), "t", "", isA(new(*ManifestInvalidError))},
		{"digest mismatch", good, "t", digest.FromString("other"), func(t *testing.T, err error) {
			var mm *DigestMismatchError
			if !errors.As(err, &mm) || mm.Actual != goodDigest || mm.Expected != digest.FromString("other") {
				t.Fatalf("want *DigestMismatchError for %s, got %v", goodDigest, err)
			}
		}},
		{"blob linked only in another repository", schema2(cfg, foreign), "t", "", isA(new(*ManifestBlobUnknownError))},
		{"linked blob with data missing", schema2(cfg, gone), "t", "", isA(new(*ManifestBlobUnknownError))},
		{"index child unknown", ociIndex(unknownChild), "t", "", func(t *testing.T, err error) {
			var cu *ManifestChildUnknownError
			if !errors.As(err, &cu) || cu.Digest != unknownChild || !errors.Is(err, ErrManifestUnknown) {
				t.Fatalf("want *ManifestChildUnknownError for %s, got %v", unknownChild, err)
			}
		}},
		{"unsigned schema1", []byte(fmt.Sprintf(`{"schemaVersion":1,"name":"r","tag":"t","fsLayers":[{"blobSum":%q}],"history":[{"v1Compatibility":"{}"}]}`, layers[0])), "t", "", isA(new(*ManifestUnverifiedError))},
		{"several problems at once", schema2(digest.FromString("no config"), layers[0], foreign), "t", goodDigest, func(t *testing.T, err error) {
			errs := verificationErrs(t, err)
			var blobs, mismatches int
			for _, e := range errs {
				var bu *ManifestBlobUnknownError
				var mm *DigestMismatchError
				switch {
				case errors.As(e, &bu):
					blobs++
				case errors.As(e, &mm):
					mismatches++
				}
			}
			if blobs != 2 || mismatches != 1 {
				t.Fatalf("want 2 unknown blobs and a mismatch, got %v", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, d)
			dgst, err := r.Manifests().Put(ctx, c.content, c.tag, c.want)
			if err == nil {
				t.Fatalf("accepted as %s", dgst)
			}
			c.check(t, err)
			if diff := diffSnapshots(before, snapshot(t, d)); diff != "" {
				t.Fatalf("rejected put changed storage:\n%s", diff)
			}
		})
	}
	// The good one goes in, by digest too.
	if dgst, err := r.Manifests().Put(ctx, good, "", goodDigest); err != nil || dgst != goodDigest {
		t.Fatalf("Put = %s, %v", dgst, err)
	}
	if _, err := r.Manifests().Put(ctx, good, "bad tag!", ""); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Put with a bad tag: %v", err)
	}
}

func TestManifestIndex(t *testing.T) {
	ctx := context.Background()
	_, _, r, cfg, layers := setup(t)
	a, err := r.Manifests().Put(ctx, schema2(cfg, layers[0]), "", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Manifests().Put(ctx, schema2(cfg, layers[1]), "", "")
	if err != nil {
		t.Fatal(err)
	}
	idx := ociIndex(a, b)
	dgst, err := r.Manifests().Put(ctx, idx, "multi", "")
	if err != nil {
		t.Fatal(err)
	}
	got, mt, err := r.Manifests().Get(ctx, dgst)
	if err != nil || !bytes.Equal(got, idx) || mt != MediaTypeOCIIndex {
		t.Fatalf("Get = %q %q %v", got, mt, err)
	}
	revs, err := r.Manifests().List(ctx)
	want := []digest.Digest{a, b, dgst}
	slices.Sort(want)
	if err != nil || !slices.Equal(revs, want) {
		t.Fatalf("List = %v, %v", revs, err)
	}
}

// signSchema1Test builds and signs a schema1 manifest the way docker 1.x
// clients did.
func signSchema1Test(t *testing.T, key libtrust.PrivateKey, name, tag string, blobs ...digest.Digest) (signed, payload []byte) {
	t.Helper()
	type fsLayer struct {
		BlobSum digest.Digest `json:"blobSum"`
	}
	type history struct {
		V1Compatibility string `json:"v1Compatibility"`
	}
	m := struct {
		SchemaVersion int       `json:"schemaVersion"`
		Name          string    `json:"name"`
		Tag           string    `json:"tag"`
		Architecture  string    `json:"architecture"`
		FSLayers      []fsLayer `json:"fsLayers"`
		History       []history `json:"history"`
	}{SchemaVersion: 1, Name: name, Tag: tag, Architecture: "amd64"}
	for i, b := range blobs {
		m.FSLayers = append(m.FSLayers, fsLayer{b})
		m.History = append(m.History, history{fmt.Sprintf(`{"id":"%064d"}`, i)})
	}
	raw, err := json.MarshalIndent(m, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	signed = testsupport.SignSchema1(t, raw, key)
	payload, _, err = testsupport.VerifySchema1(signed)
	if err != nil {
		t.Fatal(err)
	}
	return signed, payload
}

// verifySchema1 checks that b is a schema1 manifest whose signatures verify
// and whose payload is payload; it returns the signing keys' IDs.
func verifySchema1(t *testing.T, b, payload []byte) []string {
	t.Helper()
	got, ids, err := testsupport.VerifySchema1(b)
	if err != nil {
		t.Fatalf("served manifest: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("served payload differs")
	}
	return ids
}

func TestManifestSchema1RoundTrip(t *testing.T) {
	ctx := context.Background()
	d, _, r, _, layers := setup(t)
	key, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, payload := signSchema1Test(t, key, "r", "old", layers[1], layers[0])
	dgst, err := r.Manifests().Put(ctx, signed, "old", "")
	if err != nil {
		t.Fatal(err)
	}
	if dgst != digest.FromBytes(payload) {
		t.Fatalf("digest %s is not the payload's %s", dgst, digest.FromBytes(payload))
	}
	// Stored as the payload, with the signature beside the revision.
	if b, ok := blobData(t, newStore(t, d), dgst); !ok || !bytes.Equal(b, payload) {
		t.Fatal("revision blob is not the canonical payload")
	}
	sigs, err := (&manifestService{repo: r.(*repository)}).signatures(ctx, dgst)
	if err != nil || len(sigs) != 1 {
		t.Fatalf("stored signatures = %d, %v", len(sigs), err)
	}
	sigDir := mustPath(manifestSignaturesPathSpec{name: "r", revision: dgst})
	if entries, err := d.List(ctx, sigDir); err != nil || len(entries) != 1 {
		t.Fatalf("signature links = %v, %v", entries, err)
	}

	got, mt, err := r.Manifests().Get(ctx, dgst)
	if err != nil || mt != MediaTypeSchema1Signed {
		t.Fatalf("Get = %q, %v", mt, err)
	}
	if ids := verifySchema1(t, got, payload); !slices.Equal(ids, []string{key.KeyID()}) {
		t.Fatalf("signed by %v, want the client's key %s", ids, key.KeyID())
	}
	// A fresh store (restart) serves the same, from the stored signature.
	got2, _, err := repo(t, newStore(t, d), "r").Manifests().Get(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	verifySchema1(t, got2, payload)
	// What is served can be pushed again (e.g. copied to another tag).
	if again, err := r.Manifests().Put(ctx, got, "", dgst); err != nil || again != dgst {
		t.Fatalf("re-put = %s, %v", again, err)
	}
}

// TestManifestSchema1Resigned: a schema1 revision stored without signatures
// (as registry 2.3+ does) is served signed with the store's key, the same
// bytes on every Get.
func TestManifestSchema1Resigned(t *testing.T) {
	ctx := context.Background()
	d, _, r, _, layers := setup(t)
	key, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, payload := signSchema1Test(t, key, "r", "x", layers[0])
	dgst, err := r.Manifests().Put(ctx, signed, "x", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, mustPath(manifestSignaturesPathSpec{name: "r", revision: dgst})); err != nil {
		t.Fatal(err)
	}
	s2 := newStore(t, d)
	first, _, err := repo(t, s2, "r").Manifests().Get(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if ids := verifySchema1(t, first, payload); !slices.Equal(ids, []string{s2.(*storage).key.KeyID()}) {
		t.Fatalf("signed by %v, want the store's key", ids)
	}
	second, _, err := repo(t, s2, "r").Manifests().Get(ctx, dgst)
	if err != nil || !bytes.Equal(first, second) {
		t.Fatalf("second Get differs (%v)", err)
	}
}

func TestManifestTagUntagDelete(t *testing.T) {
	ctx := context.Background()
	d, _, r, cfg, layers := setup(t)
	ms, ts := r.Manifests(), r.Tags()
	m, err := ms.Put(ctx, schema2(cfg, layers[0]), "a", "")
	if err != nil {
		t.Fatal(err)
	}
	n, err := ms.Put(ctx, schema2(cfg, layers[1]), "c", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Tag(ctx, "b", m); err != nil {
		t.Fatal(err)
	}
	if err := ts.Tag(ctx, "d", m); err != nil { // d: m, then n
		t.Fatal(err)
	}
	if err := ts.Tag(ctx, "d", n); err != nil {
		t.Fatal(err)
	}
	if got, err := ts.Get(ctx, "d"); err != nil || got != n {
		t.Fatalf("d = %s, %v", got, err)
	}
	idxD := mustPath(manifestTagIndexEntryLinkPathSpec{name: "r", tag: "d", revision: m})
	if b, err := d.GetContent(ctx, idxD); err != nil || string(b) != m.String() {
		t.Fatalf("d's index lacks m: %q, %v", b, err)
	}
	if err := ts.Untag(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Get(ctx, "c"); !errors.Is(err, ErrTagUnknown) {
		t.Fatalf("Get after Untag: %v", err)
	}
	if ok, _ := ms.Exists(ctx, n); !ok {
		t.Fatal("Untag removed the revision")
	}
	if err := ts.Tag(ctx, "c", n); err != nil {
		t.Fatal(err)
	}

	if err := ms.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	tags, err := ts.List(ctx)
	if err != nil || !slices.Equal(tags, []string{"c", "d"}) {
		t.Fatalf("tags after delete = %v, %v", tags, err)
	}
	if got, _ := ts.Get(ctx, "d"); got != n {
		t.Fatalf("d now %s", got)
	}
	if _, err := d.Stat(ctx, idxD); !driver.IsNotFound(err) {
		t.Fatalf("d's index still names the deleted revision: %v", err)
	}
	if ok, _ := ms.Exists(ctx, m); ok {
		t.Fatal("revision still exists")
	}
	if _, _, err := ms.Get(ctx, m); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("Get of deleted revision: %v", err)
	}
	if _, ok := blobData(t, newStore(t, d), m); !ok {
		t.Fatal("delete removed the manifest's blob data")
	}
	if err := ms.Delete(ctx, m); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("second Delete: %v", err)
	}
	revs, _ := ms.List(ctx)
	if !slices.Equal(revs, []digest.Digest{n}) {
		t.Fatalf("revisions = %v", revs)
	}
}

func TestTagErrors(t *testing.T) {
	ctx := context.Background()
	_, _, r, cfg, layers := setup(t)
	ts := r.Tags()
	if err := ts.Tag(ctx, "x", digest.FromString("nothing")); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("Tag of an unknown revision: %v", err)
	}
	if err := ts.Untag(ctx, "x"); !errors.Is(err, ErrTagUnknown) {
		t.Fatalf("Untag of an unknown tag: %v", err)
	}
	m, err := r.Manifests().Put(ctx, schema2(cfg, layers...), "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", ".x", "-x", "a/b", "..", strings.Repeat("a", 129), "a b"} {
		if err := ts.Tag(ctx, bad, m); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Tag(%q) = %v", bad, err)
		}
		if _, err := ts.Get(ctx, bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Get(%q) = %v", bad, err)
		}
	}
	for _, good := range []string{"_x", "V1.0-rc_1", strings.Repeat("a", 128)} {
		if err := ts.Tag(ctx, good, m); err != nil {
			t.Errorf("Tag(%q) = %v", good, err)
		}
	}
	if tags, err := ts.List(ctx); err != nil || len(tags) != 3 || !slices.IsSorted(tags) {
		t.Fatalf("List = %v, %v", tags, err)
	}
}
