package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

// manifestAccept lists every manifest media type, so that the registry
// serves what is stored and never converts it (distribution rewrites a
// schema2 manifest as schema1 for a client that does not accept schema2).
var manifestAccept = []string{
	store.MediaTypeOCIManifest,
	store.MediaTypeOCIIndex,
	store.MediaTypeSchema2,
	store.MediaTypeManifestList,
	store.MediaTypeSchema1Signed,
	store.MediaTypeSchema1,
}

func acceptHeader() http.Header {
	return http.Header{"Accept": manifestAccept}
}

// ManifestAccept returns the media types regfs asks for in every manifest
// request's Accept header (regfs-bench's R3 floor sends the same).
func ManifestAccept() []string { return slices.Clone(manifestAccept) }

// manifestService implements store.ManifestService over manifests/<ref>.
type manifestService struct{ r *repository }

// fetch GETs a manifest by reference (tag or digest), checking that a
// digest's bytes hash to it.
func (s *remoteStore) fetch(ctx context.Context, repo, ref string) (cachedManifest, digest.Digest, error) {
	if d, err := digest.Parse(ref); err == nil {
		s.mu.Lock()
		m, ok := s.manifests[d]
		s.mu.Unlock()
		if ok {
			return m, d, nil
		}
	}
	resp, body, err := s.c.do(ctx, &request{method: http.MethodGet, path: "/v2/" + repo + "/manifests/" + ref, header: acceptHeader(),
		scopes: pullScopes(repo), want: []int{http.StatusOK}})
	if err != nil {
		return cachedManifest{}, "", err
	}
	got := manifestDigest(body)
	if want, err := digest.Parse(ref); err == nil && want != got {
		return cachedManifest{}, "", &store.CorruptBlobError{Path: "/v2/" + repo + "/manifests/" + ref, Expected: want, Actual: got, Size: int64(len(body))}
	}
	m := parseManifest(resp.Header.Get("Content-Type"), body)
	s.mu.Lock()
	s.cacheManifest(got, m)
	s.mu.Unlock()
	s.recent.put(tagKey(repo, ref), got)
	s.recent.put(tagKey(repo, got.String()), got)
	return m, got, nil
}

// cacheManifest keeps a manifest's bytes; past maxCachedManifestBytes the
// cache starts over. Its caller holds s.mu.
func (s *remoteStore) cacheManifest(d digest.Digest, m cachedManifest) {
	if _, ok := s.manifests[d]; ok {
		return
	}
	if s.manifestBytes+len(m.content) > maxCachedManifestBytes {
		clear(s.manifests)
		s.manifestBytes = 0
	}
	s.manifests[d] = m
	s.manifestBytes += len(m.content)
}

// manifestDigest is the digest a registry names a manifest by: of its
// bytes, or for a signed schema1 manifest of its payload (the registry
// signs it anew on every GET).
func manifestDigest(body []byte) digest.Digest {
	if bytes.Contains(body, []byte(`"signatures"`)) {
		if js, err := libtrust.ParsePrettySignature(body, "signatures"); err == nil {
			if payload, err := js.Payload(); err == nil {
				return digest.FromBytes(payload)
			}
		}
	}
	return digest.FromBytes(body)
}

// parseManifest reads what regfs needs out of a manifest, in one pass over
// its JSON: its media type (its mediaType field, else the Content-Type the
// registry sent, else schema1's when it has fsLayers) and what it points
// at: blobs (config, layers, fsLayers) and child manifests (of an index).
// A listing of a repository asks for the references of every revision, so
// they are kept with the bytes rather than parsed again.
func parseManifest(contentType string, body []byte) cachedManifest {
	type desc struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		MediaType     string            `json:"mediaType"`
		SchemaVersion int               `json:"schemaVersion"`
		Signatures    []json.RawMessage `json:"signatures"`
		Config        *desc             `json:"config"`
		Layers        []desc            `json:"layers"`
		Manifests     []desc            `json:"manifests"`
		FSLayers      []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	out := cachedManifest{content: body}
	if json.Unmarshal(body, &m) == nil {
		if m.Config != nil && m.Config.Digest != "" {
			out.blobs = append(out.blobs, m.Config.Digest)
		}
		for _, l := range m.Layers {
			out.blobs = append(out.blobs, l.Digest)
		}
		for _, l := range m.FSLayers {
			out.blobs = append(out.blobs, l.BlobSum)
		}
		for _, c := range m.Manifests {
			out.children = append(out.children, c.Digest)
		}
	}
	switch ct, _, err := mime.ParseMediaType(contentType); {
	case m.MediaType != "":
		out.mediaType = m.MediaType
	case err == nil && ct != "" && ct != "application/json" && ct != "text/plain":
		out.mediaType = ct
	case m.SchemaVersion == 1 && len(m.Signatures) > 0:
		out.mediaType = store.MediaTypeSchema1Signed
	case m.SchemaVersion == 1:
		out.mediaType = store.MediaTypeSchema1
	default:
		out.mediaType = store.MediaTypeOCIManifest
	}
	return out
}

