// Package fsck checks a registry's storage, as `regfs fsck` does: every
// blob re-hashed, every link file well formed and pointing at a blob,
// every tag's revision present, uploads listed with their ages, and
// everything in the tree that has no place in the layout (unexpected
// entries, symbolic links, a driver's crash leftovers) reported with its
// path.
//
// It reads the tree with store's layout walker (store.WalkBlobs,
// store.WalkRepositories), the one gc shares, so it never splits a path by
// hand. A repair rewrites what can be recomputed exactly, removes only
// what is provably garbage, and leaves the rest, marked as needing a
// re-push, for a person: see Fix.
package fsck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store"
)

// Defaults of Options.
const (
	// DefaultStaleUploadAge is the age past which an upload is marked stale:
	// a week, the registry's own default for purging uploads.
	DefaultStaleUploadAge = 7 * 24 * time.Hour
	// DefaultWorkers is how many blobs are hashed, and how many subtrees
	// walked, at once. Hashing is I/O-bound on a disk and latency-bound on
	// S3; a few streams keep both busy without flooding either.
	DefaultWorkers = 4
	// DefaultRecheckAfter is how long a finding waits for its second read.
	// The registry rewrites a tag's link in place, so a reader can see it
	// empty or short for a moment; a link still bad after this long is.
	DefaultRecheckAfter = 100 * time.Millisecond
	// progressEvery is how many bytes of a blob are hashed between two
	// progress calls.
	progressEvery = 1 << 20
)

// Options configures Run.
type Options struct {
	// Repair fixes what can be fixed without losing anything (see Fix).
	// Without it Run only reads.
	Repair bool
	// StaleUploadAge marks uploads started longer ago than it as stale;
	// zero means DefaultStaleUploadAge.
	StaleUploadAge time.Duration
	// Now is the clock upload ages are measured against; nil means
	// time.Now.
	Now func() time.Time
	// Workers is how many blobs are hashed, and subtrees walked, at once;
	// zero means DefaultWorkers.
	Workers int
	// RecheckAfter is how long a bad-looking link or blob waits before it
	// is read again to confirm the finding; zero means
	// DefaultRecheckAfter.
	RecheckAfter time.Duration
	// Progress, when set, is called as blobs are hashed. Calls are
	// serialised, so it need not be safe for concurrent use.
	Progress func(Progress)
	// Logger receives a record per repair; nil means slog.Default().
	Logger *slog.Logger
}

// Progress is how far the blob pass has come.
type Progress struct {
	BlobsDone, BlobsTotal int
	BytesDone, BytesTotal int64
}

// Kind names one kind of problem.
type Kind string

// The problems Run reports.
const (
	// CorruptBlob is blob data that does not hash to its name (read twice).
	CorruptBlob Kind = "corrupt-blob"
	// Unreadable is an object the driver failed to read, or a directory
	// it failed to list; the run goes on without what is below it.
	Unreadable Kind = "unreadable"
	// MalformedLink is a link file that is not exactly
	// "sha256:<64 lowercase hex>" (71 bytes, no newline), read twice.
	MalformedLink Kind = "malformed-link"
	// DanglingLink is a link to a blob whose data is missing.
	DanglingLink Kind = "dangling-link"
	// LinkMismatch is a layer, revision, signature or tag index link
	// whose content names another digest than its directory does.
	LinkMismatch Kind = "link-mismatch"
	// TagRevisionMissing is a tag whose current link names a digest that
	// is not a revision of the repository.
	TagRevisionMissing Kind = "tag-revision-missing"
	// MalformedUpload is an upload whose startedat or regfs-expected file
	// cannot be parsed.
	MalformedUpload Kind = "malformed-upload"
	// UnexpectedEntry is an object or directory where the layout has no
	// place for it (a blob directory under the wrong prefix, a name that
	// is not a digest where one is expected).
	UnexpectedEntry Kind = "unexpected-entry"
	// Symlink is a symbolic link in the tree. regfs never follows one
	// (it could lead out of the storage root); the registry would.
	Symlink Kind = "symlink"
	// Leftover is what a driver left behind after a crash (trash not yet
	// emptied, staging files): hidden from every listing, it only takes
	// space.
	Leftover Kind = "leftover"
	// OrphanStagedWrite is a staged write at a blob's key (S3: a pending
	// multipart upload, see driver.Stager) that no upload's regfs-staged
	// record names: its upload was removed (a registry's purge) or a crash
	// came between its start and its first record. Hidden from every
	// listing, it only takes space; a repair aborts it.
	OrphanStagedWrite Kind = "orphan-staged-write"
)

