// Package gc is regfs's garbage collector: it gives back the storage that
// rm through a mount (untag, revision delete, unlink) and the registry's
// deletes leave behind, while mounts and registries keep writing.
//
// # What is live
//
// Every tagged revision; every untagged revision too, unless
// DeleteUntagged; every child of a kept manifest list or OCI index,
// recursively; every revision whose OCI subject is a kept revision
// (signatures, SBOMs stay with their subject); the manifest blob, schema1
// signatures, config and layers (schema1 fsLayers too) of every kept
// revision; and every blob linked in any repository's _layers: in regfs a
// link is a file the user can see, so rm of the last link is what frees a
// blob, like a hard link. UnreferencedLayers also removes the _layers links
// that no kept revision of their repository references, as the registry's
// own collector treats them.
//
// # Grace window and re-checks
//
// Nothing whose link, revision or blob was written or re-linked within
// Grace is deleted (driver modification times), so that a push in progress
// (layers first, manifest last) never loses what it wrote. Each deletion
// re-checks its condition just before it happens: a repository's tags and
// revisions are read again before its revisions and links go, the link set
// of every repository is walked again before blobs go, and each blob's,
// link's and upload's modification time is read again right before it is
// deleted. Deletions go in an order that never leaves a reference to
// something missing (revisions, then links, then blobs), so a run killed at
// any point leaves a consistent tree, and the next run finishes the work.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store"
)

// Defaults.
const (
	// DefaultGrace is the grace window of the command line: an hour is more
	// than a push takes between its first layer and its manifest.
	DefaultGrace = time.Hour
	// DefaultUploadAge is the age past which an upload is removed: a week,
	// the registry's own upload purging default.
	DefaultUploadAge = 7 * 24 * time.Hour
	// DefaultWorkers is how many manifests and links are read at once: a
	// few requests in flight hide S3's latency.
	DefaultWorkers = 8
)

// Options configures Run.
type Options struct {
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
	// Grace: nothing written or re-linked less than Grace ago is deleted.
	// Zero means no grace window.
	Grace time.Duration
	// DeleteUntagged deletes revisions no tag points at and no kept
	// revision needs (as child or as subject).
	DeleteUntagged bool
	// UnreferencedLayers removes _layers links no kept revision of their
	// repository references.
	UnreferencedLayers bool
	// UploadAge removes uploads started longer ago than it; zero means
	// DefaultUploadAge.
	UploadAge time.Duration
	// PruneEmpty removes repositories left with nothing in them.
	PruneEmpty bool
	// Workers is how many objects are read at once; zero means
	// DefaultWorkers.
	Workers int
	// Fence, when set, names the blobs and uploads a running mount is
	// writing, committing or linking: they are live whatever their age.
	Fence Fence
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Progress, when set, is called as the run goes; calls are serialised.
	Progress func(Progress)
	// Logger receives a record per deletion; nil means slog.Default().
	Logger *slog.Logger

	// afterMark, set by tests, runs between the mark and the sweep.
	afterMark func()
}

// Fence is what a running mount tells gc about its own writes in flight.
type Fence interface {
	// HoldsBlob tells whether the mount is uploading, committing or
	// linking d, or has done so since the fence was taken.
	HoldsBlob(d digest.Digest) bool
	// HoldsUpload tells whether the mount has the upload open.
	HoldsUpload(repo, id string) bool
}

// Progress is how far a run has come: Phase is "scan", "read", "sweep".
type Progress struct {
	Phase       string
	Done, Total int
}

// Report is what a run deleted, or with DryRun would delete.
type Report struct {
	DryRun bool `json:"dryRun"`
	// Repositories lists the repositories where something was or would be
	// deleted, sorted by name.
	Repositories []RepoReport `json:"repositories"`
	// Blobs lists the blobs deleted, sorted by digest.
	Blobs []BlobDeletion `json:"blobs"`
	Total Totals         `json:"total"`
	// Scanned is what the run found.
	Scanned Scanned `json:"scanned"`
	// Spared counts candidates a re-check kept: written within the grace
	// window, re-linked or referenced since the mark, or fenced.
	Spared Spared `json:"spared"`
	// Problems are errors that did not stop the run (a deletion that
	// failed, a manifest that could not be read); any makes the exit
	// status 1.
	Problems []string `json:"problems"`
	// BlobSweepSkipped tells why no blob was deleted when one was not
	// safe to (a kept manifest could not be read).
	BlobSweepSkipped string        `json:"blobSweepSkipped,omitempty"`
	Elapsed          time.Duration `json:"-"`
}

