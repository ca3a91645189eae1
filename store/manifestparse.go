package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// parsedManifest is what storing a manifest needs to know: the bytes to store
// as the revision blob, the signatures to keep beside it, and the references
// that must exist in the repository before the revision may be stored.
type parsedManifest struct {
	// MediaType is one of the MediaType* constants; a schema1 manifest is
	// always MediaTypeSchema1Signed, as it is served with signatures.
	MediaType string
	// Canonical is the revision blob. For schema1 it is the JWS payload with
	// the signatures stripped, which is what docker/distribution 2.3+ stores
	// and digests; for every other kind it is the content unchanged (the
	// same slice, not a copy).
	Canonical []byte
	// Signatures are the schema1 JWS signatures, each its own JSON object, to
	// be stored beside the revision (the distribution 2.0 signatures/
	// scheme). nil for other kinds, and nil for a schema1 manifest whose
	// signatures would not verify once rebuilt from Canonical (the store
	// then re-signs with its own key when serving, as the registry does).
	Signatures [][]byte
	// Blobs must be linked in the repository: schema1 blobSums
	// (deduplicated, order kept); schema2/OCI config and layers, except
	// layers with foreign URLs, which clients fetch from elsewhere.
	Blobs []digest.Digest
	// Manifests must be revisions of the repository (manifest list or OCI
	// index children).
	Manifests []digest.Digest
	// Name and Tag are the schema1 manifest's own name and tag fields.
	Name, Tag string
}

// mediaTypeDockerForeignLayer is docker schema2's layer type for blobs that
// clients download from the descriptor's URLs instead of the registry.
const mediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