// stagedGrace is how old a staged write must be before a check takes it
// for an orphan: one younger may be starting now, its record not yet
// written.
const stagedGrace = time.Hour

// Fix says what a repair does about a problem.
type Fix string

// The fixes.
const (
	// FixNone: nothing; a person decides (an unreadable object, an
	// unexpected entry, a symlink, a malformed upload).
	FixNone Fix = ""
	// FixRewrite: the link is rewritten with the content it must have,
	// which is known exactly: the digest its directory is named by, or
	// for a tag's current link, its own digest without the whitespace
	// around it.
	FixRewrite Fix = "rewrite"
	// FixRemove: removed, being provably garbage (a tag index entry of a
	// manifest whose blob is gone and which the tag no longer names; a
	// driver's leftover).
	FixRemove Fix = "remove"
	// FixRepush: kept. What is missing or damaged comes back when the
	// blob or manifest is pushed again (a re-push of the right bytes
	// replaces a corrupt blob); removing the link or tag would only lose
	// the name.
	FixRepush Fix = "needs-repush"
)

// Problem is one problem, named by the storage path where it is.
type Problem struct {
	Kind Kind `json:"kind"`
	// Path is the driver path of the object or directory at fault.
	Path string `json:"path"`
	// Repository is set for problems inside a repository.
	Repository string `json:"repository,omitempty"`
	// Digest is the digest the object is named by or points at, when
	// there is one.
	Digest digest.Digest `json:"digest,omitempty"`
	Detail string        `json:"detail"`
	// Fix is what a repair does (or did) about it.
	Fix Fix `json:"fix,omitempty"`
	// Repaired is set when a repair rewrote or removed the object.
	Repaired bool `json:"repaired,omitempty"`
	// rewrite is the content FixRewrite writes.
	rewrite digest.Digest
	// staged is the write an OrphanStagedWrite repair aborts.
	staged driver.StagedWrite
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s %s: %s", p.Kind, p.Path, p.Detail)
	switch {
	case p.Repaired && p.Fix == FixRewrite:
		s += " (rewritten)"
	case p.Repaired:
		s += " (removed)"
	case p.Fix == FixRepush:
		s += " (needs a re-push)"
	}
	return s
}

// Upload is an upload in progress, as Run lists it.
type Upload struct {
	Repository string `json:"repository"`
	ID         string `json:"id"`
	// Path is the driver path of the upload's directory.
	Path string `json:"path"`
	// Expected is the digest a regfs upload must hash to; empty for an
	// upload another writer (the registry) started.
	Expected digest.Digest `json:"expected,omitempty"`
	Size     int64         `json:"size"`
	// StartedAt is zero when the upload has no readable startedat.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// LastModified is the latest modification time of the upload's
	// directory and of the files in it the check saw: when it was last
	// written. Zero when the driver has no times.
	LastModified time.Time `json:"lastModified,omitzero"`
	// Age is how long ago it started. Without a readable startedat (an
	// upload whose writer died before writing it, or another tool's) it
	// is estimated from LastModified, as gc's --upload-age ages it, and
	// AgeEstimated is set; zero when neither time is known.
	Age time.Duration `json:"-"`
	// AgeEstimated tells that Age comes from LastModified, not startedat.
	AgeEstimated bool `json:"ageEstimated,omitempty"`
	// AgeSeconds is Age for JSON readers.
	AgeSeconds int64 `json:"ageSeconds"`
	// Stale is set when Age exceeds Options.StaleUploadAge: most likely
	// abandoned, and the registry's upload purging would remove it.
	Stale bool `json:"stale,omitempty"`
}

