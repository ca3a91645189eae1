package store

import (
	"context"
	"fmt"
	"sort"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
)

// tagService is the TagService of one repository.
type tagService struct {
	repo *repository
}

// Get implements TagService.
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

// Tag implements TagService.
func (t *tagService) Tag(ctx context.Context, tag string, dgst digest.Digest) error {
	if err := checkTag(tag); err != nil {
		return err
	}
	ok, err := (&manifestService{repo: t.repo}).Exists(ctx, dgst)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrManifestUnknown, dgst, t.repo.name)
	}
	return t.point(ctx, tag, dgst)
}

// point records dgst in the tag's index, then makes it the tag's current
// revision: the index never lacks what current names.
func (t *tagService) point(ctx context.Context, tag string, dgst digest.Digest) error {
	s := t.repo.s
	if err := s.writeLink(ctx, mustPath(manifestTagIndexEntryLinkPathSpec{name: t.repo.name, tag: tag, revision: dgst}), dgst); err != nil {
		return err
	}
	if err := s.writeLink(ctx, mustPath(manifestTagCurrentLinkPathSpec{name: t.repo.name, tag: tag}), dgst); err != nil {
		return err
	}
	s.log.Debug("tagged", "repository", t.repo.name, "tag", tag, "digest", dgst)
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
// index directories does it.
func (t *tagService) List(ctx context.Context) ([]string, error) {
	dir := mustPath(manifestTagsPathSpec{name: t.repo.name})
	var out []string
	err := t.repo.s.driver.Walk(ctx, dir, func(fi driver.FileInfo) error {
		l, err := ParsePath(fi.Path)
		switch {
		case err != nil:
			return skipIfDir(fi)
		case l.Kind == PathTagCurrentLink && !fi.IsDir:
			out = append(out, l.Tag)
		case fi.IsDir && (l.Kind == PathTag || l.Kind == PathTagCurrent):
			return nil
		}
		return skipIfDir(fi)
	})
	if err != nil && !isNotFound(err) {
		return nil, err
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
