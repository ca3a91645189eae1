package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
)

// Fsck defaults.
const (
	// DefaultStaleUploadAge is the age past which an upload is marked stale:
	// a week, the registry's own default for purging uploads.
	DefaultStaleUploadAge = 7 * 24 * time.Hour
	// DefaultFsckWorkers is how many blobs are hashed at once. Hashing is
	// I/O-bound on a disk and latency-bound on S3; a few streams keep both
	// busy without flooding either.
	DefaultFsckWorkers = 4
	// fsckProgressEvery is how many bytes of a blob are hashed between two
	// progress calls.
	fsckProgressEvery = 1 << 20
)

// FsckOptions configures Fsck.
type FsckOptions struct {
	// Repair removes dangling links (link files whose blob is missing),
	// malformed links and empty directories. Without it Fsck only reads.
	Repair bool
	// StaleUploadAge marks uploads started longer ago than it as stale;
	// zero means DefaultStaleUploadAge.
	StaleUploadAge time.Duration
	// Now is the clock upload ages are measured against; nil means
	// time.Now.
	Now func() time.Time
	// Workers is how many blobs are hashed concurrently; zero means
	// DefaultFsckWorkers.
	Workers int
	// Progress, when set, is called as blobs are hashed. Calls are
	// serialised, so it need not be safe for concurrent use.
	Progress func(FsckProgress)
	// Logger receives a record per repair; nil means slog.Default().
	Logger *slog.Logger
}

// FsckProgress is how far the blob pass of Fsck has come.
type FsckProgress struct {
	BlobsDone, BlobsTotal int
	BytesDone, BytesTotal int64
}

// FsckProblemKind names one kind of problem Fsck finds.
type FsckProblemKind string

// The problems Fsck reports. Only dangling and malformed links are removed
// by a repair: every other problem needs a person to decide (a corrupt blob
// may be the only copy of a layer).
const (
	// FsckCorruptBlob is blob data that does not hash to its name.
	FsckCorruptBlob FsckProblemKind = "corrupt-blob"
	// FsckUnreadable is an object the driver failed to read.
	FsckUnreadable FsckProblemKind = "unreadable"
	// FsckMalformedLink is a link file that is not exactly
	// "sha256:<64 lowercase hex>" (71 bytes, no newline).
	FsckMalformedLink FsckProblemKind = "malformed-link"
	// FsckDanglingLink is a link to a blob whose data is missing.
	FsckDanglingLink FsckProblemKind = "dangling-link"
	// FsckLinkMismatch is a layer, revision, signature or tag index link
	// whose content names another digest than its directory does.
	FsckLinkMismatch FsckProblemKind = "link-mismatch"
	// FsckTagRevisionMissing is a tag whose current link names a digest
	// that is not a revision of the repository.
	FsckTagRevisionMissing FsckProblemKind = "tag-revision-missing"
	// FsckMalformedUpload is an upload whose startedat or regfs-expected
	// file cannot be parsed.
	FsckMalformedUpload FsckProblemKind = "malformed-upload"
	// FsckUnexpectedEntry is an object or directory where the layout has
	// no place for it (a blob directory under the wrong prefix, a name that
	// is not a digest where one is expected).
	FsckUnexpectedEntry FsckProblemKind = "unexpected-entry"
)

// Repairable tells whether a repair removes problems of this kind.
func (k FsckProblemKind) Repairable() bool {
	return k == FsckDanglingLink || k == FsckMalformedLink
}

// FsckProblem is one problem, named by the storage path where it is.
type FsckProblem struct {
	Kind FsckProblemKind `json:"kind"`
	// Path is the driver path of the object or directory at fault.
	Path string `json:"path"`
	// Repository is set for problems inside a repository.
	Repository string `json:"repository,omitempty"`
	// Digest is the digest the object is named by or points at, when
	// there is one.
	Digest digest.Digest `json:"digest,omitempty"`
	Detail string        `json:"detail"`
	// Repaired is set when a repair removed the object.
	Repaired bool `json:"repaired,omitempty"`
}