// Change is one object or directory a repair rewrote or removed.
type Change struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// ReasonEmptyDirectory is the Reason of a removed empty directory.
const ReasonEmptyDirectory = "empty directory"

// Report is what Run found, and with Options.Repair what it changed.
type Report struct {
	Blobs        int   `json:"blobs"`
	BlobBytes    int64 `json:"blobBytes"`
	Repositories int   `json:"repositories"`
	// Links counts every link file read: layer, revision, signature, tag
	// current and tag index links.
	Links    int       `json:"links"`
	Tags     int       `json:"tags"`
	Uploads  []Upload  `json:"uploads"`
	Problems []Problem `json:"problems"`
	// Rewritten lists the links a repair rewrote, Removed what it
	// removed, in order.
	Rewritten []Change `json:"rewritten"`
	Removed   []Change `json:"removed"`
	Repair    bool     `json:"repair"`
	// Elapsed is how long the run took.
	Elapsed time.Duration `json:"-"`
}

// OK tells whether Run found no problem. Stale uploads are not problems:
// they are listed, and purging them is a collector's job, not a repair.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Unrepaired counts the problems still in storage.
func (r *Report) Unrepaired() int {
	n := 0
	for _, p := range r.Problems {
		if !p.Repaired {
			n++
		}
	}
	return n
}

// Repairable counts the problems a repair fixes.
func (r *Report) Repairable() int {
	n := 0
	for _, p := range r.Problems {
		if p.Fix == FixRewrite || p.Fix == FixRemove {
			n++
		}
	}
	return n
}

