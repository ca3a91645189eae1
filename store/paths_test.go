package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
)

func TestPathFor(t *testing.T) {
	const (
		hex = "248e2594fcdaad8f13804d84fb9070f01a3e25b70ee26237086d914edca65cdc"
		sig = "c5b1d63604f273462ef36fadac3182d43ae6a6138731cf594b314835cf1c034f"
		id  = "0b7e6a9c-3f1d-4c2e-9a55-6d3c1f2e8b40"
		r   = "/docker/registry/v2/repositories/library/ubuntu"
	)
	d := digest.Digest("sha256:" + hex)
	s := digest.Digest("sha256:" + sig)
	cases := []struct {
		spec pathSpec
		want string
	}{
		{repositoriesRootPathSpec{}, "/docker/registry/v2/repositories"},
		{repositoriesRootPathSpec{prefix: "library"}, "/docker/registry/v2/repositories/library"},
		{repositoryPathSpec{name: "library/ubuntu"}, r},
		{blobDataPathSpec{digest: d}, "/docker/registry/v2/blobs/sha256/24/" + hex + "/data"},
		{layersPathSpec{name: "library/ubuntu"}, r + "/_layers/sha256"},
		{layerPathSpec{name: "library/ubuntu", digest: d}, r + "/_layers/sha256/" + hex},
		{layerLinkPathSpec{name: "library/ubuntu", digest: d}, r + "/_layers/sha256/" + hex + "/link"},
		{manifestRevisionsPathSpec{name: "library/ubuntu"}, r + "/_manifests/revisions/sha256"},
		{manifestRevisionPathSpec{name: "library/ubuntu", revision: d}, r + "/_manifests/revisions/sha256/" + hex},
		{manifestRevisionLinkPathSpec{name: "library/ubuntu", revision: d}, r + "/_manifests/revisions/sha256/" + hex + "/link"},
		{manifestSignaturesPathSpec{name: "library/ubuntu", revision: d}, r + "/_manifests/revisions/sha256/" + hex + "/signatures/sha256"},
		{manifestSignatureLinkPathSpec{name: "library/ubuntu", revision: d, signature: s}, r + "/_manifests/revisions/sha256/" + hex + "/signatures/sha256/" + sig + "/link"},
		{manifestTagsPathSpec{name: "library/ubuntu"}, r + "/_manifests/tags"},
		{manifestTagPathSpec{name: "library/ubuntu", tag: "22.04"}, r + "/_manifests/tags/22.04"},
		{manifestTagCurrentLinkPathSpec{name: "library/ubuntu", tag: "22.04"}, r + "/_manifests/tags/22.04/current/link"},
		{manifestTagIndexPathSpec{name: "library/ubuntu", tag: "22.04"}, r + "/_manifests/tags/22.04/index/sha256"},
		{manifestTagIndexEntryPathSpec{name: "library/ubuntu", tag: "22.04", revision: d}, r + "/_manifests/tags/22.04/index/sha256/" + hex},
		{manifestTagIndexEntryLinkPathSpec{name: "library/ubuntu", tag: "22.04", revision: d}, r + "/_manifests/tags/22.04/index/sha256/" + hex + "/link"},
		{uploadsPathSpec{name: "library/ubuntu"}, r + "/_uploads"},
		{uploadPathSpec{name: "library/ubuntu", id: id}, r + "/_uploads/" + id},
		{uploadDataPathSpec{name: "library/ubuntu", id: id}, r + "/_uploads/" + id + "/data"},
		{uploadStartedAtPathSpec{name: "library/ubuntu", id: id}, r + "/_uploads/" + id + "/startedat"},
		{uploadExpectedPathSpec{name: "library/ubuntu", id: id}, r + "/_uploads/" + id + "/regfs-expected"},
		{uploadHashStatesPathSpec{name: "library/ubuntu", id: id}, r + "/_uploads/" + id + "/hashstates/sha256"},
		{uploadHashStatePathSpec{name: "library/ubuntu", id: id, offset: 1048576}, r + "/_uploads/" + id + "/hashstates/sha256/1048576"},
	}
	for _, c := range cases {
		got, err := pathFor(c.spec)
		if err != nil || got != c.want {
			t.Errorf("pathFor(%#v) = %q, %v; want %q", c.spec, got, err, c.want)
		}
		if !driver.ValidPath(got) {
			t.Errorf("pathFor(%#v) = %q is not a valid driver path", c.spec, got)
		}
	}
}

