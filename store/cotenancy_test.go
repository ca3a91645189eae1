package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
)

// The tests in this file put the store beside another writer of the same
// storage (the registry, another mount, a crash), as issue 11 describes.

// twoRevisions pushes two manifests into r and returns their digests.
func twoRevisions(t *testing.T, r Repository, cfg digest.Digest, layers []digest.Digest) (digest.Digest, digest.Digest) {
	t.Helper()
	ctx := context.Background()
	a, err := r.Manifests().Put(ctx, schema2(cfg, layers[0]), "", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Manifests().Put(ctx, schema2(cfg, layers[1]), "", "")
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// badLinks returns the store's Stats.BadLinks.
func badLinks(t *testing.T, s Store) int64 {
	t.Helper()
	sr, ok := s.(StatsReporter)
	if !ok {
		t.Fatal("the store reports no Stats")
	}
	return sr.Stats().BadLinks
}

// inPlaceRewriter rewrites one link the way registry 2.8.2's filesystem
// driver does: truncate, then write, so a reader can see it empty or short.
type inPlaceRewriter func(content []byte) error

// rewriterFor returns the in-place rewriter of link p on td: on disk for
// the filesystem driver (open, truncate, write in two parts), through a
// non-appending Writer for the in-memory one (which shows the object empty
// from the start, then growing).
func rewriterFor(t *testing.T, td *testDriver, p string) inPlaceRewriter {
	pause := func() { time.Sleep(100 * time.Microsecond) }
	if td.root != "" {
		full := filepath.Join(td.root, filepath.FromSlash(p))
		return func(content []byte) error {
			f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := f.Truncate(0); err != nil {
				return err
			}
			pause()
			if _, err := f.Write(content[:20]); err != nil {
				return err
			}
			pause()
			_, err = f.Write(content[20:])
			return err
		}
	}
	return func(content []byte) error {
		w, err := td.Writer(context.Background(), p, false)
		if err != nil {
			return err
		}
		pause()
		if _, err := w.Write(content[:20]); err != nil {
			return err
		}
		pause()
		if _, err := w.Write(content[20:]); err != nil {
			return err
		}
		return w.Close()
	}
}

// TestTagRewrittenInPlace re-tags back and forth by rewriting the tag's
// current link in place, as the registry does, while readers get the tag,
// read the manifest through it and list the tags. No reader may ever see an
// error: a short or empty read is re-read.
func TestTagRewrittenInPlace(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, "")
			s := newStore(t, td)
			r := repo(t, s, "r")
			cfg := pushBlob(t, r, []byte(`{"architecture":"amd64","os":"linux"}`))
			l1 := pushBlob(t, r, []byte("layer one"))
			l2 := pushBlob(t, r, []byte("layer two"))
			a, b := twoRevisions(t, r, cfg, []digest.Digest{l1, l2})
			ctx := context.Background()
			if err := r.Tags().Tag(ctx, "flap", a); err != nil {
				t.Fatal(err)
			}
			if err := r.Tags().Tag(ctx, "steady", a); err != nil {
				t.Fatal(err)
			}
			rewrite := rewriterFor(t, td, mustPath(manifestTagCurrentLinkPathSpec{name: "r", tag: "flap"}))

			// The registry re-tags now and then; between two rewrites the
			// link is whole for a while (10 ms here), which is what lets a
			// re-read get past a torn one.
			const rewrites = 40
			done := make(chan struct{})
			t.Cleanup(func() { <-done })
			go func() {
				defer close(done)
				for i := 0; i < rewrites; i++ {
					to := a
					if i%2 == 0 {
						to = b
					}
					if err := rewrite([]byte(to.String())); err != nil {
						t.Error(err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()

			reads, gets := 0, 0
			for running := true; running; reads++ {
				select {
				case <-done:
					running = false
				default:
				}
				got, err := r.Tags().Get(ctx, "flap")
				if err != nil {
					t.Fatalf("read %d: Get = %v", reads, err)
				}
				if got != a && got != b {
					t.Fatalf("read %d: Get = %s, want one of the two revisions", reads, got)
				}
				tags, err := r.Tags().List(ctx)
				if err != nil || !slices.Equal(tags, []string{"flap", "steady"}) {
					t.Fatalf("read %d: List = %v, %v", reads, tags, err)
				}
				if reads%10 == 0 {
					gets++
					if _, _, err := r.Manifests().Get(ctx, got); err != nil {
						t.Fatalf("read %d: manifest Get = %v", reads, err)
					}
				}
			}
			if n := badLinks(t, s); n != 0 {
				t.Errorf("BadLinks = %d, want 0", n)
			}
			calls := s.(StatsReporter).Stats().DriverCalls
			t.Logf("%d rewrites, %d reads: %d GetContent calls for the tag and %d manifest Gets and the re-reads of torn links",
				rewrites, reads, calls["GetContent"], gets)
		})
	}
}

// tornDriver returns the first few reads of a path cut short, as a link
// caught in the middle of an in-place rewrite reads.
type tornDriver struct {
	driver.StorageDriver
	mu sync.Mutex
	// torn counts the reads of each path still to be cut. Guarded by mu.
	torn  map[string]int
	reads atomic.Int64
}

func (d *tornDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	b, err := d.StorageDriver.GetContent(ctx, p)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.torn[p] > 0 {
		d.torn[p]--
		d.reads.Add(1)
		return b[:len(b)/3], err
	}
	return b, err
}

// TestTornLinkRereadsAreBounded: a link read short a few times is read
// again until it reads whole; one that stays short is a *CorruptLinkError
// after five reads, counted, and never "not found" or "invalid".
func TestTornLinkRereadsAreBounded(t *testing.T) {
	td := &tornDriver{StorageDriver: drivers[0].new(t, ""), torn: map[string]int{}}
	s := newStore(t, td)
	r := repo(t, s, "r")
	cfg := pushBlob(t, r, []byte(`{}`))
	l1 := pushBlob(t, r, []byte("one"))
	l2 := pushBlob(t, r, []byte("two"))
	a, _ := twoRevisions(t, r, cfg, []digest.Digest{l1, l2})
	ctx := context.Background()
	if err := r.Tags().Tag(ctx, "t", a); err != nil {
		t.Fatal(err)
	}
	p := mustPath(manifestTagCurrentLinkPathSpec{name: "r", tag: "t"})

	td.mu.Lock()
	td.torn[p] = len(linkRereads) // every read but the last
	td.mu.Unlock()
	if got, err := r.Tags().Get(ctx, "t"); err != nil || got != a {
		t.Fatalf("Get after %d torn reads = %s, %v; want %s", len(linkRereads), got, err, a)
	}

	td.mu.Lock()
	td.torn[p] = 100
	td.mu.Unlock()
	before := td.reads.Load()
	_, err := r.Tags().Get(ctx, "t")
	var bad *CorruptLinkError
	if !errors.As(err, &bad) || bad.Path != p {
		t.Fatalf("Get of a link that stays torn = %v (%T), want a *CorruptLinkError for %s", err, err, p)
	}
	if errors.Is(err, ErrTagUnknown) || errors.Is(err, ErrInvalidDigest) || errors.Is(err, ErrNotFound) {
		t.Errorf("a corrupt link reads as %v: not found or invalid", err)
	}
	if n := td.reads.Load() - before; n != int64(len(linkRereads))+1 {
		t.Errorf("a link that stays torn was read %d times, want %d", n, len(linkRereads)+1)
	}
	if n := badLinks(t, s); n != 1 {
		t.Errorf("BadLinks = %d, want 1", n)
	}
}

// TestEmptyLinksSkippedInListings: the zero-byte link a crash of its writer
// leaves hides nothing else. The tag or revision is left out of its
// listing, counted, and reading it is a *CorruptLinkError; deleting a
// revision still works beside it.
func TestEmptyLinksSkippedInListings(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, "")
			s := newStore(t, td)
			r := repo(t, s, "r")
			cfg := pushBlob(t, r, []byte(`{}`))
			l1 := pushBlob(t, r, []byte("one"))
			l2 := pushBlob(t, r, []byte("two"))
			a, b := twoRevisions(t, r, cfg, []digest.Digest{l1, l2})
			ctx := context.Background()
			for tag, d := range map[string]digest.Digest{"good": a, "crashed": a, "other": b} {
				if err := r.Tags().Tag(ctx, tag, d); err != nil {
					t.Fatal(err)
				}
			}
			c, err := r.Manifests().Put(ctx, schema2(cfg, l1, l2), "", "")
			if err != nil {
				t.Fatal(err)
			}
			if err := td.PutContent(ctx, mustPath(manifestTagCurrentLinkPathSpec{name: "r", tag: "crashed"}), nil); err != nil {
				t.Fatal(err)
			}
			if err := td.PutContent(ctx, mustPath(manifestRevisionLinkPathSpec{name: "r", revision: c}), nil); err != nil {
				t.Fatal(err)
			}

			tags, err := r.Tags().List(ctx)
			if err != nil || !slices.Equal(tags, []string{"good", "other"}) {
				t.Errorf("Tags().List = %v, %v; want [good other]", tags, err)
			}
			revs, err := r.Manifests().List(ctx)
			want := []digest.Digest{a, b}
			slices.Sort(want)
			if err != nil || !slices.Equal(revs, want) {
				t.Errorf("Manifests().List = %v, %v; want %v", revs, err, want)
			}
			if n := badLinks(t, s); n != 2 {
				t.Errorf("BadLinks = %d, want 2 (one tag, one revision)", n)
			}
			var bad *CorruptLinkError
			if _, err := r.Tags().Get(ctx, "crashed"); !errors.As(err, &bad) {
				t.Errorf("Get of the empty tag link = %v, want a *CorruptLinkError", err)
			}
			if _, _, err := r.Manifests().Get(ctx, c); !errors.As(err, &bad) {
				t.Errorf("Get of the revision with an empty link = %v, want a *CorruptLinkError", err)
			}
			if err := r.Manifests().Delete(ctx, b); err != nil {
				t.Fatalf("Delete beside a corrupt tag: %v", err)
			}
			if tags, _ := r.Tags().List(ctx); !slices.Equal(tags, []string{"good"}) {
				t.Errorf("after deleting %s, tags = %v, want [good]", b, tags)
			}
			// Tagging again rewrites the link whole.
			if err := r.Tags().Tag(ctx, "crashed", a); err != nil {
				t.Fatal(err)
			}
			if tags, _ := r.Tags().List(ctx); !slices.Equal(tags, []string{"crashed", "good"}) {
				t.Errorf("after re-tagging, tags = %v, want [crashed good]", tags)
			}
		})
	}
}

