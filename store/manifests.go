package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// manifestService is the ManifestService of one repository.
type manifestService struct {
	repo *repository
}

func (m *manifestService) cacheKey(dgst digest.Digest) string {
	return m.repo.name + "@" + dgst.String()
}

// Get implements ManifestService. The revision link is checked on every call
// (another writer may have deleted the revision); the bytes, immutable, come
// from the store's manifest cache after the first read, which also keeps a
// re-signed schema1 manifest byte-identical within the process.
func (m *manifestService) Get(ctx context.Context, dgst digest.Digest) ([]byte, string, error) {
	s := m.repo.s
	linkPath, err := pathFor(manifestRevisionLinkPathSpec{name: m.repo.name, revision: dgst})
	if err != nil {
		return nil, "", err
	}
	target, err := s.readLink(ctx, linkPath)
	if err != nil {
		if isNotFound(err) {
			return nil, "", fmt.Errorf("%w: %s in %s", ErrManifestUnknown, dgst, m.repo.name)
		}
		return nil, "", err
	}
	if c, ok := s.manifests.Get(m.cacheKey(dgst)); ok {
		return bytes.Clone(c.content), c.mediaType, nil
	}
	blobPath := mustPath(blobDataPathSpec{digest: target})
	content, err := s.driver.GetContent(ctx, blobPath)
	if err != nil {
		if isNotFound(err) {
			return nil, "", fmt.Errorf("%w: %s in %s: blob data missing", ErrManifestUnknown, dgst, m.repo.name)
		}
		return nil, "", err
	}
	// A manifest is small: checking it costs a hash of a few KiB, once per
	// process, and keeps a damaged blob out of the cache and off the wire.
	if actual := digest.FromBytes(content); actual != target {
		return nil, "", &CorruptBlobError{Path: blobPath, Expected: target, Actual: actual, Size: int64(len(content))}
	}
	mediaType := detectMediaType(content)
	if mediaType == MediaTypeSchema1Signed {
		sigs, err := m.signatures(ctx, dgst)
		if err != nil {
			return nil, "", err
		}
		signed, err := signSchema1(content, sigs, s.key)
		if err != nil {
			return nil, "", fmt.Errorf("store: serving schema1 manifest %s: %w", dgst, err)
		}
		content = signed
	}
	s.manifests.Add(m.cacheKey(dgst), cachedManifest{content: bytes.Clone(content), mediaType: mediaType})
	return content, mediaType, nil
}