// RepoReport is what went, or would go, in one repository.
type RepoReport struct {
	Name      string           `json:"name"`
	Revisions []digest.Digest  `json:"revisions"`
	Links     []digest.Digest  `json:"links"`
	Uploads   []UploadDeletion `json:"uploads"`
	// Removed is set when the (empty) repository itself was removed.
	Removed bool `json:"removed,omitempty"`
	// Blobs and Bytes count the blobs that went because of this
	// repository's deletions, and their bytes plus its uploads' bytes.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
}

// UploadDeletion is one upload removed.
type UploadDeletion struct {
	ID        string    `json:"id"`
	Size      int64     `json:"size"`
	StartedAt time.Time `json:"startedAt,omitzero"`
}

// BlobDeletion is one blob removed.
type BlobDeletion struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Repository is the repository whose deletion in this run freed the
	// blob; empty for a blob nothing linked or referenced before the run.
	Repository string `json:"repository,omitempty"`
}

// Totals sums a report.
type Totals struct {
	Revisions    int   `json:"revisions"`
	Links        int   `json:"links"`
	Uploads      int   `json:"uploads"`
	Blobs        int   `json:"blobs"`
	Repositories int   `json:"repositories"`
	Bytes        int64 `json:"bytes"`
}

// Scanned is what the scan found.
type Scanned struct {
	Repositories int   `json:"repositories"`
	Revisions    int   `json:"revisions"`
	Tags         int   `json:"tags"`
	Links        int   `json:"links"`
	Uploads      int   `json:"uploads"`
	Blobs        int   `json:"blobs"`
	BlobBytes    int64 `json:"blobBytes"`
}

// Spared counts what re-checks kept.
type Spared struct {
	Grace   int `json:"grace"`
	Recheck int `json:"recheck"`
	Fenced  int `json:"fenced"`
}

// OK tells whether the run had no problems.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// revInfo is what reading a revision found.
type revInfo struct {
	target   key // the link's target, whose data is the manifest
	blobs    []key
	children []key
	subject  key
	hasSubj  bool
	// broken is set when the manifest could not be read or parsed: its
	// references are unknown.
	broken bool
}

// repoState is a repository's snapshot plus what the mark read.
type repoState struct {
	*repoSnap
	info        map[key]*revInfo
	tagTargets  map[string]key
	tagsUnknown bool // a tag could not be read: keep every revision
	// fresh holds the revisions the re-check found that the scan did not:
	// written during the run, so kept.
	fresh       map[key]bool
	startedAt   map[string]time.Time
	kept        map[key]bool
	candRevs    []key
	candLinks   []key
	candUploads []*uploadSnap
	report      *RepoReport
}

// run is one Run.
type run struct {
	st     store.Store
	d      driver.StorageDriver
	opts   Options
	now    time.Time
	cutoff time.Time // things modified after it are inside the grace window
	log    *slog.Logger

	repos []*repoState // sorted by name
	blobs map[key]blobSnap
	live  map[key]bool
	owner map[key]string // blob -> repository whose candidates free it
	rep   *Report

	mu          sync.Mutex // guards rep.Problems and progress calls
	unsafeBlobs string     // why the blob sweep must not run

	// refs caches what each manifest blob references; guarded by refsMu.
	refsMu sync.Mutex
	refs   map[key]*manifestRefs
}