func (p FsckProblem) String() string {
	s := fmt.Sprintf("%s %s: %s", p.Kind, p.Path, p.Detail)
	if p.Repaired {
		s += " (removed)"
	}
	return s
}

// FsckUpload is an upload in progress, as Fsck lists it.
type FsckUpload struct {
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
	// Age is how long ago it started; zero when StartedAt is.
	Age time.Duration `json:"-"`
	// AgeSeconds is Age for JSON readers.
	AgeSeconds int64 `json:"ageSeconds"`
	// Stale is set when Age exceeds FsckOptions.StaleUploadAge: most
	// likely abandoned, and the registry's upload purging would remove it.
	Stale bool `json:"stale,omitempty"`
}

// FsckRemoval is one object or directory a repair removed.
type FsckRemoval struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// FsckReport is what Fsck found, and with FsckOptions.Repair what it
// removed.
type FsckReport struct {
	Blobs        int   `json:"blobs"`
	BlobBytes    int64 `json:"blobBytes"`
	Repositories int   `json:"repositories"`
	// Links counts every link file read: layer, revision, signature, tag
	// current and tag index links.
	Links    int           `json:"links"`
	Tags     int           `json:"tags"`
	Uploads  []FsckUpload  `json:"uploads"`
	Problems []FsckProblem `json:"problems"`
	// Removed lists what a repair removed, in order.
	Removed []FsckRemoval `json:"removed"`
	Repair  bool          `json:"repair"`
	// Elapsed is how long the run took.
	Elapsed time.Duration `json:"-"`
}

// OK tells whether Fsck found no problem. Stale uploads are not problems:
// they are listed, and purging them is a collector's job, not a repair.
func (r *FsckReport) OK() bool { return len(r.Problems) == 0 }

// Unrepaired counts the problems still in storage.
func (r *FsckReport) Unrepaired() int {
	n := 0
	for _, p := range r.Problems {
		if !p.Repaired {
			n++
		}
	}
	return n
}