func TestPathForRejects(t *testing.T) {
	good := digest.FromString("x")
	cases := []struct {
		spec pathSpec
		want error
	}{
		{repositoryPathSpec{name: "../etc"}, ErrInvalidName},
		{repositoriesRootPathSpec{prefix: "a/_layers"}, ErrInvalidName},
		{blobDataPathSpec{digest: "sha256:../../x"}, ErrInvalidDigest},
		{blobDataPathSpec{digest: digest.SHA512.FromString("x")}, ErrInvalidDigest},
		{layerLinkPathSpec{name: "A", digest: good}, ErrInvalidName},
		{manifestTagPathSpec{name: "a", tag: "../b"}, ErrInvalidName},
		{manifestSignatureLinkPathSpec{name: "a", revision: good, signature: "x"}, ErrInvalidDigest},
		{uploadDataPathSpec{name: "a", id: "../../b"}, ErrUploadUnknown},
		{uploadHashStatePathSpec{name: "a", id: tdUploadID, offset: -1}, ErrInvalidOffset},
	}
	for _, c := range cases {
		if got, err := pathFor(c.spec); !errors.Is(err, c.want) {
			t.Errorf("pathFor(%#v) = %q, %v; want %v", c.spec, got, err, c.want)
		}
	}
}

// everyLocation has one Location of every PathKind.
func everyLocation() []Location {
	const (
		hex = "248e2594fcdaad8f13804d84fb9070f01a3e25b70ee26237086d914edca65cdc"
		sig = "c5b1d63604f273462ef36fadac3182d43ae6a6138731cf594b314835cf1c034f"
		r   = "library/ubuntu"
	)
	d := digest.Digest("sha256:" + hex)
	s := digest.Digest("sha256:" + sig)
	return []Location{
		{Kind: PathBlobsRoot},
		{Kind: PathBlobs},
		{Kind: PathBlobPrefix, Prefix: "24"},
		{Kind: PathBlob, Digest: d},
		{Kind: PathBlobData, Digest: d},
		{Kind: PathRepositories},
		{Kind: PathRepository, Repository: r},
		{Kind: PathLayersRoot, Repository: r},
		{Kind: PathLayers, Repository: r},
		{Kind: PathLayer, Repository: r, Digest: d},
		{Kind: PathLayerLink, Repository: r, Digest: d},
		{Kind: PathManifests, Repository: r},
		{Kind: PathRevisionsRoot, Repository: r},
		{Kind: PathRevisions, Repository: r},
		{Kind: PathRevision, Repository: r, Digest: d},
		{Kind: PathRevisionLink, Repository: r, Digest: d},
		{Kind: PathSignaturesRoot, Repository: r, Digest: d},
		{Kind: PathSignatures, Repository: r, Digest: d},
		{Kind: PathSignature, Repository: r, Digest: d, Signature: s},
		{Kind: PathSignatureLink, Repository: r, Digest: d, Signature: s},
		{Kind: PathTags, Repository: r},
		{Kind: PathTag, Repository: r, Tag: "22.04"},
		{Kind: PathTagCurrent, Repository: r, Tag: "22.04"},
		{Kind: PathTagCurrentLink, Repository: r, Tag: "22.04"},
		{Kind: PathTagIndexRoot, Repository: r, Tag: "22.04"},
		{Kind: PathTagIndex, Repository: r, Tag: "22.04"},
		{Kind: PathTagIndexEntry, Repository: r, Tag: "22.04", Digest: d},
		{Kind: PathTagIndexEntryLink, Repository: r, Tag: "22.04", Digest: d},
		{Kind: PathUploads, Repository: r},
		{Kind: PathUpload, Repository: r, Upload: tdUploadID},
		{Kind: PathUploadData, Repository: r, Upload: tdUploadID},
		{Kind: PathUploadStartedAt, Repository: r, Upload: tdUploadID},
		{Kind: PathUploadExpected, Repository: r, Upload: tdUploadID},
		{Kind: PathUploadStaged, Repository: r, Upload: tdUploadID},
		{Kind: PathUploadHashStatesRoot, Repository: r, Upload: tdUploadID},
		{Kind: PathUploadHashStates, Repository: r, Upload: tdUploadID},
		{Kind: PathUploadHashState, Repository: r, Upload: tdUploadID, Offset: 1048576},
	}
}

// TestParsePathRoundTrip checks that ParsePath inverts Location.Path for
// every kind, in the absolute and the relative form.
func TestParsePathRoundTrip(t *testing.T) {
	locs := everyLocation()
	seen := map[PathKind]bool{}
	for _, l := range locs {
		seen[l.Kind] = true
		p, err := l.Path()
		if err != nil || !driver.ValidPath(p) {
			t.Fatalf("%+v: Path = %q, %v", l, p, err)
		}
		for _, in := range []string{p, strings.TrimPrefix(p, storageRoot+"/")} {
			got, err := ParsePath(in)
			if err != nil || got != l {
				t.Errorf("ParsePath(%q) = %+v, %v; want %+v", in, got, err, l)
			}
		}
	}
	for k := PathKind(1); k < numPathKinds; k++ {
		if !seen[k] {
			t.Errorf("kind %d has no round-trip case", k)
		}
	}
}

