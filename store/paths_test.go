package store

import (
	"errors"
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