// Get implements store.ManifestService.
func (m *manifestService) Get(ctx context.Context, dgst digest.Digest) ([]byte, string, error) {
	got, _, err := m.r.s.fetch(ctx, m.r.name, dgst.String())
	if err != nil {
		return nil, "", notFound(err, store.ErrManifestUnknown, dgst.String())
	}
	m.r.s.note(m.r.name, dgst, true)
	return got.content, got.mediaType, nil
}

// Exists implements store.ManifestService with a HEAD.
func (m *manifestService) Exists(ctx context.Context, dgst digest.Digest) (bool, error) {
	_, err := m.r.s.headManifest(ctx, m.r.name, dgst.String())
	if err != nil {
		if isNotFoundErr(err) {
			m.r.s.forget(m.r.name, dgst, true)
			return false, nil
		}
		return false, err
	}
	m.r.s.note(m.r.name, dgst, true)
	return true, nil
}

// headManifest HEADs a manifest reference and returns its digest
// (Docker-Content-Digest, else a GET to hash it).
func (s *remoteStore) headManifest(ctx context.Context, repo, ref string) (digest.Digest, error) {
	if v, ok := s.recent.get(tagKey(repo, ref)); ok {
		return v.(digest.Digest), nil
	}
	resp, _, err := s.c.do(ctx, &request{method: http.MethodHead, path: "/v2/" + repo + "/manifests/" + ref, header: acceptHeader(),
		scopes: pullScopes(repo), want: []int{http.StatusOK}})
	if err != nil {
		return "", err
	}
	if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		s.recent.put(tagKey(repo, ref), d)
		return d, nil
	}
	_, d, err := s.fetch(ctx, repo, ref)
	return d, err
}

// tagKey and tagsKey are the recent cache's keys of a reference's digest
// and a repository's tag list.
func tagKey(repo, ref string) string { return "ref " + repo + ":" + ref }
func tagsKey(repo string) string     { return "tags " + repo }

// resolveTag GETs a tag's manifest (its digest and bytes in one request,
// the bytes kept in the manifest cache) unless its digest is recent.
func (s *remoteStore) resolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	if v, ok := s.recent.get(tagKey(repo, tag)); ok {
		return v.(digest.Digest), nil
	}
	_, d, err := s.fetch(ctx, repo, tag)
	if err != nil {
		return "", err
	}
	s.recent.put(tagKey(repo, tag), d)
	return d, nil
}

// Put implements store.ManifestService: PUT by tag, or by digest when
// untagged. The registry verifies; its refusal comes back as a
// *store.ManifestVerificationError with every reason.
func (m *manifestService) Put(ctx context.Context, content []byte, tag string, want digest.Digest) (digest.Digest, error) {
	if len(content) > store.MaxManifestSize {
		return "", &store.ManifestInvalidError{Reason: fmt.Sprintf("%d bytes, more than %d", len(content), store.MaxManifestSize)}
	}
	if tag != "" {
		if err := store.ValidateTag(tag); err != nil {
			return "", err
		}
	}
	var probe any
	if err := json.Unmarshal(content, &probe); err != nil {
		return "", &store.ManifestVerificationError{Errs: []error{&store.ManifestInvalidError{Reason: "not JSON: " + err.Error()}}}
	}
	dgst := manifestDigest(content)
	if want != "" && want != dgst {
		return "", &store.DigestMismatchError{Expected: want, Actual: dgst, Size: int64(len(content))}
	}
	parsed := parseManifest("", content)
	mt := parsed.mediaType
	ref := tag
	if ref == "" {
		ref = dgst.String()
	}
	resp, _, err := m.r.s.c.do(ctx, &request{method: http.MethodPut, path: m.r.path("manifests/" + ref), body: content,
		header: http.Header{"Content-Type": {mt}}, scopes: repoScopes(m.r.name), want: []int{http.StatusCreated, http.StatusOK, http.StatusAccepted}})
	if err != nil {
		return "", rejectedManifest(err)
	}
	// The registry names what it stored; a schema1 manifest it re-signed
	// has another digest than the bytes sent.
	if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		dgst = d
	}
	m.r.s.mu.Lock()
	if d := manifestDigest(content); d == dgst {
		m.r.s.cacheManifest(d, parsed)
	}
	m.r.s.mu.Unlock()
	m.r.s.note(m.r.name, dgst, true)
	m.r.s.changed(m.r.name)
	return dgst, nil
}