// signatures reads the schema1 signatures stored beside a revision, in
// the order of their digests; none is not an error (registry 2.3+ stores
// none).
func (m *manifestService) signatures(ctx context.Context, dgst digest.Digest) ([][]byte, error) {
	s := m.repo.s
	dir := mustPath(manifestSignaturesPathSpec{name: m.repo.name, revision: dgst})
	sigDigests, err := s.listLinked(ctx, dir)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, sd := range sigDigests {
		target, err := s.readLink(ctx, mustPath(manifestSignatureLinkPathSpec{name: m.repo.name, revision: dgst, signature: sd}))
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, err
		}
		b, err := s.driver.GetContent(ctx, mustPath(blobDataPathSpec{digest: target}))
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Exists implements ManifestService.
func (m *manifestService) Exists(ctx context.Context, dgst digest.Digest) (bool, error) {
	return m.repo.revisionExists(ctx, dgst)
}

// revisionExists tells whether the revision's link exists; the manifest
// and tag services share it.
func (r *repository) revisionExists(ctx context.Context, dgst digest.Digest) (bool, error) {
	p, err := pathFor(manifestRevisionLinkPathSpec{name: r.name, revision: dgst})
	if err != nil {
		return false, err
	}
	return r.s.exists(ctx, p)
}

// Put implements ManifestService. Everything is checked before anything is
// written, and every problem is reported in one *ManifestVerificationError.
// Then, in the format's write order: revision blob -> signature blobs and
// links -> revision link -> tag index link -> tag current link.
func (m *manifestService) Put(ctx context.Context, content []byte, tag string, want digest.Digest) (digest.Digest, error) {
	s := m.repo.s
	if tag != "" {
		if err := checkTag(tag); err != nil {
			return "", err
		}
	}
	if want != "" {
		if err := checkStoredDigest(want); err != nil {
			return "", err
		}
	}
	if len(content) > MaxManifestSize {
		return "", &ManifestVerificationError{Errs: []error{&ManifestInvalidError{
			Reason: fmt.Sprintf("manifest is %d bytes, more than the %d-byte limit", len(content), MaxManifestSize)}}}
	}
	p, problems := parseManifest(content, m.repo.name, tag)
	var dgst digest.Digest
	if p != nil {
		more, err := m.checkReferences(ctx, p)
		if err != nil {
			return "", err
		}
		problems = append(problems, more...)
		dgst = digest.FromBytes(p.Canonical)
		if want != "" && dgst != want {
			problems = append(problems, &DigestMismatchError{Expected: want, Actual: dgst, Size: int64(len(p.Canonical))})
		}
	}
	if len(problems) > 0 || p == nil {
		if len(problems) == 0 {
			problems = []error{&ManifestInvalidError{Reason: "unrecognised manifest"}}
		}
		return "", &ManifestVerificationError{Errs: problems}
	}

	defer s.writes.hold(append(append([]digest.Digest{dgst}, p.Blobs...), p.Manifests...)...)()
	if err := m.putBlob(ctx, dgst, p.Canonical); err != nil {
		return "", err
	}
	for _, sig := range p.Signatures {
		sd := digest.FromBytes(sig)
		if err := s.driver.PutContent(ctx, mustPath(blobDataPathSpec{digest: sd}), sig); err != nil {
			return "", err
		}
		if err := s.writeLink(ctx, mustPath(manifestSignatureLinkPathSpec{name: m.repo.name, revision: dgst, signature: sd}), sd); err != nil {
			return "", err
		}
	}
	if err := s.writeLink(ctx, mustPath(manifestRevisionLinkPathSpec{name: m.repo.name, revision: dgst}), dgst); err != nil {
		return "", err
	}
	if tag != "" {
		if err := m.repo.pointTag(ctx, tag, dgst); err != nil {
			return "", err
		}
	}
	s.log.Debug("manifest stored", "repository", m.repo.name, "digest", dgst, "tag", tag, "mediaType", p.MediaType)
	return dgst, nil
}

// putBlob stores a manifest's verified bytes as blob dgst. A blob that is
// there already is checked first, bytes and all (a manifest is at most 4
// MiB): verified bytes win, so a re-push heals a blob that was truncated
// or damaged. PutContent replaces it atomically.
func (m *manifestService) putBlob(ctx context.Context, dgst digest.Digest, content []byte) error {
	s := m.repo.s
	blobPath := mustPath(blobDataPathSpec{digest: dgst})
	fi, err := s.driver.Stat(ctx, blobPath)
	switch {
	case isNotFound(err):
	case err != nil:
		return err
	case !fi.IsDir && fi.Size == int64(len(content)):
		stored, err := s.driver.GetContent(ctx, blobPath)
		if err != nil && !isNotFound(err) {
			return err
		}
		if err == nil && bytes.Equal(stored, content) {
			return nil
		}
		fallthrough
	default:
		s.log.Warn("replacing a damaged manifest blob with verified bytes", "digest", dgst, "stored_size", fi.Size, "size", len(content))
	}
	return s.driver.PutContent(ctx, blobPath, content)
}

// checkReferences collects a problem for every blob the manifest needs that
// is not linked here (or whose data is gone) and every child manifest that
// is not a revision here. Only driver failures are returned as err.
func (m *manifestService) checkReferences(ctx context.Context, p *parsedManifest) (problems []error, err error) {
	layers := m.repo.Layers()
	seen := map[digest.Digest]bool{}
	for _, b := range p.Blobs {
		if seen[b] {
			continue
		}
		seen[b] = true
		if _, err := layers.Stat(ctx, b); err != nil {
			// A link that stays corrupt links nothing: pushing the blob
			// again rewrites it.
			var bad *CorruptLinkError
			if !errors.Is(err, ErrBlobUnknown) && !isInvalidInput(err) && !errors.As(err, &bad) {
				return nil, err
			}
			problems = append(problems, &ManifestBlobUnknownError{Digest: b})
		}
	}
	seen = map[digest.Digest]bool{}
	for _, c := range p.Manifests {
		if seen[c] {
			continue
		}
		seen[c] = true
		ok, err := m.Exists(ctx, c)
		if err != nil {
			if isInvalidInput(err) {
				problems = append(problems, &ManifestChildUnknownError{Digest: c})
				continue
			}
			return nil, err
		}
		if !ok {
			problems = append(problems, &ManifestChildUnknownError{Digest: c})
		}
	}
	return problems, nil
}

// Delete implements ManifestService, with the registry's semantics: the
// tags that point at the revision go with it (first, so no tag is ever left
// pointing at a missing revision); other tags lose the revision from their
// index; blob data stays for gc.
func (m *manifestService) Delete(ctx context.Context, dgst digest.Digest) error {
	s := m.repo.s
	dir, err := pathFor(manifestRevisionPathSpec{name: m.repo.name, revision: dgst})
	if err != nil {
		return err
	}
	ok, err := m.Exists(ctx, dgst)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrManifestUnknown, dgst, m.repo.name)
	}
	if err := m.untagRevision(ctx, dgst, true); err != nil {
		return err
	}
	if err := s.driver.Delete(ctx, dir); err != nil && !isNotFound(err) {
		return err
	}
	// A tag written since the scan above (pointTag checks the revision
	// only after writing the tag) is caught here.
	if err := m.untagRevision(ctx, dgst, false); err != nil {
		return err
	}
	s.manifests.Remove(m.cacheKey(dgst))
	s.log.Debug("manifest deleted", "repository", m.repo.name, "digest", dgst)
	return nil
}

