package fsck

import (
	"context"
	"fmt"
	"path"
	"sort"
	"sync"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store"
)

// repair applies the problems' fixes, has a driver.Janitor clean its
// leftovers, then removes the directories left with nothing in them.
// Every link is read again just before it is changed, so one rewritten
// since the check stays as its writer left it.
func (c *checker) repair(ctx context.Context) error {
	leftovers := false
	for i := range c.rep.Problems {
		p := &c.rep.Problems[i]
		var err error
		switch {
		case p.Kind == Leftover:
			leftovers = true
		case p.Kind == OrphanStagedWrite:
			err = c.abortStaged(ctx, p)
		case p.Fix == FixRewrite:
			err = c.rewrite(ctx, p)
		case p.Fix == FixRemove:
			err = c.remove(ctx, p)
		}
		if err != nil {
			return err
		}
	}
	if leftovers {
		if err := c.d.(driver.Janitor).Clean(ctx); err != nil {
			return fmt.Errorf("fsck: cleaning the driver's leftovers: %w", err)
		}
		for i := range c.rep.Problems {
			if p := &c.rep.Problems[i]; p.Kind == Leftover {
				p.Repaired = true
				c.changed(&c.rep.Removed, p.Path, string(p.Kind))
			}
		}
	}
	return c.removeEmptyDirs(ctx)
}

// abortStaged aborts an orphan staged write. The blob at its key, if any,
// is another object and stays.
func (c *checker) abortStaged(ctx context.Context, p *Problem) error {
	if err := c.d.(driver.StageLister).AbortStagedWrite(ctx, p.staged); err != nil {
		return fmt.Errorf("fsck: aborting staged write %s at %s: %w", p.staged.ID, p.Path, err)
	}
	p.Repaired = true
	c.changed(&c.rep.Removed, p.Path, string(p.Kind)+" "+p.staged.ID)
	return nil
}

// rewrite writes the content a link must have, unless it has it now.
func (c *checker) rewrite(ctx context.Context, p *Problem) error {
	b, err := c.d.GetContent(ctx, p.Path)
	if err != nil {
		if driver.IsNotFound(err) {
			return nil // removed since: nothing to rewrite
		}
		return err
	}
	if d, ok := store.ParseLink(b); ok && d == p.rewrite {
		return nil // rewritten since
	}
	if err := c.d.PutContent(ctx, p.Path, store.LinkContent(p.rewrite)); err != nil {
		return fmt.Errorf("fsck: rewriting %s: %w", p.Path, err)
	}
	p.Repaired = true
	c.changed(&c.rep.Rewritten, p.Path, string(p.Kind))
	return nil
}

// remove removes a dangling link if it still is one.
func (c *checker) remove(ctx context.Context, p *Problem) error {
	b, err := c.d.GetContent(ctx, p.Path)
	if err != nil {
		if driver.IsNotFound(err) {
			return nil
		}
		return err
	}
	d, ok := store.ParseLink(b)
	if !ok || d != p.Digest {
		return nil // changed since: not what was found
	}
	if exists, err := c.blobExists(ctx, d); err != nil || exists {
		return err
	}
	if err := c.d.Delete(ctx, p.Path); err != nil && !driver.IsNotFound(err) {
		return fmt.Errorf("fsck: removing %s: %w", p.Path, err)
	}
	p.Repaired = true
	c.changed(&c.rep.Removed, p.Path, string(p.Kind))
	return nil
}

func (c *checker) changed(list *[]Change, p, reason string) {
	*list = append(*list, Change{Path: p, Reason: reason})
	c.opts.Logger.Info("fsck repaired", "path", p, "reason", reason)
}

// prunable are the directories a repair removes when nothing is below
// them: those of blobs, layers, revisions and tags, never the directories
// holding them (an empty _layers/sha256 still makes a repository) nor
// anything of an upload.
var prunable = map[store.PathKind]bool{
	store.PathBlobPrefix: true, store.PathBlob: true,
	store.PathLayer:    true,
	store.PathRevision: true, store.PathSignaturesRoot: true, store.PathSignatures: true, store.PathSignature: true,
	store.PathTag: true, store.PathTagCurrent: true, store.PathTagIndexRoot: true, store.PathTagIndex: true, store.PathTagIndexEntry: true,
}

// removeEmptyDirs walks the tree again and removes the highest prunable
// directories that hold no object anywhere below them. Drivers without
// real directories (S3, in memory) never have any.
func (c *checker) removeEmptyDirs(ctx context.Context) error {
	var (
		mu   sync.Mutex
		dirs []string
		full = map[string]bool{}
	)
	fn := func(e store.WalkEntry) error {
		mu.Lock()
		defer mu.Unlock()
		if e.Err == nil && e.IsDir && !e.Symlink {
			if prunable[e.Location.Kind] {
				dirs = append(dirs, e.Path)
			}
			return nil
		}
		// An object, or anything the walk did not look into: what holds
		// it is not empty.
		for p := e.Path; !full[p] && p != "/"; p = path.Dir(p) {
			full[p] = true
		}
		return nil
	}
	opts := store.WalkOptions{Workers: c.opts.Workers}
	if err := store.WalkBlobs(ctx, c.d, opts, fn); err != nil {
		return err
	}
	if err := store.WalkRepositories(ctx, c.d, opts, fn); err != nil {
		return err
	}
	sort.Strings(dirs)
	removed := map[string]bool{}
	for _, dir := range dirs {
		parent := path.Dir(dir)
		if removed[parent] {
			removed[dir] = true // went with its parent
			continue
		}
		if full[dir] {
			continue
		}
		if err := c.d.Delete(ctx, dir); err != nil && !driver.IsNotFound(err) {
			return fmt.Errorf("fsck: removing empty directory %s: %w", dir, err)
		}
		removed[dir] = true
		c.changed(&c.rep.Removed, dir, ReasonEmptyDirectory)
	}
	return nil
}