// changed forgets what recent holds of repo, after a change made here.
func (s *remoteStore) changed(repo string) {
	s.recent.dropPrefix(tagsKey(repo))
	s.recent.dropPrefix(tagKey(repo, ""))
}

// Delete implements store.ManifestService: DELETE by digest, which also
// removes the tags pointing at it.
func (m *manifestService) Delete(ctx context.Context, dgst digest.Digest) error {
	_, _, err := m.r.s.c.do(ctx, &request{method: http.MethodDelete, path: m.r.path("manifests/" + dgst.String()),
		scopes: writeScopes(m.r.name), want: []int{http.StatusAccepted, http.StatusOK, http.StatusNoContent}})
	if err != nil {
		if isStatus(err, http.StatusMethodNotAllowed) {
			return fmt.Errorf("%w: the registry does not allow deletes (storage.delete.enabled is false): %v", store.ErrUnsupported, httpErr(err))
		}
		return notFound(err, store.ErrManifestUnknown, dgst.String())
	}
	m.r.s.forget(m.r.name, dgst, true)
	m.r.s.changed(m.r.name)
	return nil
}

// List implements store.ManifestService: the revisions the tags point at,
// the children of the indexes among them, and the revisions this process
// pushed or saw.
func (m *manifestService) List(ctx context.Context) ([]digest.Digest, error) {
	revs, _, err := m.r.s.reachable(ctx, m.r.name)
	return revs, err
}

// reachable returns the revisions reachable from the repository's tags
// (plus those noted) and the blobs they reference.
func (s *remoteStore) reachable(ctx context.Context, repo string) (revs, blobs []digest.Digest, err error) {
	tags, err := (&tagService{&repository{s: s, name: repo}}).List(ctx)
	if err != nil {
		return nil, nil, err
	}
	set := map[digest.Digest]bool{}
	var queue []digest.Digest
	for _, t := range tags {
		d, err := s.resolveTag(ctx, repo, t)
		if err != nil {
			if isNotFoundErr(err) {
				continue // untagged meanwhile
			}
			return nil, nil, err
		}
		queue = append(queue, d)
	}
	queue = append(queue, s.noted(repo, true)...)
	blobSet := map[digest.Digest]bool{}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if set[d] {
			continue
		}
		m, _, err := s.fetch(ctx, repo, d.String())
		if err != nil {
			if isNotFoundErr(err) {
				s.forget(repo, d, true)
				continue
			}
			return nil, nil, err
		}
		set[d] = true
		for _, b := range m.blobs {
			blobSet[b] = true
		}
		queue = append(queue, m.children...)
	}
	for d := range set {
		revs = append(revs, d)
	}
	for d := range blobSet {
		blobs = append(blobs, d)
	}
	slices.Sort(revs)
	slices.Sort(blobs)
	return revs, blobs, nil
}

// Linked implements store.ManifestService; the API has no times.
func (m *manifestService) Linked(ctx context.Context) ([]store.Linked, error) {
	revs, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	return linked(revs), nil
}

func linked(ds []digest.Digest) []store.Linked {
	out := make([]store.Linked, len(ds))
	for i, d := range ds {
		out[i] = store.Linked{Digest: d}
	}
	return out
}

// LinkTime implements store.ManifestService: zero (the API has no times).
func (m *manifestService) LinkTime(ctx context.Context, dgst digest.Digest) (time.Time, error) {
	ok, err := m.Exists(ctx, dgst)
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return time.Time{}, fmt.Errorf("%w: %s", store.ErrManifestUnknown, dgst)
	}
	return time.Time{}, nil
}

// tagService implements store.TagService.
type tagService struct{ r *repository }

