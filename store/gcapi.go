package store

// This file is what a garbage collector (store/gc) needs from the manifest
// formats beyond what a write checks: every reference a stored manifest
// holds. Paths come from Location.Path and the walk from WalkRepositories
// and WalkBlobs; everything gc deletes other than blobs goes through the
// Store's services (Manifests().Delete, Layers().Unlink, Uploads().Cancel,
// RemoveRepository), so their invariants hold for gc too.

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/opencontainers/go-digest"
)

// References is every digest a stored manifest names.
type References struct {
	// Blobs are the config and layers of an image manifest (layers with
	// foreign URLs included), the fsLayers of a schema1 manifest, and the
	// config of an OCI index that has one.
	Blobs []digest.Digest
	// Manifests are the children of a manifest list or OCI index.
	Manifests []digest.Digest
	// Subject is the OCI 1.1 subject: the manifest this one refers to
	// (a signature, an SBOM). Empty when there is none.
	Subject digest.Digest
}

// ErrNotManifest is returned by ManifestReferences for bytes that are not
// a JSON object.
var ErrNotManifest = errors.New("not a manifest: not a JSON object")

// ManifestReferences reads the references of stored manifest bytes of any
// kind. Unlike the checks a write goes through, it is lenient on purpose: a
// collector must keep whatever a stored manifest may point at, so every
// field that can hold a reference is read whatever the media type says,
// and digests that are not canonical sha256 are skipped (nothing in the
// layout can be named by them). Only bytes that are not a JSON object are
// an error: their references cannot be known.
func ManifestReferences(content []byte) (References, error) {
	if t := bytes.TrimSpace(content); len(t) == 0 || t[0] != '{' {
		return References{}, ErrNotManifest
	}
	type desc struct {
		Digest string `json:"digest"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Blobs     []desc `json:"blobs"` // OCI artifact manifests (1.1 rc)
		Manifests []desc `json:"manifests"`
		Subject   *desc  `json:"subject"`
		FSLayers  []struct {
			BlobSum string `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if err := json.Unmarshal(content, &m); err != nil {
		return References{}, errors.Join(ErrNotManifest, err)
	}
	var r References
	seen := map[digest.Digest]bool{}
	add := func(list *[]digest.Digest, s string) {
		d := digest.Digest(s)
		if checkStoredDigest(d) != nil || seen[d] {
			return
		}
		seen[d] = true
		*list = append(*list, d)
	}
	if m.Config != nil {
		add(&r.Blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		add(&r.Blobs, l.Digest)
	}
	for _, l := range m.Blobs {
		add(&r.Blobs, l.Digest)
	}
	for _, l := range m.FSLayers {
		add(&r.Blobs, l.BlobSum)
	}
	for _, c := range m.Manifests {
		add(&r.Manifests, c.Digest)
	}
	if m.Subject != nil && checkStoredDigest(digest.Digest(m.Subject.Digest)) == nil {
		r.Subject = digest.Digest(m.Subject.Digest)
	}
	return r, nil
}