// Fsck checks the registry storage on d: it re-hashes every blob
// (streaming, so a blob of any size costs a fixed amount of memory), checks
// that every link file is well formed and points at an existing blob, that
// every tag's current revision is a revision of its repository, and lists
// the uploads in progress with their ages. Each problem is reported with
// its storage path.
//
// It changes nothing unless opts.Repair is set; then it removes dangling
// and malformed links, and directories left with nothing in them, and
// reports each removal. A repair never removes blob data, revisions or
// uploads.
//
// Fsck may run beside a live mount: anything missing is looked up again
// before it is reported, so objects written during the run are not
// reported as missing. A repair should still run while nothing writes,
// because a directory it removes as empty may be one a writer is about to
// fill.
//
// The returned error is for a check that could not be completed (the
// context was cancelled, a listing failed); the report holds what was found
// up to then.
func Fsck(ctx context.Context, d driver.StorageDriver, opts FsckOptions) (*FsckReport, error) {
	if d == nil {
		return nil, errors.New("store: fsck: nil driver")
	}
	if opts.StaleUploadAge <= 0 {
		opts.StaleUploadAge = DefaultStaleUploadAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultFsckWorkers
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &fsck{
		d:     d,
		s:     &storage{driver: d, log: opts.Logger},
		opts:  opts,
		rep:   &FsckReport{Repair: opts.Repair, Uploads: []FsckUpload{}, Problems: []FsckProblem{}, Removed: []FsckRemoval{}},
		blobs: map[digest.Digest]bool{},
	}
	start := time.Now()
	err := f.run(ctx)
	f.rep.Elapsed = time.Since(start)
	return f.rep, err
}

// fsck is one run of Fsck.
type fsck struct {
	d    driver.StorageDriver
	s    *storage
	opts FsckOptions
	rep  *FsckReport
	// blobs holds the digests whose data the blob pass found. Written
	// only by scanBlobs, before anything reads it.
	blobs map[digest.Digest]bool

	// mu guards rep.Problems while blobs are hashed, and progress.
	mu       sync.Mutex
	progress FsckProgress
}

func (f *fsck) run(ctx context.Context) error {
	blobs, err := f.scanBlobs(ctx)
	if err != nil {
		return err
	}
	if err := f.hashBlobs(ctx, blobs); err != nil {
		return err
	}
	repos, err := f.s.Repositories(ctx)
	if err != nil {
		return err
	}
	f.rep.Repositories = len(repos)
	for _, name := range repos {
		if err := f.checkRepository(ctx, name); err != nil {
			return err
		}
	}
	if f.opts.Repair {
		return f.repair(ctx, repos)
	}
	return nil
}

func (f *fsck) problem(p FsckProblem) {
	f.mu.Lock()
	f.rep.Problems = append(f.rep.Problems, p)
	f.mu.Unlock()
}

func (f *fsck) unexpected(repo string, fi driver.FileInfo, why string) {
	f.problem(FsckProblem{Kind: FsckUnexpectedEntry, Path: fi.Path, Repository: repo, Detail: why})
}

// blobEntry is one blob data object the blob pass found.
type blobEntry struct {
	digest digest.Digest
	path   string
	size   int64
}

// scanBlobs lists blobs/sha256/<hh>/<hex>/data in one walk.
func (f *fsck) scanBlobs(ctx context.Context) ([]blobEntry, error) {
	root := mustPath(blobsPathSpec{})
	var out []blobEntry
	err := f.d.Walk(ctx, root, func(fi driver.FileInfo) error {
		parts := strings.Split(strings.TrimPrefix(fi.Path, root+"/"), "/")
		switch len(parts) {
		case 1:
			if !fi.IsDir || len(parts[0]) != 2 || !isLowerHex(parts[0]) {
				f.unexpected("", fi, "not a two-digit blob prefix directory")
				return driver.ErrSkipDir
			}
		case 2:
			d := digest.NewDigestFromEncoded(digest.SHA256, parts[1])
			if !fi.IsDir || checkStoredDigest(d) != nil || parts[1][:2] != parts[0] {
				f.unexpected("", fi, "not a blob directory (sha256 hex under its first two digits)")
				return driver.ErrSkipDir
			}
		case 3:
			if parts[2] != "data" || fi.IsDir {
				f.unexpected("", fi, "a blob directory holds only data")
				return driver.ErrSkipDir
			}
			d := digest.NewDigestFromEncoded(digest.SHA256, parts[1])
			f.blobs[d] = true
			out = append(out, blobEntry{digest: d, path: mustPath(blobDataPathSpec{digest: d}), size: fi.Size})
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("store: fsck: listing blobs: %w", err)
	}
	f.progress.BlobsTotal = len(out)
	for _, b := range out {
		f.progress.BytesTotal += b.size
	}
	f.rep.Blobs = len(out)
	f.rep.BlobBytes = f.progress.BytesTotal
	return out, nil
}

// hashBlobs re-hashes every blob with opts.Workers streams.
func (f *fsck) hashBlobs(ctx context.Context, blobs []blobEntry) error {
	f.report(0, 0)
	work := make(chan blobEntry)
	errs := make(chan error, f.opts.Workers)
	var wg sync.WaitGroup
	for range f.opts.Workers {
		wg.Go(func() {
			for b := range work {
				if err := f.hashBlob(ctx, b); err != nil {
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

// hashBlob checks one blob; only a cancelled context is an error, every
// storage failure is a problem of the blob.
func (f *fsck) hashBlob(ctx context.Context, b blobEntry) error {
	rc, err := f.d.Reader(ctx, b.path, 0)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !isNotFound(err) { // a blob a garbage collector removed since the listing is no problem
			f.problem(FsckProblem{Kind: FsckUnreadable, Path: b.path, Digest: b.digest, Detail: err.Error()})
		}
		f.report(1, 0)
		return nil
	}
	defer rc.Close()
	h := sha256.New()
	pw := &progressWriter{w: h, f: f}
	n, err := io.Copy(pw, rc)
	pw.flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.problem(FsckProblem{Kind: FsckUnreadable, Path: b.path, Digest: b.digest,
			Detail: fmt.Sprintf("read failed after %d bytes: %v", n, err)})
	} else if actual := digest.NewDigest(digest.SHA256, h); actual != b.digest {
		f.problem(FsckProblem{Kind: FsckCorruptBlob, Path: b.path, Digest: b.digest,
			Detail: fmt.Sprintf("data hashes to %s (%d bytes)", actual, n)})
	}
	f.report(1, 0)
	return nil
}

// report adds to the progress and calls opts.Progress.
func (f *fsck) report(blobs int, bytes int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.progress.BlobsDone += blobs
	f.progress.BytesDone += bytes
	if f.opts.Progress != nil {
		f.opts.Progress(f.progress)
	}
}

// progressWriter passes bytes to w and reports them every
// fsckProgressEvery bytes.
type progressWriter struct {
	w       io.Writer
	f       *fsck
	pending int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.pending += int64(n)
	if p.pending >= fsckProgressEvery {
		p.flush()
	}
	return n, err
}

func (p *progressWriter) flush() {
	if p.pending > 0 {
		p.f.report(0, p.pending)
		p.pending = 0
	}
}

// blobExists tells whether a blob's data exists: found by the blob pass,
// or written since.
func (f *fsck) blobExists(ctx context.Context, d digest.Digest) (bool, error) {
	if f.blobs[d] {
		return true, nil
	}
	return f.s.exists(ctx, mustPath(blobDataPathSpec{digest: d}))
}

// linkState is what checkLink found.
type linkState int

const (
	linkGone      linkState = iota // vanished, or unreadable (reported)
	linkMalformed                  // reported
	linkDangling                   // well formed, blob missing; reported
	linkOK                         // well formed, blob present (or unknown after a reported failure)
)

// checkLink reads the link file at p and reports it when it is malformed,
// names another digest than want (when want is set), or points at a
// missing blob. It returns the target of a well-formed link.
func (f *fsck) checkLink(ctx context.Context, repo, p string, want digest.Digest) (digest.Digest, linkState, error) {
	b, err := f.d.GetContent(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return "", linkGone, ctx.Err()
		}
		if !isNotFound(err) {
			f.problem(FsckProblem{Kind: FsckUnreadable, Path: p, Repository: repo, Detail: err.Error()})
		}
		return "", linkGone, nil
	}
	f.rep.Links++
	target, wellFormed := ParseLink(b)
	if !wellFormed {
		f.problem(FsckProblem{Kind: FsckMalformedLink, Path: p, Repository: repo, Digest: want,
			Detail: fmt.Sprintf("content %s is not sha256:<64 lowercase hex> (%d bytes, want %d)", quoteShort(b), len(b), linkSize)})
		return "", linkMalformed, nil
	}
	if want != "" && target != want {
		f.problem(FsckProblem{Kind: FsckLinkMismatch, Path: p, Repository: repo, Digest: target,
			Detail: fmt.Sprintf("points at %s, but is filed under %s", target, want)})
	}
	exists, err := f.blobExists(ctx, target)
	if err != nil {
		if ctx.Err() != nil {
			return "", linkGone, ctx.Err()
		}
		f.problem(FsckProblem{Kind: FsckUnreadable, Path: mustPath(blobDataPathSpec{digest: target}), Repository: repo, Digest: target, Detail: err.Error()})
		return target, linkOK, nil
	}
	if !exists {
		f.problem(FsckProblem{Kind: FsckDanglingLink, Path: p, Repository: repo, Digest: target,
			Detail: fmt.Sprintf("points at %s, whose blob data is missing", target)})
		return target, linkDangling, nil
	}
	return target, linkOK, nil
}

// quoteShort quotes b for a message, cut to a readable length.
func quoteShort(b []byte) string {
	const max = 80
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// hexDigest parses a directory name that must be a sha256 hex digest.
func hexDigest(name string) (digest.Digest, bool) {
	d := digest.NewDigestFromEncoded(digest.SHA256, name)
	return d, checkStoredDigest(d) == nil
}

// walkRel walks dir and calls fn with each entry's path below dir split in
// components. A missing dir is no error.
func (f *fsck) walkRel(ctx context.Context, dir string, fn func(fi driver.FileInfo, parts []string) error) error {
	err := f.d.Walk(ctx, dir, func(fi driver.FileInfo) error {
		return fn(fi, strings.Split(strings.TrimPrefix(fi.Path, dir+"/"), "/"))
	})
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// checkRepository checks a repository's layer, revision and tag links and
// lists its uploads.
func (f *fsck) checkRepository(ctx context.Context, name string) error {
	if err := f.checkLayers(ctx, name); err != nil {
		return fmt.Errorf("store: fsck: layers of %s: %w", name, err)
	}
	revisions, err := f.checkRevisions(ctx, name)
	if err != nil {
		return fmt.Errorf("store: fsck: revisions of %s: %w", name, err)
	}
	if err := f.checkTags(ctx, name, revisions); err != nil {
		return fmt.Errorf("store: fsck: tags of %s: %w", name, err)
	}
	if err := f.listUploads(ctx, name); err != nil {
		return fmt.Errorf("store: fsck: uploads of %s: %w", name, err)
	}
	return nil
}

// checkLayers checks _layers/sha256/<hex>/link. A <hex> directory without
// a link is a layer the registry unlinked, not a problem.
func (f *fsck) checkLayers(ctx context.Context, name string) error {
	return f.walkRel(ctx, mustPath(layersPathSpec{name: name}), func(fi driver.FileInfo, parts []string) error {
		d, valid := hexDigest(parts[0])
		switch {
		case len(parts) == 1 && fi.IsDir && valid:
			return nil
		case len(parts) == 2 && valid && parts[1] == linkFileName && !fi.IsDir:
			_, _, err := f.checkLink(ctx, name, mustPath(layerLinkPathSpec{name: name, digest: d}), d)
			return err
		}
		f.unexpected(name, fi, "the layers directory holds sha256/<hex>/link only")
		return skipIfDir(fi)
	})
}

// checkRevisions checks revision links and schema1 signature links, and
// returns the revisions whose link is well formed.
func (f *fsck) checkRevisions(ctx context.Context, name string) (map[digest.Digest]bool, error) {
	revisions := map[digest.Digest]bool{}
	err := f.walkRel(ctx, mustPath(manifestRevisionsPathSpec{name: name}), func(fi driver.FileInfo, parts []string) error {
		rev, valid := hexDigest(parts[0])
		if !valid {
			f.unexpected(name, fi, "not a revision directory (sha256 hex)")
			return skipIfDir(fi)
		}
		ok := false
		switch len(parts) {
		case 1:
			ok = fi.IsDir
		case 2:
			switch {
			case parts[1] == linkFileName && !fi.IsDir:
				_, state, err := f.checkLink(ctx, name, mustPath(manifestRevisionLinkPathSpec{name: name, revision: rev}), rev)
				if err != nil {
					return err
				}
				if state == linkOK || state == linkDangling {
					revisions[rev] = true
				}
				return nil
			case parts[1] == "signatures" && fi.IsDir:
				ok = true
			}
		case 3:
			ok = parts[2] == "sha256" && fi.IsDir
		case 4:
			_, valid := hexDigest(parts[3])
			ok = valid && fi.IsDir
		case 5:
			if sig, _ := hexDigest(parts[3]); parts[4] == linkFileName && !fi.IsDir {
				_, _, err := f.checkLink(ctx, name, mustPath(manifestSignatureLinkPathSpec{name: name, revision: rev, signature: sig}), sig)
				return err
			}
		}
		if !ok {
			f.unexpected(name, fi, "a revision directory holds link and signatures/sha256/<hex>/link only")
			return skipIfDir(fi)
		}
		return nil
	})
	return revisions, err
}

// checkTags checks every tag's current and index links, and that the
// current link names a revision of the repository.
func (f *fsck) checkTags(ctx context.Context, name string, revisions map[digest.Digest]bool) error {
	type current struct {
		tag, path string
		target    digest.Digest
	}
	var currents []current
	err := f.walkRel(ctx, mustPath(manifestTagsPathSpec{name: name}), func(fi driver.FileInfo, parts []string) error {
		tag := parts[0]
		if checkTag(tag) != nil {
			f.unexpected(name, fi, "not a valid tag name")
			return skipIfDir(fi)
		}
		ok := false
		switch len(parts) {
		case 1:
			ok = fi.IsDir
		case 2:
			ok = fi.IsDir && (parts[1] == "current" || parts[1] == "index")
		case 3:
			if parts[1] == "current" && parts[2] == linkFileName && !fi.IsDir {
				p := mustPath(manifestTagCurrentLinkPathSpec{name: name, tag: tag})
				target, state, err := f.checkLink(ctx, name, p, "")
				if err != nil {
					return err
				}
				f.rep.Tags++
				// A dangling tag is reported as such; whether its revision
				// exists matters only when its manifest does.
				if state == linkOK {
					currents = append(currents, current{tag: tag, path: p, target: target})
				}
				return nil
			}
			ok = parts[1] == "index" && parts[2] == "sha256" && fi.IsDir
		case 4:
			_, valid := hexDigest(parts[3])
			ok = parts[1] == "index" && valid && fi.IsDir
		case 5:
			if rev, _ := hexDigest(parts[3]); parts[4] == linkFileName && !fi.IsDir {
				_, _, err := f.checkLink(ctx, name, mustPath(manifestTagIndexEntryLinkPathSpec{name: name, tag: tag, revision: rev}), rev)
				return err
			}
		}
		if !ok {
			f.unexpected(name, fi, "a tag directory holds current/link and index/sha256/<hex>/link only")
			return skipIfDir(fi)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range currents {
		if revisions[c.target] {
			continue
		}
		// Looked up again: the revision may have been pushed since the
		// revisions were walked (the revision link is written before the
		// tag).
		if b, err := f.d.GetContent(ctx, mustPath(manifestRevisionLinkPathSpec{name: name, revision: c.target})); err == nil {
			if _, ok := ParseLink(b); ok {
				continue
			}
		} else if !isNotFound(err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.problem(FsckProblem{Kind: FsckUnreadable, Path: mustPath(manifestRevisionLinkPathSpec{name: name, revision: c.target}), Repository: name, Detail: err.Error()})
			continue
		}
		f.problem(FsckProblem{Kind: FsckTagRevisionMissing, Path: c.path, Repository: name, Digest: c.target,
			Detail: fmt.Sprintf("tag %s points at %s, which is not a revision of %s", c.tag, c.target, name)})
	}
	return nil
}

// listUploads lists _uploads/<uuid>/ with sizes and ages, and reports
// uploads whose startedat or regfs-expected cannot be parsed. Hash states
// are not checked: an unreadable one only costs a re-hash on resume.
func (f *fsck) listUploads(ctx context.Context, name string) error {
	now := f.opts.Now()
	var ups []*FsckUpload
	byID := map[string]*FsckUpload{}
	err := f.walkRel(ctx, mustPath(uploadsPathSpec{name: name}), func(fi driver.FileInfo, parts []string) error {
		id := parts[0]
		if checkUploadID(id) != nil {
			f.unexpected(name, fi, "not an upload directory (a UUID)")
			return skipIfDir(fi)
		}
		if len(parts) == 1 {
			if !fi.IsDir {
				f.unexpected(name, fi, "not an upload directory (a UUID)")
				return nil
			}
			up := &FsckUpload{Repository: name, ID: id, Path: mustPath(uploadPathSpec{name: name, id: id})}
			ups = append(ups, up)
			byID[id] = up
			return nil
		}
		up := byID[id]
		if up == nil || len(parts) != 2 || fi.IsDir {
			return skipIfDir(fi) // hashstates/
		}
		switch parts[1] {
		case "data":
			up.Size = fi.Size
		case "startedat":
			p := mustPath(uploadStartedAtPathSpec{name: name, id: id})
			b, err := f.d.GetContent(ctx, p)
			if err != nil {
				return f.uploadReadFailed(ctx, name, p, err)
			}
			t, err := time.Parse(time.RFC3339, string(b))
			if err != nil {
				f.problem(FsckProblem{Kind: FsckMalformedUpload, Path: p, Repository: name,
					Detail: fmt.Sprintf("startedat %s is not an RFC 3339 time", quoteShort(b))})
				return nil
			}
			up.StartedAt = t.UTC()
		case expectedFileName:
			p := mustPath(uploadExpectedPathSpec{name: name, id: id})
			b, err := f.d.GetContent(ctx, p)
			if err != nil {
				return f.uploadReadFailed(ctx, name, p, err)
			}
			d, ok := ParseLink(b)
			if !ok {
				f.problem(FsckProblem{Kind: FsckMalformedUpload, Path: p, Repository: name,
					Detail: fmt.Sprintf("expected digest %s is not sha256:<64 lowercase hex>", quoteShort(b))})
				return nil
			}
			up.Expected = d
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, up := range ups {
		if !up.StartedAt.IsZero() {
			up.Age = max(now.Sub(up.StartedAt), 0)
			up.AgeSeconds = int64(up.Age / time.Second)
			up.Stale = up.Age > f.opts.StaleUploadAge
		}
		f.rep.Uploads = append(f.rep.Uploads, *up)
	}
	return nil
}

func (f *fsck) uploadReadFailed(ctx context.Context, repo, p string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !isNotFound(err) { // an upload committed or cancelled meanwhile
		f.problem(FsckProblem{Kind: FsckUnreadable, Path: p, Repository: repo, Detail: err.Error()})
	}
	return nil
}

// repair removes the dangling and malformed links found, then the empty
// directories below the blob store and each repository's layers,
// revisions and tags (never those directories themselves: an empty
// _layers/sha256 still makes a repository). Each link is read again just
// before it is removed, so a link rewritten since the check stays.
func (f *fsck) repair(ctx context.Context, repos []string) error {
	for i := range f.rep.Problems {
		p := &f.rep.Problems[i]
		if !p.Kind.Repairable() {
			continue
		}
		still, err := f.stillBroken(ctx, p.Path)
		if err != nil {
			return err
		}
		if !still {
			continue
		}
		if err := f.d.Delete(ctx, p.Path); err != nil && !isNotFound(err) {
			return fmt.Errorf("store: fsck: removing %s: %w", p.Path, err)
		}
		p.Repaired = true
		f.removed(p.Path, string(p.Kind))
	}
	roots := []string{mustPath(blobsPathSpec{})}
	for _, name := range repos {
		roots = append(roots,
			mustPath(layersPathSpec{name: name}),
			mustPath(manifestRevisionsPathSpec{name: name}),
			mustPath(manifestTagsPathSpec{name: name}))
	}
	for _, root := range roots {
		if err := f.removeEmptyDirs(ctx, root); err != nil {
			return fmt.Errorf("store: fsck: removing empty directories below %s: %w", root, err)
		}
	}
	return nil
}

// stillBroken reads a link again and tells whether it is still malformed or
// dangling.
func (f *fsck) stillBroken(ctx context.Context, p string) (bool, error) {
	b, err := f.d.GetContent(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
	d, ok := ParseLink(b)
	if !ok {
		return true, nil
	}
	exists, err := f.s.exists(ctx, mustPath(blobDataPathSpec{digest: d}))
	return !exists, err
}

func (f *fsck) removed(p, reason string) {
	f.rep.Removed = append(f.rep.Removed, FsckRemoval{Path: p, Reason: reason})
	f.opts.Logger.Info("fsck removed", "path", p, "reason", reason)
}

// removeEmptyDirs removes the highest directories below root that hold no
// object anywhere below them. Drivers without real directories (S3, in
// memory) never have any.
func (f *fsck) removeEmptyDirs(ctx context.Context, root string) error {
	var dirs []string
	full := map[string]bool{}
	err := f.d.Walk(ctx, root, func(fi driver.FileInfo) error {
		if fi.IsDir {
			dirs = append(dirs, fi.Path)
			return nil
		}
		for p := path.Dir(fi.Path); len(p) > len(root) && !full[p]; p = path.Dir(p) {
			full[p] = true
		}
		return nil
	})
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	for _, dir := range dirs { // parents come before their children
		parent := path.Dir(dir)
		if full[dir] || (parent != root && !full[parent]) {
			continue // not empty, or goes with its empty parent
		}
		if err := f.d.Delete(ctx, dir); err != nil && !isNotFound(err) {
			return err
		}
		f.removed(dir, "empty directory")
	}
	return nil
}