// Get implements store.TagService with a HEAD of the tag.
func (t *tagService) Get(ctx context.Context, tag string) (digest.Digest, error) {
	if err := store.ValidateTag(tag); err != nil {
		return "", err
	}
	d, err := t.r.s.headManifest(ctx, t.r.name, tag)
	if err != nil {
		return "", notFound(err, store.ErrTagUnknown, tag)
	}
	t.r.s.note(t.r.name, d, true)
	return d, nil
}

// Tag implements store.TagService: a PUT of the revision's bytes by tag.
func (t *tagService) Tag(ctx context.Context, tag string, dgst digest.Digest) error {
	if err := store.ValidateTag(tag); err != nil {
		return err
	}
	m, _, err := t.r.s.fetch(ctx, t.r.name, dgst.String())
	if err != nil {
		return notFound(err, store.ErrManifestUnknown, dgst.String())
	}
	_, _, err = t.r.s.c.do(ctx, &request{method: http.MethodPut, path: t.r.path("manifests/" + tag), body: m.content,
		header: http.Header{"Content-Type": {m.mediaType}}, scopes: repoScopes(t.r.name), want: []int{http.StatusCreated, http.StatusOK, http.StatusAccepted}})
	if err != nil {
		return rejectedManifest(err)
	}
	t.r.s.changed(t.r.name)
	return nil
}

// errTagDelete explains a registry without DELETE by tag.
var errTagDelete = errors.New("the registry does not delete tags (DELETE /v2/<name>/manifests/<tag> is OCI distribution 1.1): " +
	"rm the revision (_manifests/sha256:...) to delete it with every tag, or ln another revision to the tag")

// Untag implements store.TagService: DELETE by tag (OCI distribution
// 1.1). A registry that refuses it (distribution 2.x answers 400 or 405)
// is ErrUnsupported with the reason.
func (t *tagService) Untag(ctx context.Context, tag string) error {
	if err := store.ValidateTag(tag); err != nil {
		return err
	}
	_, _, err := t.r.s.c.do(ctx, &request{method: http.MethodDelete, path: t.r.path("manifests/" + tag),
		scopes: writeScopes(t.r.name), want: []int{http.StatusAccepted, http.StatusOK, http.StatusNoContent}})
	if err == nil {
		t.r.s.changed(t.r.name)
		return nil
	}
	if he := httpErr(err); he != nil {
		switch {
		case he.Status == http.StatusNotFound && he.has("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "TAG_UNKNOWN"):
			return notFound(err, store.ErrTagUnknown, tag)
		case he.Status == http.StatusBadRequest || he.Status == http.StatusMethodNotAllowed || he.has("UNSUPPORTED", "DIGEST_INVALID"):
			err := fmt.Errorf("%w: %w (%v)", store.ErrUnsupported, errTagDelete, he)
			// fs answers ENOTSUP without logging it: say why here.
			t.r.s.log.Warn("tag not removed", "repository", t.r.name, "tag", tag, "error", err)
			return err
		}
	}
	return err
}

// List implements store.TagService: tags/list, every page. A repository
// the registry does not know has no tags.
func (t *tagService) List(ctx context.Context) ([]string, error) {
	tags, err := t.list(ctx)
	if isStatus(err, http.StatusNotFound) {
		return nil, nil
	}
	return tags, err
}

// list is List with a repository the registry does not know an error.
func (t *tagService) list(ctx context.Context) ([]string, error) {
	t.r.s.listed(ctx, t.r.name)
	if v, ok := t.r.s.recent.get(tagsKey(t.r.name)); ok {
		return slices.Clone(v.([]string)), nil
	}
	var tags []string
	next := t.r.path("tags/list")
	q := map[string][]string{"n": {itoa(tagsPage)}}
	for next != "" {
		resp, body, err := t.r.s.c.do(ctx, &request{method: http.MethodGet, path: next, query: q, scopes: pullScopes(t.r.name), want: []int{http.StatusOK}})
		if err != nil {
			return nil, err
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		if err := decodeJSON(body, &page, "tag list"); err != nil {
			return nil, err
		}
		tags = append(tags, page.Tags...)
		next, q = nextLink(resp), nil
	}
	t.r.s.sawRepo(t.r.name)
	sort.Strings(tags)
	tags = slices.Compact(tags)
	t.r.s.recent.put(tagsKey(t.r.name), slices.Clone(tags))
	return tags, nil
}

// LinkTime implements store.TagService: zero (the API has no times).
func (t *tagService) LinkTime(ctx context.Context, tag string) (time.Time, error) {
	_, err := t.Get(ctx, tag)
	return time.Time{}, err
}
