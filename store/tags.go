package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
)

// tagService is the TagService of one repository.
type tagService struct {
	repo *repository
}

// Get implements TagService. A link caught in the middle of an in-place
// rewrite is re-read; one that stays bad is a *CorruptLinkError.
func (t *tagService) Get(ctx context.Context, tag string) (digest.Digest, error) {
	p, err := pathFor(manifestTagCurrentLinkPathSpec{name: t.repo.name, tag: tag})
	if err != nil {
		return "", err
	}
	d, err := t.repo.s.readLink(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return "", fmt.Errorf("%w: %s:%s", ErrTagUnknown, t.repo.name, tag)
		}
		return "", err
	}
	return d, nil
}

// LinkTime implements TagService.
func (t *tagService) LinkTime(ctx context.Context, tag string) (time.Time, error) {
	p, err := pathFor(manifestTagCurrentLinkPathSpec{name: t.repo.name, tag: tag})
	if err != nil {
		return time.Time{}, err
	}
	mt, err := t.repo.s.linkTime(ctx, p)
	if isNotFound(err) {
		return mt, fmt.Errorf("%w: %s:%s", ErrTagUnknown, t.repo.name, tag)
	}
	return mt, err
}

// Tag implements TagService.
func (t *tagService) Tag(ctx context.Context, tag string, dgst digest.Digest) error {
	if err := checkTag(tag); err != nil {
		return err
	}
	ok, err := t.repo.revisionExists(ctx, dgst)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrManifestUnknown, dgst, t.repo.name)
	}
	return t.repo.pointTag(ctx, tag, dgst)
}

// pointTag records dgst in the tag's index, then makes it the tag's current
// revision: the index never lacks what current names. Then it checks that
// the revision is still there: a delete by another writer (the registry,
// another mount) that listed the tags before this one was written would
// leave the tag pointing at nothing. In that case the tag is removed again,
// unless it was re-pointed since, and the write fails. A delete by this
// store re-checks the tags after removing the revision, so between the two
// checks no interleaving leaves such a tag.
func (r *repository) pointTag(ctx context.Context, tag string, dgst digest.Digest) error {
	s := r.s
	if err := s.writeLink(ctx, mustPath(manifestTagIndexEntryLinkPathSpec{name: r.name, tag: tag, revision: dgst}), dgst); err != nil {
		return err
	}
	current := mustPath(manifestTagCurrentLinkPathSpec{name: r.name, tag: tag})
	if err := s.writeLink(ctx, current, dgst); err != nil {
		return err
	}
	ok, err := r.revisionExists(ctx, dgst)
	if err != nil {
		return err
	}
	if !ok {
		removed := false
		if cur, err := s.readLink(ctx, current); err == nil && cur == dgst {
			err := s.driver.Delete(ctx, mustPath(manifestTagPathSpec{name: r.name, tag: tag}))
			if err != nil && !isNotFound(err) {
				return fmt.Errorf("store: tag %s:%s points at revision %s, deleted meanwhile, and could not be removed: %w", r.name, tag, dgst, err)
			}
			removed = true
		}
		s.log.Warn("revision deleted while tagging", "repository", r.name, "tag", tag, "digest", dgst, "tag_removed", removed)
		return fmt.Errorf("%w: %s in %s was deleted by another writer while tag %s was pointed at it", ErrManifestUnknown, dgst, r.name, tag)
	}
	s.log.Debug("tagged", "repository", r.name, "tag", tag, "digest", dgst)
	return nil
}

// Untag implements TagService: the tag's directory goes, index included, as
// the registry's tag delete does.
func (t *tagService) Untag(ctx context.Context, tag string) error {
	p, err := pathFor(manifestTagPathSpec{name: t.repo.name, tag: tag})
	if err != nil {
		return err
	}
	if err := t.repo.s.driver.Delete(ctx, p); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: %s:%s", ErrTagUnknown, t.repo.name, tag)
		}
		return err
	}
	t.repo.s.log.Debug("untagged", "repository", t.repo.name, "tag", tag)
	return nil
}

// List implements TagService. A tag counts when its current link exists
// (a directory alone, e.g. left by another tool, is no tag); directories
// whose names are not valid tags are skipped. One Walk that skips the tags'
// index directories does it. A current link whose size is not a digest's
// is re-read (it may be being rewritten); one that stays bad, such as the
// empty link a crash of its writer leaves, is left out, logged and counted
// (Stats.BadLinks), so that it never hides the other tags.
func (t *tagService) List(ctx context.Context) ([]string, error) {
	s := t.repo.s
	dir := mustPath(manifestTagsPathSpec{name: t.repo.name})
	var out, suspect []string
	err := s.driver.Walk(ctx, dir, func(fi driver.FileInfo) error {
		l, err := ParsePath(fi.Path)
		switch {
		case err != nil:
			return skipIfDir(fi)
		case l.Kind == PathTagCurrentLink && !fi.IsDir:
			if fi.Size != int64(linkSize) {
				suspect = append(suspect, l.Tag)
			} else {
				out = append(out, l.Tag)
			}
		case fi.IsDir && (l.Kind == PathTag || l.Kind == PathTagCurrent):
			return nil
		}
		return skipIfDir(fi)
	})
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	for _, tag := range suspect {
		_, err := t.Get(ctx, tag)
		switch {
		case err == nil:
			out = append(out, tag)
		case errors.Is(err, ErrTagUnknown):
		case s.skipBadLink(err):
		default:
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}

// skipIfDir is the WalkFn result that does not descend into fi.
func skipIfDir(fi driver.FileInfo) error {
	if fi.IsDir {
		return driver.ErrSkipDir
	}
	return nil
}