// TestParsePathInvertsPathFor checks ParsePath against every spec type
// store's own code builds paths with.
func TestParsePathInvertsPathFor(t *testing.T) {
	d := digest.FromString("x")
	specs := []pathSpec{
		repositoriesRootPathSpec{}, repositoryPathSpec{name: "a/b"}, blobsPathSpec{}, blobDataPathSpec{digest: d},
		layersPathSpec{name: "a"}, layerPathSpec{name: "a", digest: d}, layerLinkPathSpec{name: "a", digest: d},
		manifestRevisionsPathSpec{name: "a"}, manifestRevisionPathSpec{name: "a", revision: d},
		manifestRevisionLinkPathSpec{name: "a", revision: d}, manifestSignaturesPathSpec{name: "a", revision: d},
		manifestSignatureLinkPathSpec{name: "a", revision: d, signature: d},
		manifestTagsPathSpec{name: "a"}, manifestTagPathSpec{name: "a", tag: "t"},
		manifestTagCurrentLinkPathSpec{name: "a", tag: "t"}, manifestTagIndexPathSpec{name: "a", tag: "t"},
		manifestTagIndexEntryPathSpec{name: "a", tag: "t", revision: d},
		manifestTagIndexEntryLinkPathSpec{name: "a", tag: "t", revision: d},
		uploadsPathSpec{name: "a"}, uploadPathSpec{name: "a", id: tdUploadID}, uploadDataPathSpec{name: "a", id: tdUploadID},
		uploadStartedAtPathSpec{name: "a", id: tdUploadID}, uploadExpectedPathSpec{name: "a", id: tdUploadID},
		uploadHashStatesPathSpec{name: "a", id: tdUploadID}, uploadHashStatePathSpec{name: "a", id: tdUploadID, offset: 0},
	}
	for _, spec := range specs {
		p := mustPath(spec)
		l, err := ParsePath(p)
		if err != nil || l != locationOf(spec) {
			t.Errorf("ParsePath(pathFor(%#v)) = %+v, %v", spec, l, err)
		}
	}
}

func TestParsePathRejects(t *testing.T) {
	const hex = "248e2594fcdaad8f13804d84fb9070f01a3e25b70ee26237086d914edca65cdc"
	r := "repositories/a/"
	for _, p := range []string{
		"", "/", "/docker/registry/v2", "/other/blobs/sha256", "blobs/sha512", "blobs/sha256/2", "blobs/sha256/AB",
		"blobs/sha256/00/" + hex, "blobs/sha256/24/" + hex + "/link", "blobs/sha256/24/" + strings.ToUpper(hex),
		"repositories/A", "repositories//a", "repositories/a/", "repositories/_layers", "repositories/a/_other",
		r + "_layers/sha512", r + "_layers/sha256/abc", r + "_layers/sha256/" + hex + "/data", r + "_layers/sha256/" + hex + "/link/x",
		r + "_manifests/x", r + "_manifests/revisions/sha256/" + hex + "/signatures/sha1",
		r + "_manifests/revisions/sha256/abc/signatures", r + "_manifests/tags/.x", r + "_manifests/tags/t/other",
		r + "_manifests/tags/t/current/data", r + "_manifests/tags/t/index/sha256/" + hex + "/x",
		r + "_uploads/not-a-uuid", r + "_uploads/" + tdUploadID + "/other", r + "_uploads/" + tdUploadID + "/hashstates/sha256/01",
		r + "_uploads/" + tdUploadID + "/hashstates/sha256/-1", r + "_uploads/" + tdUploadID + "/hashstates/sha1/1",
		r + "_uploads/" + strings.ToUpper(tdUploadID),
	} {
		if l, err := ParsePath(p); !errors.Is(err, ErrNotInLayout) {
			t.Errorf("ParsePath(%q) = %+v, %v; want ErrNotInLayout", p, l, err)
		}
	}
	if _, err := ParsePath("repositories/A/_layers"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("a bad name: %v, want ErrInvalidName too", err)
	}
}

// FuzzParsePath checks that whatever ParsePath accepts has exactly one
// path: Path gives the input back (absolute), and parsing that gives the
// same Location.
func FuzzParsePath(f *testing.F) {
	for _, l := range everyLocation() {
		p, _ := l.Path()
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, in string) {
		l, err := ParsePath(in)
		if err != nil {
			if !errors.Is(err, ErrNotInLayout) {
				t.Fatalf("ParsePath(%q): %v does not wrap ErrNotInLayout", in, err)
			}
			return
		}
		p, err := l.Path()
		if err != nil {
			t.Fatalf("ParsePath(%q) = %+v, whose Path fails: %v", in, l, err)
		}
		want := in
		if !strings.HasPrefix(in, "/") {
			want = storageRoot + "/" + in
		}
		if p != want || !driver.ValidPath(p) {
			t.Fatalf("ParsePath(%q) = %+v, whose Path is %q", in, l, p)
		}
		if again, err := ParsePath(p); err != nil || again != l {
			t.Fatalf("ParsePath(%q) = %+v, %v; want %+v", p, again, err, l)
		}
	})
}