// untagRevision removes the tags pointing at dgst and, with cleanIndex, the
// revision from the index of every other tag. A tag whose link stays
// unreadable points at nothing: it is left alone (and logged).
func (m *manifestService) untagRevision(ctx context.Context, dgst digest.Digest, cleanIndex bool) error {
	s := m.repo.s
	tags := m.repo.Tags()
	names, err := tags.List(ctx)
	if err != nil {
		return err
	}
	for _, t := range names {
		cur, err := tags.Get(ctx, t)
		switch {
		case err == nil && cur == dgst:
			if err := tags.Untag(ctx, t); err != nil && !errors.Is(err, ErrTagUnknown) {
				return err
			}
			continue
		case err != nil && !errors.Is(err, ErrTagUnknown) && !s.skipBadLink(err):
			return err
		}
		if !cleanIndex {
			continue
		}
		entry := mustPath(manifestTagIndexEntryPathSpec{name: m.repo.name, tag: t, revision: dgst})
		if err := s.driver.Delete(ctx, entry); err != nil && !isNotFound(err) {
			return err
		}
	}
	return nil
}

// List implements ManifestService.
func (m *manifestService) List(ctx context.Context) ([]digest.Digest, error) {
	return m.repo.s.listLinked(ctx, mustPath(manifestRevisionsPathSpec{name: m.repo.name}))
}

// Linked implements ManifestService.
func (m *manifestService) Linked(ctx context.Context) ([]Linked, error) {
	return m.repo.s.listLinkedTimes(ctx, mustPath(manifestRevisionsPathSpec{name: m.repo.name}))
}

// LinkTime implements ManifestService.
func (m *manifestService) LinkTime(ctx context.Context, dgst digest.Digest) (time.Time, error) {
	p, err := pathFor(manifestRevisionLinkPathSpec{name: m.repo.name, revision: dgst})
	if err != nil {
		return time.Time{}, err
	}
	t, err := m.repo.s.linkTime(ctx, p)
	if isNotFound(err) {
		return t, fmt.Errorf("%w: %s in %s", ErrManifestUnknown, dgst, m.repo.name)
	}
	return t, err
}