// putHook runs after after every PutContent that succeeded.
type putHook struct {
	driver.StorageDriver
	after func(p string)
}

func (h *putHook) PutContent(ctx context.Context, p string, b []byte) error {
	if err := h.StorageDriver.PutContent(ctx, p, b); err != nil {
		return err
	}
	h.after(p)
	return nil
}

// deleteHook runs before before every Delete.
type deleteHook struct {
	driver.StorageDriver
	before func(p string)
}

func (h *deleteHook) Delete(ctx context.Context, p string) error {
	h.before(p)
	return h.StorageDriver.Delete(ctx, p)
}

// TestTagOfRevisionDeletedMeanwhile: another writer deletes the revision
// (tags first, then the revision, as the registry does) just after this
// store wrote the tag. The tag must not stay behind pointing at nothing:
// it is removed again, and the write fails. A tag re-pointed by someone
// else meanwhile is left alone.
func TestTagOfRevisionDeletedMeanwhile(t *testing.T) {
	for _, repoint := range []bool{false, true} {
		name := "deleted"
		if repoint {
			name = "deleted-and-repointed"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			mem := drivers[0].new(t, "")
			hook := &putHook{StorageDriver: mem, after: func(string) {}}
			s := newStore(t, hook)
			other := newStore(t, mem) // the other writer
			r := repo(t, s, "r")
			cfg := pushBlob(t, r, []byte(`{}`))
			l1 := pushBlob(t, r, []byte("one"))
			l2 := pushBlob(t, r, []byte("two"))
			a, b := twoRevisions(t, r, cfg, []digest.Digest{l1, l2})
			current := mustPath(manifestTagCurrentLinkPathSpec{name: "r", tag: "t"})
			var once sync.Once
			hook.after = func(p string) {
				if p != current {
					return
				}
				once.Do(func() {
					revDir := mustPath(manifestRevisionPathSpec{name: "r", revision: a})
					if err := mem.Delete(ctx, revDir); err != nil {
						t.Error(err)
					}
					if repoint {
						if err := mem.PutContent(ctx, current, []byte(b.String())); err != nil {
							t.Error(err)
						}
					}
				})
			}
			err := r.Tags().Tag(ctx, "t", a)
			if !errors.Is(err, ErrManifestUnknown) {
				t.Fatalf("Tag of a revision deleted meanwhile = %v, want ErrManifestUnknown", err)
			}
			got, gerr := repo(t, other, "r").Tags().Get(ctx, "t")
			switch {
			case repoint && (gerr != nil || got != b):
				t.Errorf("a tag re-pointed by another writer: Get = %s, %v; want %s", got, gerr, b)
			case !repoint && !errors.Is(gerr, ErrTagUnknown):
				t.Errorf("tag pointing at the deleted revision: Get = %s, %v; want it removed", got, gerr)
			}
		})
	}
}

// TestDeleteRechecksTags: a tag written by another writer after the
// delete's scan of the tags, but before the revision is removed, goes with
// the revision.
func TestDeleteRechecksTags(t *testing.T) {
	ctx := context.Background()
	mem := drivers[0].new(t, "")
	hook := &deleteHook{StorageDriver: mem, before: func(string) {}}
	s := newStore(t, hook)
	r := repo(t, s, "r")
	cfg := pushBlob(t, r, []byte(`{}`))
	l1 := pushBlob(t, r, []byte("one"))
	l2 := pushBlob(t, r, []byte("two"))
	a, _ := twoRevisions(t, r, cfg, []digest.Digest{l1, l2})
	revDir := mustPath(manifestRevisionPathSpec{name: "r", revision: a})
	hook.before = func(p string) {
		if p != revDir {
			return
		}
		// The other writer's tag: its check of the revision passed.
		other := repo(t, newStore(t, mem), "r")
		if err := other.Tags().Tag(ctx, "late", a); err != nil {
			t.Error(err)
		}
	}
	if err := r.Manifests().Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Tags().Get(ctx, "late"); !errors.Is(err, ErrTagUnknown) {
		t.Errorf("tag written during the delete: Get = %v, want it gone with the revision", err)
	}
}