// Run collects the garbage of the registry storage st (on driver d, the
// same storage). The error is for a run that could not go on (a walk
// failed, the context ended); the report holds what was done until then.
func Run(ctx context.Context, st store.Store, d driver.StorageDriver, opts Options) (*Report, error) {
	if st == nil || d == nil {
		return nil, errors.New("gc: nil store or driver")
	}
	if opts.UploadAge <= 0 {
		opts.UploadAge = DefaultUploadAge
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Grace < 0 {
		opts.Grace = 0
	}
	r := &run{
		st: st, d: d, opts: opts, log: opts.Logger,
		live:  map[key]bool{},
		owner: map[key]string{},
		refs:  map[key]*manifestRefs{},
		rep:   &Report{DryRun: opts.DryRun, Repositories: []RepoReport{}, Blobs: []BlobDeletion{}, Problems: []string{}},
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.now = opts.Now()
	r.cutoff = r.now.Add(-opts.Grace)
	start := time.Now()
	err := r.run(ctx)
	r.finish()
	r.rep.Elapsed = time.Since(start)
	return r.rep, err
}

func (r *run) run(ctx context.Context) error {
	r.progress("scan", 0, 0)
	if err := r.scan(ctx); err != nil {
		return err
	}
	if err := r.read(ctx); err != nil {
		return err
	}
	r.mark()
	if r.opts.afterMark != nil {
		r.opts.afterMark()
	}
	if r.opts.DryRun {
		r.dryRun()
		return nil
	}
	return r.sweep(ctx)
}

// noteUnreadable records directories a walk could not list: links may
// hide in them, so no blob may be deleted.
func (r *run) noteUnreadable(sc *scanned) {
	for _, p := range sc.unreadable {
		r.problem("directory %s could not be listed", p)
	}
	if len(sc.unreadable) > 0 && r.unsafeBlobs == "" {
		r.unsafeBlobs = fmt.Sprintf("%d directories below repositories/ could not be listed (first: %s), so what they link is unknown", len(sc.unreadable), sc.unreadable[0])
	}
}

func (r *run) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Problems = append(r.rep.Problems, fmt.Sprintf(format, args...))
}

func (r *run) progress(phase string, done, total int) {
	if r.opts.Progress == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.Progress(Progress{Phase: phase, Done: done, Total: total})
}

// needTags tells whether the run needs the tags: to tell untagged
// revisions, or that a repository is empty.
func (r *run) needTags() bool { return r.opts.DeleteUntagged || r.opts.PruneEmpty }

// recent tells whether t is inside the grace window.
func (r *run) recent(t time.Time) bool { return t.After(r.cutoff) }

// scan walks the storage into the run's snapshot.
func (r *run) scan(ctx context.Context) error {
	// The two walks run at once: each is a stream of listings and stats
	// that another can overlap. Their order does not matter for safety:
	// a link the repositories' walk missed is found by the walk of the
	// links before any blob is deleted.
	var (
		blobs   map[key]blobSnap
		blobErr error
		wg      sync.WaitGroup
	)
	wg.Go(func() { blobs, blobErr = walkBlobs(ctx, r.d, r.opts.Workers) })
	sc, err := walkRepositories(ctx, r.d, r.opts.Workers, r.needTags())
	wg.Wait()
	if err != nil {
		return err
	}
	if blobErr != nil {
		return blobErr
	}
	r.noteUnreadable(sc)
	repos := sc.repos
	r.blobs = blobs
	names := make([]string, 0, len(repos))
	for n := range repos {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rs := &repoState{repoSnap: repos[n], info: make(map[key]*revInfo, len(repos[n].revisions))}
		r.repos = append(r.repos, rs)
		sc := &r.rep.Scanned
		sc.Repositories++
		sc.Revisions += len(rs.revisions)
		sc.Tags += len(rs.tags)
		sc.Links += len(rs.layers)
		sc.Uploads += len(rs.uploads)
	}
	r.rep.Scanned.Blobs = len(blobs)
	for _, b := range blobs {
		r.rep.Scanned.BlobBytes += b.size
	}
	return nil
}

// read reads, with opts.Workers at once, every revision's link and
// manifest, every tag's current link and every upload's startedat.
func (r *run) read(ctx context.Context) error {
	var jobs []func(context.Context) error
	for _, rs := range r.repos {
		for rev := range rs.revisions {
			info := &revInfo{}
			rs.info[rev] = info
			jobs = append(jobs, func(ctx context.Context) error {
				return r.readRevision(ctx, rs.name, rev, info)
			})
		}
		var mu sync.Mutex
		var tags []string
		if r.opts.DeleteUntagged {
			// Otherwise every revision is kept, whatever tags point at.
			tags = rs.tags
		}
		for _, tag := range tags {
			jobs = append(jobs, func(ctx context.Context) error {
				k, state, err := r.readTag(ctx, rs.name, tag)
				mu.Lock()
				switch state {
				case tagRead:
					if rs.tagTargets == nil {
						rs.tagTargets = map[string]key{}
					}
					rs.tagTargets[tag] = k
				case tagUnknown:
					rs.tagsUnknown = true
				}
				mu.Unlock()
				return err
			})
		}
		for id, up := range rs.uploads {
			if !up.hasStarted {
				continue
			}
			jobs = append(jobs, func(ctx context.Context) error {
				t, ok := r.readStartedAt(ctx, rs.name, id)
				if ok {
					mu.Lock()
					if rs.startedAt == nil {
						rs.startedAt = map[string]time.Time{}
					}
					rs.startedAt[id] = t
					mu.Unlock()
				}
				return nil
			})
		}
	}
	return r.parallel(ctx, "read", jobs)
}

// parallel runs jobs with opts.Workers goroutines; the first error stops
// the others.
func (r *run) parallel(ctx context.Context, phase string, jobs []func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan func(context.Context) error)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
		doneMu  sync.Mutex
		done    int
	)
	for range r.opts.Workers {
		wg.Go(func() {
			for job := range work {
				if err := job(ctx); err != nil {
					errOnce.Do(func() { first = err; cancel() })
				}
				doneMu.Lock()
				done++
				n := done
				doneMu.Unlock()
				if n%256 == 0 || n == len(jobs) {
					r.progress(phase, n, len(jobs))
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case work <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// readRevision reads the references of a revision's manifest. The link's
// directory names the manifest, as the link's content does but for a
// tree fsck reports (link-mismatch): the link is read only when no blob of
// that name exists, to find the one it names. A revision whose link or
// blob has gone since the scan has nothing to keep; one that cannot be
// read or parsed is broken (its references are unknown). Manifests shared
// by several repositories are read once. Only a cancelled context is an
// error.
func (r *run) readRevision(ctx context.Context, repo string, rev key, info *revInfo) error {
	info.target = rev
	if _, ok := r.blobs[rev]; !ok {
		linkPath := pathOf(store.Location{Kind: store.PathRevisionLink, Repository: repo, Digest: rev.digest()})
		b, err := r.d.GetContent(ctx, linkPath)
		switch {
		case err == nil:
			t, ok := store.ParseLink(b)
			if !ok {
				r.problem("revision %s in %s: malformed link %q: its manifest's references are unknown", rev.digest(), repo, b)
				info.broken = true
				return nil
			}
			if k, ok := keyOf(t); ok {
				info.target = k
			}
		case driver.IsNotFound(err):
			return nil // deleted since the scan
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			r.problem("revision %s in %s: reading its link: %v", rev.digest(), repo, err)
			info.broken = true
			return nil
		}
	}
	refs, err := r.manifestRefs(ctx, info.target)
	switch {
	case err == nil:
	case errors.Is(err, errNoManifest):
		// A revision whose manifest is gone refers to nothing anyone can
		// fetch through it.
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		r.problem("revision %s in %s: %v", rev.digest(), repo, err)
		info.broken = true
		return nil
	}
	info.blobs, info.children, info.subject, info.hasSubj = refs.blobs, refs.children, refs.subject, refs.hasSubj
	return nil
}

// errNoManifest is manifestRefs' answer for a manifest blob that does not
// exist.
var errNoManifest = errors.New("no such manifest blob")

// manifestRefs is what a manifest references.
type manifestRefs struct {
	blobs, children []key
	subject         key
	hasSubj         bool
}

// manifestRefs reads and parses the manifest blob k, once per run.
func (r *run) manifestRefs(ctx context.Context, k key) (*manifestRefs, error) {
	r.refsMu.Lock()
	if m, ok := r.refs[k]; ok {
		r.refsMu.Unlock()
		return m, nil
	}
	r.refsMu.Unlock()
	content, err := r.d.GetContent(ctx, pathOf(store.Location{Kind: store.PathBlobData, Digest: k.digest()}))
	if err != nil {
		if driver.IsNotFound(err) {
			return nil, errNoManifest
		}
		return nil, fmt.Errorf("reading its manifest: %w", err)
	}
	parsed, err := store.ManifestReferences(content)
	if err != nil {
		return nil, err
	}
	m := &manifestRefs{}
	for _, d := range parsed.Blobs {
		if k, ok := keyOf(d); ok {
			m.blobs = append(m.blobs, k)
		}
	}
	for _, d := range parsed.Manifests {
		if k, ok := keyOf(d); ok {
			m.children = append(m.children, k)
		}
	}
	if parsed.Subject != "" {
		m.subject, m.hasSubj = keyOf(parsed.Subject)
	}
	r.refsMu.Lock()
	r.refs[k] = m
	r.refsMu.Unlock()
	return m, nil
}

// tagState is what reading a tag found.
type tagState int

const (
	tagGone    tagState = iota // removed since the scan
	tagRead                    // points at the key returned
	tagUnknown                 // unreadable or malformed: it may point at any revision
)

// readTag reads a tag's current link. A tag that cannot be read may point
// at any revision, so its repository's untagged revisions must stay.
func (r *run) readTag(ctx context.Context, repo, tag string) (key, tagState, error) {
	p, err := store.Location{Kind: store.PathTagCurrentLink, Repository: repo, Tag: tag}.Path()
	if err != nil {
		return key{}, tagUnknown, nil // not a tag the store can name
	}
	b, err := r.d.GetContent(ctx, p)
	switch {
	case err == nil:
	case driver.IsNotFound(err):
		return key{}, tagGone, nil
	case ctx.Err() != nil:
		return key{}, tagUnknown, ctx.Err()
	default:
		r.problem("tag %s in %s: %v", tag, repo, err)
		return key{}, tagUnknown, nil
	}
	if d, ok := store.ParseLink(b); ok {
		if k, ok := keyOf(d); ok {
			return k, tagRead, nil
		}
	}
	r.problem("tag %s in %s: malformed current link %q", tag, repo, b)
	return key{}, tagUnknown, nil
}

// readStartedAt reads an upload's start time.
func (r *run) readStartedAt(ctx context.Context, repo, id string) (time.Time, bool) {
	b, err := r.d.GetContent(ctx, pathOf(store.Location{Kind: store.PathUploadStartedAt, Repository: repo, Upload: id}))
	if err != nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// Summary is what a mount shows of its last collection (.regfs/stats).
type Summary struct {
	// Runs counts the collections since the mount started.
	Runs           int64     `json:"runs"`
	Started        time.Time `json:"started"`
	ElapsedSeconds float64   `json:"elapsedSeconds"`
	Total          Totals    `json:"total"`
	Spared         Spared    `json:"spared"`
	Problems       int       `json:"problems"`
	// ReclaimedBytesTotal adds up Total.Bytes over every run since the
	// mount started.
	ReclaimedBytesTotal int64 `json:"reclaimedBytesTotal"`
	// Error is set when the run stopped early.
	Error string `json:"error,omitempty"`
}

// Last keeps the summary of the last run; safe for concurrent use.
type Last struct {
	mu sync.Mutex
	s  *Summary // guarded by mu; nil before the first run
}

// Record makes a run the last one.
func (l *Last) Record(started time.Time, rep *Report, err error) {
	s := &Summary{Started: started}
	if rep != nil {
		s.ElapsedSeconds = rep.Elapsed.Seconds()
		s.Total, s.Spared, s.Problems = rep.Total, rep.Spared, len(rep.Problems)
	}
	if err != nil {
		s.Error = err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.s != nil {
		s.Runs, s.ReclaimedBytesTotal = l.s.Runs, l.s.ReclaimedBytesTotal
	}
	s.Runs++
	s.ReclaimedBytesTotal += s.Total.Bytes
	l.s = s
}

// Get returns a copy of the last run's summary, nil before the first.
func (l *Last) Get() *Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.s == nil {
		return nil
	}
	c := *l.s
	return &c
}