// Run checks the registry storage on d: it re-hashes every blob
// (streaming, so a blob of any size costs a fixed amount of memory),
// checks that every link file is well formed and points at an existing
// blob, that every tag's current revision is a revision of its
// repository, lists the uploads in progress with their ages, and reports
// every symbolic link, unexpected entry, unreadable directory and (from a
// driver.Janitor) crash leftover. Each problem is reported with its
// storage path.
//
// A finding is confirmed before it is reported: a bad link or blob is read
// again after opts.RecheckAfter, a missing blob or revision is looked up
// again, so Run beside a live registry or mount does not report a link
// being rewritten in place or an object written during the run.
//
// It changes nothing unless opts.Repair is set; then it applies each
// problem's Fix (each object is read again just before, so one rewritten
// since the check stays), removes the directories of the blob store and
// of repositories' layers, revisions and tags that hold nothing, and has
// a driver.Janitor clean its leftovers. A repair never removes blob data,
// revisions, tags or uploads.
//
// The returned error is for a check that could not be completed (the
// context was cancelled); the report holds what was found up to then.
func Run(ctx context.Context, d driver.StorageDriver, opts Options) (*Report, error) {
	if d == nil {
		return nil, errors.New("fsck: nil driver")
	}
	if opts.StaleUploadAge <= 0 {
		opts.StaleUploadAge = DefaultStaleUploadAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.RecheckAfter <= 0 {
		opts.RecheckAfter = DefaultRecheckAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &checker{
		d:       d,
		opts:    opts,
		rep:     &Report{Repair: opts.Repair, Uploads: []Upload{}, Problems: []Problem{}, Rewritten: []Change{}, Removed: []Change{}},
		blobs:   map[digest.Digest]bool{},
		repos:   map[string]*repoState{},
		uploads: map[string]*Upload{},
	}
	start := time.Now()
	err := c.run(ctx)
	c.finish()
	c.rep.Elapsed = time.Since(start)
	return c.rep, err
}

// checker is one run.
type checker struct {
	d    driver.StorageDriver
	opts Options
	rep  *Report
	// blobs holds the digests whose data the blob walk found. Written
	// only by the blob walk, before anything reads it.
	blobs map[digest.Digest]bool
	links atomic.Int64

	// mu guards rep.Problems, repos, uploads, progress and tags.
	mu       sync.Mutex
	repos    map[string]*repoState
	uploads  map[string]*Upload // by upload directory path
	staged   []string           // the uploads' regfs-staged records
	progress Progress
	tags     int
}

// repoState is what the walk learnt of one repository.
type repoState struct {
	// revisions holds the revisions with a link file.
	revisions map[digest.Digest]bool
	// current is each tag's current link, when it names a digest.
	current map[string]currentLink
}

// currentLink is a tag's current link as the walk read it.
type currentLink struct {
	path   string
	target digest.Digest
	// blob tells that the target's blob exists.
	blob bool
}

func (c *checker) run(ctx context.Context) error {
	blobs, err := c.scanBlobs(ctx)
	if err != nil {
		return err
	}
	// Blobs are hashed while the repositories are walked: the links only
	// need the list of blobs, which the scan made.
	var wg sync.WaitGroup
	var hashErr error
	wg.Go(func() { hashErr = c.hashBlobs(ctx, blobs) })
	walkErr := store.WalkRepositories(ctx, c.d, store.WalkOptions{Workers: c.opts.Workers}, func(e store.WalkEntry) error {
		return c.repositoryEntry(ctx, e)
	})
	wg.Wait()
	if err := errors.Join(walkErr, hashErr); err != nil {
		return err
	}
	if err := c.checkTags(ctx); err != nil {
		return err
	}
	c.leftovers(ctx)
	c.orphanStaged(ctx)
	if c.opts.Repair {
		return c.repair(ctx)
	}
	return nil
}

// finish sorts what concurrent walkers found and fills in the counts.
func (c *checker) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	sort.SliceStable(c.rep.Problems, func(i, j int) bool { return c.rep.Problems[i].Path < c.rep.Problems[j].Path })
	now := c.opts.Now()
	for _, up := range c.uploads {
		switch {
		case !up.StartedAt.IsZero():
			up.Age = max(now.Sub(up.StartedAt), 0)
		case !up.LastModified.IsZero():
			up.Age = max(now.Sub(up.LastModified), 0)
			up.AgeEstimated = true
		}
		if up.Age > 0 {
			up.AgeSeconds = int64(up.Age / time.Second)
			up.Stale = up.Age > c.opts.StaleUploadAge
		}
		c.rep.Uploads = append(c.rep.Uploads, *up)
	}
	sort.Slice(c.rep.Uploads, func(i, j int) bool {
		a, b := c.rep.Uploads[i], c.rep.Uploads[j]
		return a.Repository < b.Repository || a.Repository == b.Repository && a.ID < b.ID
	})
	c.rep.Repositories = len(c.repos)
	c.rep.Links = int(c.links.Load())
	c.rep.Tags = c.tags
}

func (c *checker) problem(p Problem) {
	c.mu.Lock()
	c.rep.Problems = append(c.rep.Problems, p)
	c.mu.Unlock()
}

// entryProblem reports what the walker found wrong with an entry itself;
// it tells whether there was something.
func (c *checker) entryProblem(e store.WalkEntry) bool {
	switch {
	case e.Unreadable():
		c.problem(Problem{Kind: Unreadable, Path: e.Path, Repository: e.Location.Repository,
			Detail: fmt.Sprintf("cannot be listed, nothing below it was checked: %v", e.Err)})
	case e.Err != nil:
		c.problem(Problem{Kind: UnexpectedEntry, Path: e.Path, Detail: e.Err.Error()})
	case e.Symlink:
		c.problem(Problem{Kind: Symlink, Path: e.Path, Repository: e.Location.Repository,
			Detail: "a symbolic link in the storage tree; regfs does not follow it"})
	default:
		return false
	}
	return true
}

// blobEntry is one blob data object the blob walk found.
type blobEntry struct {
	digest digest.Digest
	path   string
	size   int64
}

// scanBlobs lists blobs/sha256/<hh>/<hex>/data.
func (c *checker) scanBlobs(ctx context.Context) ([]blobEntry, error) {
	var (
		mu  sync.Mutex
		out []blobEntry
	)
	err := store.WalkBlobs(ctx, c.d, store.WalkOptions{Workers: c.opts.Workers}, func(e store.WalkEntry) error {
		if c.entryProblem(e) {
			if e.Symlink && e.Location.Kind == store.PathBlobData {
				// Not followed, so not hashed; but present, so its
				// links are not reported as dangling too.
				mu.Lock()
				c.blobs[e.Location.Digest] = true
				mu.Unlock()
			}
			return nil
		}
		if e.Location.Kind == store.PathBlobData {
			mu.Lock()
			c.blobs[e.Location.Digest] = true
			out = append(out, blobEntry{digest: e.Location.Digest, path: e.Path, size: e.Size})
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsck: listing blobs: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].digest < out[j].digest })
	c.progress.BlobsTotal = len(out)
	for _, b := range out {
		c.progress.BytesTotal += b.size
	}
	c.rep.Blobs = len(out)
	c.rep.BlobBytes = c.progress.BytesTotal
	return out, nil
}

// hashBlobs re-hashes every blob with opts.Workers streams.
func (c *checker) hashBlobs(ctx context.Context, blobs []blobEntry) error {
	c.report(0, 0)
	work := make(chan blobEntry)
	errs := make(chan error, c.opts.Workers)
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() {
			for b := range work {
				if err := c.checkBlob(ctx, b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for _, b := range blobs {
		select {
		case work <- b:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	if err == nil {
		err = <-errs
	}
	return err
}

// checkBlob checks one blob; only a cancelled context is an error, every
// storage failure is a problem of the blob. A blob that does not hash to
// its name is hashed once more (without progress) before it is reported,
// in case it was replaced meanwhile.
func (c *checker) checkBlob(ctx context.Context, b blobEntry) error {
	defer c.report(1, 0)
	actual, n, err := c.hashBlob(ctx, b, true)
	if err == nil && actual != b.digest {
		if err := sleep(ctx, c.opts.RecheckAfter); err != nil {
			return err
		}
		actual, n, err = c.hashBlob(ctx, b, false)
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case driver.IsNotFound(err):
		// A blob a garbage collector removed since the listing is no problem.
	case err != nil:
		c.problem(Problem{Kind: Unreadable, Path: b.path, Digest: b.digest, Detail: err.Error()})
	case actual != b.digest:
		c.problem(Problem{Kind: CorruptBlob, Path: b.path, Digest: b.digest, Fix: FixRepush,
			Detail: fmt.Sprintf("data hashes to %s (%d bytes)", actual, n)})
	}
	return nil
}

func (c *checker) hashBlob(ctx context.Context, b blobEntry, progress bool) (digest.Digest, int64, error) {
	rc, err := c.d.Reader(ctx, b.path, 0)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	h := sha256.New()
	var w io.Writer = h
	pw := &progressWriter{w: h, c: c}
	if progress {
		w = pw
	}
	n, err := io.Copy(w, rc)
	pw.flush()
	if err != nil {
		return "", n, fmt.Errorf("read failed after %d bytes: %w", n, err)
	}
	return digest.NewDigest(digest.SHA256, h), n, nil
}

// report adds to the progress and calls opts.Progress.
func (c *checker) report(blobs int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.progress.BlobsDone += blobs
	c.progress.BytesDone += bytes
	if c.opts.Progress != nil {
		c.opts.Progress(c.progress)
	}
}

// progressWriter passes bytes to w and reports them every progressEvery
// bytes.
type progressWriter struct {
	w       io.Writer
	c       *checker
	pending int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.pending += int64(n)
	if p.pending >= progressEvery {
		p.flush()
	}
	return n, err
}

func (p *progressWriter) flush() {
	if p.pending > 0 {
		p.c.report(0, p.pending)
		p.pending = 0
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// repo returns the state of a repository; c.mu must be held.
func (c *checker) repo(name string) *repoState {
	r := c.repos[name]
	if r == nil {
		r = &repoState{revisions: map[digest.Digest]bool{}, current: map[string]currentLink{}}
		c.repos[name] = r
	}
	return r
}

// repositoryEntry checks one entry below repositories/. The walker calls
// it from several goroutines, but the entries of one repository in order
// from one: a revision's link before any tag, a tag's current link before
// its index.
func (c *checker) repositoryEntry(ctx context.Context, e store.WalkEntry) error {
	if c.entryProblem(e) {
		return nil
	}
	l := e.Location
	switch l.Kind {
	case store.PathLayersRoot, store.PathManifests, store.PathUploads:
		// A reserved child makes its parent a repository.
		c.mu.Lock()
		c.repo(l.Repository)
		c.mu.Unlock()
	case store.PathLayerLink, store.PathRevisionLink, store.PathSignatureLink, store.PathTagIndexEntryLink, store.PathTagCurrentLink:
		return c.checkLink(ctx, e)
	case store.PathUpload:
		c.mu.Lock()
		c.uploads[e.Path] = &Upload{Repository: l.Repository, ID: l.Upload, Path: e.Path, LastModified: e.ModTime.UTC()}
		c.mu.Unlock()
	case store.PathUploadData:
		c.upload(l, func(up *Upload) { up.Size = e.Size; up.modified(e.ModTime) })
	case store.PathUploadStaged:
		// A staged upload's bytes are in the driver (S3: a multipart
		// upload at the blob's key), which Size does not count; the
		// record's time is when they were last written.
		c.upload(l, func(up *Upload) { up.modified(e.ModTime) })
		c.mu.Lock()
		c.staged = append(c.staged, e.Path)
		c.mu.Unlock()
	case store.PathUploadStartedAt:
		c.upload(l, func(up *Upload) { up.modified(e.ModTime) })
		b, err := c.read(ctx, e)
		if b == nil {
			return err
		}
		t, perr := time.Parse(time.RFC3339, string(b))
		if perr != nil {
			c.problem(Problem{Kind: MalformedUpload, Path: e.Path, Repository: l.Repository,
				Detail: fmt.Sprintf("startedat %s is not an RFC 3339 time", quoteShort(b))})
			return nil
		}
		c.upload(l, func(up *Upload) { up.StartedAt = t.UTC() })
	case store.PathUploadExpected:
		b, err := c.read(ctx, e)
		if b == nil {
			return err
		}
		d, ok := store.ParseLink(b)
		if !ok {
			c.problem(Problem{Kind: MalformedUpload, Path: e.Path, Repository: l.Repository,
				Detail: fmt.Sprintf("expected digest %s is not sha256:<64 lowercase hex>", quoteShort(b))})
			return nil
		}
		c.upload(l, func(up *Upload) { up.Expected = d })
	case store.PathUploadHashStatesRoot:
		// Hash states are not checked: an unreadable one only costs a
		// re-hash on resume.
		c.upload(l, func(up *Upload) { up.modified(e.ModTime) })
		return driver.ErrSkipDir
	}
	return nil
}

// modified moves LastModified to t when t is later.
func (up *Upload) modified(t time.Time) {
	if t.After(up.LastModified) {
		up.LastModified = t.UTC()
	}
}

// upload changes the upload whose file l is.
func (c *checker) upload(l store.Location, change func(*Upload)) {
	l.Kind = store.PathUpload
	p, err := l.Path()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if up := c.uploads[p]; up != nil {
		change(up)
	}
}

// read reads an object the walk found. It returns nil content when the
// object is gone (no problem: a writer removed it) or unreadable (a
// problem, reported); the error is the context's.
func (c *checker) read(ctx context.Context, e store.WalkEntry) ([]byte, error) {
	b, err := c.d.GetContent(ctx, e.Path)
	if err == nil {
		return b, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !driver.IsNotFound(err) {
		c.problem(Problem{Kind: Unreadable, Path: e.Path, Repository: e.Location.Repository, Detail: err.Error()})
	}
	return nil, nil
}

// blobExists tells whether a blob's data exists: found by the blob walk,
// or written since.
func (c *checker) blobExists(ctx context.Context, d digest.Digest) (bool, error) {
	if c.blobs[d] {
		return true, nil
	}
	p, err := store.Location{Kind: store.PathBlobData, Digest: d}.Path()
	if err != nil {
		return false, err
	}
	_, err = c.d.Stat(ctx, p)
	if err == nil {
		return true, nil
	}
	if driver.IsNotFound(err) {
		return false, nil
	}
	return false, err
}

// checkLink reads a link file and reports it when it is malformed (read
// twice), names another digest than its directory, or points at a missing
// blob; it records revisions and tags for checkTags.
func (c *checker) checkLink(ctx context.Context, e store.WalkEntry) error {
	l := e.Location
	b, err := c.read(ctx, e)
	if b == nil {
		return err
	}
	target, ok := store.ParseLink(b)
	if !ok {
		// A registry rewrites a tag's link in place: read it again before
		// calling it malformed.
		if err := sleep(ctx, c.opts.RecheckAfter); err != nil {
			return err
		}
		if b, err = c.read(ctx, e); b == nil {
			return err
		}
		target, ok = store.ParseLink(b)
	}
	c.links.Add(1)
	want := l.LinkTarget()
	if l.Kind == store.PathRevisionLink {
		// A revision whose link is malformed is a revision still: its
		// tags are not reported too.
		c.mu.Lock()
		c.repo(l.Repository).revisions[l.Digest] = true
		c.mu.Unlock()
	}
	if l.Kind == store.PathTagCurrentLink {
		c.mu.Lock()
		c.tags++
		c.mu.Unlock()
	}
	if !ok {
		p := Problem{Kind: MalformedLink, Path: e.Path, Repository: l.Repository, Digest: want,
			Detail: fmt.Sprintf("content %s is not sha256:<64 lowercase hex> (%d bytes, want 71)", quoteShort(b), len(b))}
		switch trimmed, tok := store.ParseLink(bytes.TrimSpace(b)); {
		case want != "":
			p.Fix, p.rewrite = FixRewrite, want
		case tok:
			p.Fix, p.rewrite, p.Digest = FixRewrite, trimmed, trimmed
			c.mu.Lock()
			c.repo(l.Repository).current[l.Tag] = currentLink{path: e.Path, target: trimmed, blob: true}
			c.mu.Unlock()
		default:
			p.Fix = FixRepush
		}
		c.problem(p)
		return nil
	}
	if want != "" && target != want {
		c.problem(Problem{Kind: LinkMismatch, Path: e.Path, Repository: l.Repository, Digest: target, Fix: FixRewrite, rewrite: want,
			Detail: fmt.Sprintf("points at %s, but is filed under %s", target, want)})
	}
	exists, err := c.blobExists(ctx, target)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.problem(Problem{Kind: Unreadable, Path: e.Path, Repository: l.Repository, Digest: target,
			Detail: fmt.Sprintf("looking up its blob: %v", err)})
		return nil
	}
	c.mu.Lock()
	r := c.repo(l.Repository)
	current := r.current[l.Tag].target
	if l.Kind == store.PathTagCurrentLink {
		r.current[l.Tag] = currentLink{path: e.Path, target: target, blob: exists}
	}
	c.mu.Unlock()
	if exists {
		return nil
	}
	p := Problem{Kind: DanglingLink, Path: e.Path, Repository: l.Repository, Digest: target, Fix: FixRepush,
		Detail: fmt.Sprintf("points at %s, whose blob data is missing", target)}
	if l.Kind == store.PathTagIndexEntryLink && target != current {
		// The registry's own gc leaves these: history of a manifest that
		// was deleted, then collected. Nothing reads it.
		p.Fix = FixRemove
		p.Detail += "; the tag no longer names it"
	} else {
		p.Detail += "; a re-push brings it back"
	}
	c.problem(p)
	return nil
}

// checkTags reports the tags whose current target is not a revision of
// their repository, after looking the revision up again (it may have been
// pushed since the walk passed it: the revision link is written before the
// tag).
func (c *checker) checkTags(ctx context.Context) error {
	type tag struct {
		repo, tag, path string
		target          digest.Digest
	}
	var check []tag
	c.mu.Lock()
	for name, r := range c.repos {
		for t, cur := range r.current {
			// A dangling tag is reported as such; whether its revision
			// exists matters only when its manifest does.
			if cur.blob && !r.revisions[cur.target] {
				check = append(check, tag{name, t, cur.path, cur.target})
			}
		}
	}
	c.mu.Unlock()
	for _, t := range check {
		p, err := store.Location{Kind: store.PathRevisionLink, Repository: t.repo, Digest: t.target}.Path()
		if err != nil {
			return err
		}
		_, err = c.d.GetContent(ctx, p)
		if err == nil {
			continue // a link there, even a malformed one, makes a revision
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !driver.IsNotFound(err) {
			c.problem(Problem{Kind: Unreadable, Path: p, Repository: t.repo, Detail: err.Error()})
			continue
		}
		c.problem(Problem{Kind: TagRevisionMissing, Path: t.path, Repository: t.repo, Digest: t.target, Fix: FixRepush,
			Detail: fmt.Sprintf("tag %s points at %s, which is not a revision of %s; a re-push of the manifest brings it back", t.tag, t.target, t.repo)})
	}
	return nil
}

// leftovers reports a driver.Janitor's leftovers.
func (c *checker) leftovers(ctx context.Context) {
	j, ok := c.d.(driver.Janitor)
	if !ok {
		return
	}
	left, err := j.Leftovers(ctx)
	if err != nil {
		c.problem(Problem{Kind: Unreadable, Path: "/", Detail: fmt.Sprintf("listing the driver's leftovers: %v", err)})
		return
	}
	for _, p := range left {
		c.problem(Problem{Kind: Leftover, Path: p, Fix: FixRemove,
			Detail: "left by an interrupted delete or write; hidden from listings, it only takes space"})
	}
}

// orphanStaged reports the staged writes at blobs' keys that no upload's
// record names (driver.StageLister), once older than stagedGrace.
func (c *checker) orphanStaged(ctx context.Context) {
	sl, ok := c.d.(driver.StageLister)
	if !ok {
		return
	}
	blobs, err := store.Location{Kind: store.PathBlobsRoot}.Path()
	if err != nil {
		return
	}
	ws, err := sl.StagedWrites(ctx, blobs)
	var unsupported driver.UnsupportedMethodError
	if errors.As(err, &unsupported) {
		return
	}
	if err != nil {
		c.problem(Problem{Kind: Unreadable, Path: blobs, Detail: fmt.Sprintf("listing the staged writes: %v", err)})
		return
	}
	if len(ws) == 0 {
		return
	}
	named := map[string]bool{}
	for _, p := range c.staged {
		id, err := sl.StagedWriteID(ctx, p)
		switch {
		case err == nil:
			named[id] = true
		case driver.IsNotFound(err):
			// Committed or cancelled since the walk.
		default:
			// A record that cannot be read may name any of them.
			c.problem(Problem{Kind: Unreadable, Path: p, Detail: fmt.Sprintf("reading the staged record: %v", err)})
			return
		}
	}
	now := c.opts.Now()
	for _, w := range ws {
		if named[w.ID] || now.Sub(w.Started) < stagedGrace {
			continue
		}
		c.problem(Problem{Kind: OrphanStagedWrite, Path: w.Dst, Fix: FixRemove, staged: w,
			Detail: fmt.Sprintf("staged write %s, started %s, is named by no upload (its upload was removed, or a crash came before its first record); hidden from listings, it only takes space", w.ID, w.Started.UTC().Format(time.RFC3339))})
	}
}

// quoteShort quotes b for a message, cut to a readable length.
func quoteShort(b []byte) string {
	const max = 80
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