// manifestHeader holds the top-level fields that tell what kind of manifest a
// document is. The raw fields record presence only; being decoded with the
// same (case-insensitive) rules as the full parse, they cannot disagree with
// it about which keys exist.
type manifestHeader struct {
	SchemaVersion *int            `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Config        json.RawMessage `json:"config"`
	Layers        json.RawMessage `json:"layers"`
	Manifests     json.RawMessage `json:"manifests"`
	FSLayers      json.RawMessage `json:"fsLayers"`
}

// dockerDescriptor is a descriptor in a docker schema2 manifest or manifest
// list. Digest is kept as a string so that an invalid one is reported as a
// problem rather than failing the whole decode.
type dockerDescriptor struct {
	MediaType string   `json:"mediaType"`
	Size      int64    `json:"size"`
	Digest    string   `json:"digest"`
	URLs      []string `json:"urls,omitempty"`
}

// dockerManifest is a docker image manifest, schema version 2.
type dockerManifest struct {
	SchemaVersion int                `json:"schemaVersion"`
	MediaType     string             `json:"mediaType"`
	Config        dockerDescriptor   `json:"config"`
	Layers        []dockerDescriptor `json:"layers"`
}

// dockerManifestList is a docker manifest list (multi-platform image).
type dockerManifestList struct {
	SchemaVersion int                `json:"schemaVersion"`
	MediaType     string             `json:"mediaType"`
	Manifests     []dockerDescriptor `json:"manifests"`
}

// parseManifest checks content on its own, without looking at storage, and
// collects every problem found rather than stopping at the first, so that a
// rejected write can name all its reasons at once.
//
// Problems are *ManifestInvalidError (size, JSON, media type, schema version,
// structure, schema1 name/tag/lengths), *ManifestUnverifiedError (schema1
// signatures) and errors wrapping ErrInvalidDigest. They come in a fixed
// order: document-level problems first, then per-kind checks in field order,
// then signatures.
//
// p is non-nil whenever references could be extracted, even with problems,
// so the caller can also check the references and report everything in one
// error. An oversized manifest is rejected before it is parsed, as the
// registry rejects an oversized body before reading it.
func parseManifest(content []byte, repo, tag string) (p *parsedManifest, problems []error) {
	if len(content) > MaxManifestSize {
		return nil, []error{&ManifestInvalidError{Reason: fmt.Sprintf(
			"manifest is %d bytes, more than the %d-byte limit", len(content), MaxManifestSize)}}
	}
	h, err := parseManifestHeader(content)
	if err != nil {
		return nil, []error{err}
	}

	kind, problems := manifestKind(h)
	switch kind {
	case MediaTypeSchema1Signed:
		p, more := parseSchema1(content, repo, tag)
		return p, append(problems, more...)
	case MediaTypeSchema2, MediaTypeOCIManifest:
		p, more := parseImageManifest(content, kind, h)
		return p, append(problems, more...)
	case MediaTypeManifestList, MediaTypeOCIIndex:
		p, more := parseManifestIndex(content, kind, h)
		return p, append(problems, more...)
	}
	return nil, problems
}

// parseManifestHeader decodes the top-level fields, insisting on a JSON object.
func parseManifestHeader(content []byte) (*manifestHeader, error) {
	if !json.Valid(content) {
		// Unmarshal again only to get a message that locates the error.
		var v any
		err := json.Unmarshal(content, &v)
		reason := "malformed JSON"
		if err != nil {
			reason += ": " + err.Error()
		}
		return nil, &ManifestInvalidError{Reason: reason}
	}
	if trimmed := bytes.TrimSpace(content); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, &ManifestInvalidError{Reason: "manifest is not a JSON object"}
	}
	var h manifestHeader
	if err := json.Unmarshal(content, &h); err != nil {
		return nil, &ManifestInvalidError{Reason: "malformed manifest: " + err.Error()}
	}
	return &h, nil
}

// manifestKind tells which kind of manifest h heads. The mediaType field
// decides when present, and must agree with schemaVersion and with the
// fields present (a document that is both an image manifest and an index is
// refused, as distribution 2.8 refuses it, so that clients cannot be shown
// two different images under one digest). Without mediaType, schemaVersion 1
// is schema1 and schemaVersion 2 is the OCI kind its fields show: docker's
// schema2 kinds always carry their mediaType.
//
// It returns "" and the problems when the kind cannot be told or is
// unsupported; otherwise the kind, plus problems that do not prevent
// extracting references.
func manifestKind(h *manifestHeader) (string, []error) {
	if h.SchemaVersion == nil {
		return "", []error{&ManifestInvalidError{Reason: "schemaVersion missing"}}
	}
	version := *h.SchemaVersion
	kind := h.MediaType
	switch kind {
	case MediaTypeSchema1, MediaTypeSchema1Signed:
		kind = MediaTypeSchema1Signed
	case MediaTypeSchema2, MediaTypeManifestList, MediaTypeOCIManifest, MediaTypeOCIIndex:
	case "":
		switch {
		case version == 1:
			kind = MediaTypeSchema1Signed
		case version != 2:
			return "", []error{&ManifestInvalidError{Reason: fmt.Sprintf("unsupported schemaVersion %d", version)}}
		case rawPresent(h.Manifests) && !rawPresent(h.Config) && !rawPresent(h.Layers):
			kind = MediaTypeOCIIndex
		case rawPresent(h.Config) && !rawPresent(h.Manifests):
			kind = MediaTypeOCIManifest
		default:
			return "", []error{&ManifestInvalidError{Reason: "mediaType missing and the fields do not tell the manifest's kind"}}
		}
	default:
		return "", []error{&ManifestInvalidError{Reason: fmt.Sprintf("unsupported mediaType %q", h.MediaType)}}
	}

	want := 2
	if kind == MediaTypeSchema1Signed {
		want = 1
	}
	if version != want {
		return "", []error{&ManifestInvalidError{Reason: fmt.Sprintf(
			"unsupported schemaVersion %d for %s (want %d)", version, kind, want)}}
	}

	var problems []error
	switch kind {
	case MediaTypeSchema2, MediaTypeOCIManifest:
		if rawPresent(h.Manifests) {
			problems = append(problems, &ManifestInvalidError{Reason: kind + " must not have a manifests field"})
		}
	case MediaTypeManifestList, MediaTypeOCIIndex:
		if rawPresent(h.Config) || rawPresent(h.Layers) {
			problems = append(problems, &ManifestInvalidError{Reason: kind + " must not have config or layers fields"})
		}
	case MediaTypeSchema1Signed:
		if rawPresent(h.Config) || rawPresent(h.Layers) || rawPresent(h.Manifests) {
			problems = append(problems, &ManifestInvalidError{Reason: "schema1 manifest must not have config, layers or manifests fields"})
		}
	}
	return kind, problems
}

// manifestDescriptor is a descriptor reduced to what verification needs, common
// to the docker and OCI kinds.
type manifestDescriptor struct {
	field     string // where it is, for messages: "config", "layers[2]"
	mediaType string
	digest    string
	size      int64
	urls      []string
}

// parseImageManifest extracts config and layers of a docker schema2 or OCI
// image manifest.
func parseImageManifest(content []byte, kind string, h *manifestHeader) (*parsedManifest, []error) {
	var config manifestDescriptor
	var layers []manifestDescriptor
	var subject *v1.Descriptor
	if kind == MediaTypeSchema2 {
		var m dockerManifest
		if err := json.Unmarshal(content, &m); err != nil {
			return nil, []error{&ManifestInvalidError{Reason: "malformed manifest: " + err.Error()}}
		}
		config = dockerDescriptorRef("config", m.Config)
		for i, l := range m.Layers {
			layers = append(layers, dockerDescriptorRef(fmt.Sprintf("layers[%d]", i), l))
		}
	} else {
		var m v1.Manifest
		if err := json.Unmarshal(content, &m); err != nil {
			return nil, []error{&ManifestInvalidError{Reason: "malformed manifest: " + err.Error()}}
		}
		config = ociDescriptorRef("config", m.Config)
		for i, l := range m.Layers {
			layers = append(layers, ociDescriptorRef(fmt.Sprintf("layers[%d]", i), l))
		}
		subject = m.Subject
	}

	var problems []error
	p := &parsedManifest{MediaType: kind, Canonical: content}
	if !rawPresent(h.Config) {
		problems = append(problems, &ManifestInvalidError{Reason: "config missing"})
	} else {
		if errs := checkManifestDescriptor(config); len(errs) > 0 {
			problems = append(problems, errs...)
		} else {
			p.Blobs = append(p.Blobs, digest.Digest(config.digest))
		}
	}
	seen := map[digest.Digest]bool{}
	for _, d := range p.Blobs {
		seen[d] = true
	}
	for _, l := range layers {
		errs := checkManifestDescriptor(l)
		foreign := len(l.urls) > 0
		if foreign {
			errs = append(errs, checkForeignURLs(l)...)
		} else if l.mediaType == mediaTypeDockerForeignLayer {
			errs = append(errs, &ManifestInvalidError{Reason: l.field + ": foreign layer without urls"})
		}
		problems = append(problems, errs...)
		d := digest.Digest(l.digest)
		if len(errs) == 0 && !foreign && !seen[d] {
			seen[d] = true
			p.Blobs = append(p.Blobs, d)
		}
	}
	return p, append(problems, checkSubject(subject)...)
}

// parseManifestIndex extracts the children of a docker manifest list or OCI index.
func parseManifestIndex(content []byte, kind string, h *manifestHeader) (*parsedManifest, []error) {
	var children []manifestDescriptor
	var subject *v1.Descriptor
	if kind == MediaTypeManifestList {
		var m dockerManifestList
		if err := json.Unmarshal(content, &m); err != nil {
			return nil, []error{&ManifestInvalidError{Reason: "malformed manifest list: " + err.Error()}}
		}
		for i, c := range m.Manifests {
			children = append(children, dockerDescriptorRef(fmt.Sprintf("manifests[%d]", i), c))
		}
	} else {
		var m v1.Index
		if err := json.Unmarshal(content, &m); err != nil {
			return nil, []error{&ManifestInvalidError{Reason: "malformed index: " + err.Error()}}
		}
		for i, c := range m.Manifests {
			children = append(children, ociDescriptorRef(fmt.Sprintf("manifests[%d]", i), c))
		}
		subject = m.Subject
	}

	var problems []error
	if !rawPresent(h.Manifests) {
		problems = append(problems, &ManifestInvalidError{Reason: "manifests missing"})
	}
	p := &parsedManifest{MediaType: kind, Canonical: content}
	seen := map[digest.Digest]bool{}
	for _, c := range children {
		if errs := checkManifestDescriptor(c); len(errs) > 0 {
			problems = append(problems, errs...)
			continue
		}
		if d := digest.Digest(c.digest); !seen[d] {
			seen[d] = true
			p.Manifests = append(p.Manifests, d)
		}
	}
	return p, append(problems, checkSubject(subject)...)
}

// checkSubject checks an OCI 1.1 subject descriptor's syntax. The subject is
// not a reference that must exist: an artifact may be pushed before, or
// without, the manifest it refers to.
func checkSubject(subject *v1.Descriptor) []error {
	if subject == nil {
		return nil
	}
	return checkManifestDescriptor(ociDescriptorRef("subject", *subject))
}

// dockerDescriptorRef and ociDescriptorRef bring both families' descriptors
// to one form, so that one set of checks serves docker and OCI alike.
func dockerDescriptorRef(field string, d dockerDescriptor) manifestDescriptor {
	return manifestDescriptor{field: field, mediaType: d.MediaType, digest: d.Digest, size: d.Size, urls: d.URLs}
}

func ociDescriptorRef(field string, d v1.Descriptor) manifestDescriptor {
	return manifestDescriptor{field: field, mediaType: d.MediaType, digest: string(d.Digest), size: d.Size, urls: d.URLs}
}

// checkManifestDescriptor reports an invalid digest or a negative size.
func checkManifestDescriptor(d manifestDescriptor) []error {
	var problems []error
	if err := checkManifestDigest(d.field, d.digest); err != nil {
		problems = append(problems, err)
	}
	if d.size < 0 {
		problems = append(problems, &ManifestInvalidError{Reason: fmt.Sprintf("%s: negative size %d", d.field, d.size)})
	}
	return problems
}

// checkManifestDigest wraps ErrInvalidDigest with where the digest is and why it is
// invalid.
func checkManifestDigest(field, s string) error {
	if _, err := digest.Parse(s); err != nil {
		return fmt.Errorf("%w: %s: %q: %v", ErrInvalidDigest, field, s, err)
	}
	return nil
}

// checkForeignURLs applies the registry's rule for foreign layer URLs: absolute
// http or https, without a fragment.
func checkForeignURLs(d manifestDescriptor) []error {
	var problems []error
	for i, s := range d.urls {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
			problems = append(problems, &ManifestInvalidError{Reason: fmt.Sprintf(
				"%s: urls[%d] %q is not an http or https URL without fragment", d.field, i, s)})
		}
	}
	return problems
}

// detectMediaType tells the media type of stored revision bytes, for serving
// them: the mediaType field when present, else schemaVersion 1 is a schema1
// manifest (served signed), else the OCI kind its fields show. It returns ""
// when the bytes tell nothing, leaving the fallback to the caller.
func detectMediaType(content []byte) string {
	var h manifestHeader
	if err := json.Unmarshal(content, &h); err != nil {
		return ""
	}
	switch {
	case h.MediaType == MediaTypeSchema1:
		return MediaTypeSchema1Signed
	case h.MediaType != "":
		return h.MediaType
	case h.SchemaVersion != nil && *h.SchemaVersion == 1:
		return MediaTypeSchema1Signed
	case rawPresent(h.Manifests) && !rawPresent(h.Config) && !rawPresent(h.Layers):
		return MediaTypeOCIIndex
	case rawPresent(h.Config) && !rawPresent(h.Manifests):
		return MediaTypeOCIManifest
	}
	return ""
}

// rawPresent tells whether a raw field was given a value: encoding/json hands a
// RawMessage the literal null, which counts as absent.
func rawPresent(raw json.RawMessage) bool {
	return raw != nil && !bytes.Equal(raw, []byte("null"))
}
