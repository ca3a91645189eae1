package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/regfs/regfs/store/fsck"
)

// Exit statuses of regfs fsck. 1 and 2 mean what they mean for every regfs
// command; 3 tells a script that the storage could not be checked at all
// (or not to the end), which is not the same as "checked, and broken".
const (
	fsckExitOK         = 0
	fsckExitProblems   = 1
	fsckExitUsage      = 2
	fsckExitIncomplete = 3
)

// FsckConfig is everything regfs fsck needs, from the command line.
type FsckConfig struct {
	Storage
	JSON   bool
	Repair bool
	// StaleAfter marks uploads older than it as stale.
	StaleAfter time.Duration
	// Workers is how many blobs are hashed at once.
	Workers int
}

// newFsckFlags defines the fsck flags on cfg.
func newFsckFlags(cfg *FsckConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("regfs fsck", flag.ContinueOnError)
	addStorageFlags(fs, &cfg.Storage, false)
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON on stdout")
	fs.BoolVar(&cfg.Repair, "repair", false, "rewrite links whose content is known exactly, remove garbage and empty directories (nothing else)")
	fs.DurationVar(&cfg.StaleAfter, "stale-after", fsck.DefaultStaleUploadAge, "mark uploads started longer ago than `AGE` as stale")
	fs.IntVar(&cfg.Workers, "workers", fsck.DefaultWorkers, "hash `N` blobs, and list N directories, at once")
	return fs
}

// fsckUsage is regfs fsck --help.
func fsckUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(`Usage: regfs fsck [flags]

Check a registry's storage: re-hash every blob (its sha256 must equal its
name), check that every link (layer, revision, schema1 signature, tag current
and tag index) is exactly "sha256:<64 hex>" and points at an existing blob,
that every tag's current revision exists, and list the uploads in progress
with their ages. Symbolic links, entries with no place in the layout,
directories that cannot be read and a crash's leftovers are reported too.
Each problem is printed with its path; a bad link or blob is read twice
before it is reported, so a check beside a live registry is safe.

Nothing is changed unless --repair is given; then a link whose right content
is known exactly (its directory names it, or it only has a stray newline) is
rewritten, garbage is removed (tag index entries of deleted manifests whose
blob is gone, crash leftovers, empty directories), and every change printed.
What only a re-push brings back (a corrupt blob, a tag or revision whose blob
is missing) is kept and marked [needs re-push]. Blobs, revisions, tags and
uploads are never removed. Run --repair while no mount or registry writes to
the storage.

On a terminal, a progress line goes to stderr while blobs are hashed.

Exit status: 0 no problems (stale uploads are listed, not counted),
1 problems found (also when --repair fixed them all: run again to
confirm), 2 usage error (a --root that is not a directory too), 3 the
storage could not be checked to the end.
With --json, a report is printed for every exit status.

Flags:
`)
	writeFlags(&b, fs)
	b.WriteString(`
Examples:
  regfs fsck --root /var/lib/docker-registry
  regfs fsck --root /var/lib/docker-registry --json | jq '.problems[].path'
  regfs fsck --driver s3 --s3-bucket registry --s3-endpoint http://127.0.0.1:7070 --repair
`)
	return b.String()
}

// parseStorageCommand parses the arguments of a command that takes its
// storage from the flags and nothing else (fsck, gc) into fs. --help prints
// usage(fs) to stdout and returns flag.ErrHelp.
func parseStorageCommand(fs *flag.FlagSet, args []string, stdout io.Writer, usage func(*flag.FlagSet) string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage(fs))
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: the storage is chosen with --root or --driver", fs.Arg(0))
	}
	return nil
}

// parseFsck parses regfs fsck's arguments. --help prints the usage to
// stdout and returns flag.ErrHelp.
func parseFsck(args []string, stdout io.Writer) (FsckConfig, error) {
	var cfg FsckConfig
	fs := newFsckFlags(&cfg)
	if err := parseStorageCommand(fs, args, stdout, fsckUsage); err != nil {
		return cfg, err
	}
	if cfg.StaleAfter <= 0 {
		return cfg, errors.New("--stale-after must be positive")
	}
	if cfg.Workers <= 0 {
		return cfg, errors.New("--workers must be positive")
	}
	return cfg, checkStorage(&cfg.Storage, false)
}

// fsckMain runs regfs fsck and returns its exit status.
func fsckMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFsck(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return fsckExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "regfs fsck: %v\nRun 'regfs fsck --help' for usage.\n", err)
		if cfg.JSON || slices.Contains(args, "--json") || slices.Contains(args, "-json") {
			writeFsckJSON(stdout, stderr, cfg, nil, err, fsckExitUsage)
		}
		return fsckExitUsage
	}
	return runFsck(ctx, cfg, stdout, stderr, isTerminal(stderr))
}

// isTerminal tells whether w is a terminal, where a progress line helps;
// in a pipe or a log file it would only be noise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// runFsck checks the storage cfg names, prints the report and returns the
// exit status. With progress, a progress line is kept on stderr.
func runFsck(ctx context.Context, cfg FsckConfig, stdout, stderr io.Writer, progress bool) int {
	// fail ends a check that could not start, with a report all the same.
	fail := func(err error) int {
		fmt.Fprintf(stderr, "regfs fsck: %v\n", err)
		if cfg.JSON {
			writeFsckJSON(stdout, stderr, cfg, nil, err, fsckExitIncomplete)
		}
		return fsckExitIncomplete
	}
	if cfg.Driver == driverFilesystem {
		// The filesystem driver creates a missing root; a check must not.
		// A --root that is not a directory is a usage error, like any
		// argument naming nothing to check.
		fi, err := os.Stat(cfg.Root)
		if err != nil || !fi.IsDir() {
			err := fmt.Errorf("storage root %s is not a directory", cfg.Root)
			fmt.Fprintf(stderr, "regfs fsck: %v\nRun 'regfs fsck --help' for usage.\n", err)
			if cfg.JSON {
				writeFsckJSON(stdout, stderr, cfg, nil, err, fsckExitUsage)
			}
			return fsckExitUsage
		}
	}
	d, err := openDriver(ctx, cfg.Storage)
	if err != nil {
		return fail(err)
	}
	opts := fsck.Options{
		Repair:         cfg.Repair,
		StaleUploadAge: cfg.StaleAfter,
		Workers:        cfg.Workers,
		// Changes are printed in the report; the log would repeat them.
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	var pl *progressLine
	if progress {
		pl = &progressLine{w: stderr, every: 200 * time.Millisecond}
		opts.Progress = pl.update
	}
	rep, ferr := fsck.Run(ctx, d, opts)
	if pl != nil {
		pl.clear()
	}
	code := fsckExitOK
	switch {
	case ferr != nil:
		code = fsckExitIncomplete
	case !rep.OK():
		code = fsckExitProblems
	}
	if cfg.JSON {
		if !writeFsckJSON(stdout, stderr, cfg, rep, ferr, code) {
			return fsckExitIncomplete
		}
	} else {
		printFsck(stdout, rep, locator(cfg.Storage))
	}
	if ferr != nil {
		fmt.Fprintf(stderr, "regfs fsck: check not completed: %v\n", ferr)
	}
	return code
}

// writeFsckJSON prints the --json report; rep is nil when the check did
// not start. It tells whether the report was written.
func writeFsckJSON(stdout, stderr io.Writer, cfg FsckConfig, rep *fsck.Report, ferr error, code int) bool {
	if rep == nil {
		rep = &fsck.Report{Uploads: []fsck.Upload{}, Problems: []fsck.Problem{}, Rewritten: []fsck.Change{}, Removed: []fsck.Change{}, Repair: cfg.Repair}
	}
	out := fsckJSON{Driver: cfg.Driver, Root: cfg.Root, Bucket: cfg.S3Bucket, Prefix: cfg.S3Prefix,
		Report: rep, ElapsedSeconds: rep.Elapsed.Seconds(), Complete: ferr == nil, ExitCode: code}
	if ferr != nil {
		out.Error = ferr.Error()
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(stderr, "regfs fsck: writing the report: %v\n", err)
		return false
	}
	return true
}

// fsckJSON is the --json report: the check's report with where it was
// made and how it ended.
type fsckJSON struct {
	Driver string `json:"driver"`
	Root   string `json:"root,omitempty"`
	Bucket string `json:"bucket,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	*fsck.Report
	ElapsedSeconds float64 `json:"elapsedSeconds"`
	// Complete is false when the check stopped early or never started
	// (exit status 2 or 3).
	Complete bool   `json:"complete"`
	Error    string `json:"error,omitempty"`
	ExitCode int    `json:"exitCode"`
}

// locator turns a storage path into what an operator can look at: a file
// name for the filesystem driver, an s3:// URL for S3.
func locator(st Storage) func(string) string {
	switch st.Driver {
	case driverFilesystem:
		return func(p string) string { return filepath.Join(st.Root, filepath.FromSlash(p)) }
	case driverS3:
		prefix := strings.Trim(st.S3Prefix, "/")
		if prefix != "" {
			prefix = "/" + prefix
		}
		return func(p string) string { return "s3://" + st.S3Bucket + prefix + p }
	}
	return func(p string) string { return p }
}

// printFsck prints the report for a person: problems, uploads, removed
// directories, then one summary line.
func printFsck(w io.Writer, rep *fsck.Report, loc func(string) string) {
	for _, p := range rep.Problems {
		mark := ""
		switch {
		case p.Repaired && p.Fix == fsck.FixRewrite:
			mark = " [rewritten]"
		case p.Repaired:
			mark = " [removed]"
		case p.Fix == fsck.FixRepush:
			mark = " [needs re-push]"
		}
		fmt.Fprintf(w, "%s %s: %s%s\n", p.Kind, loc(p.Path), p.Detail, mark)
	}
	for _, up := range rep.Uploads {
		age := "unknown age"
		switch {
		case !up.StartedAt.IsZero():
			age = fmt.Sprintf("started %s, %s ago", up.StartedAt.Format(time.RFC3339), up.Age.Round(time.Second))
		case up.AgeEstimated:
			age = fmt.Sprintf("no startedat, last written %s, %s ago (estimated age)", up.LastModified.Format(time.RFC3339), up.Age.Round(time.Second))
		}
		expected := "no expected digest"
		if up.Expected != "" {
			expected = "for " + up.Expected.String()
		}
		stale := ""
		if up.Stale {
			stale = " [stale]"
		}
		fmt.Fprintf(w, "upload %s: %s, %s, %s%s\n", loc(up.Path), humanBytes(up.Size), expected, age, stale)
	}
	for _, r := range rep.Removed {
		if r.Reason == fsck.ReasonEmptyDirectory { // links were marked [removed] above
			fmt.Fprintf(w, "removed %s: %s\n", loc(r.Path), r.Reason)
		}
	}
	fmt.Fprintf(w, "%d blobs (%s) re-hashed, %d repositories, %d links, %d tags, %d uploads (%d stale) in %s: %s\n",
		rep.Blobs, humanBytes(rep.BlobBytes), rep.Repositories, rep.Links, rep.Tags,
		len(rep.Uploads), countStale(rep.Uploads), rep.Elapsed.Round(time.Millisecond), problemSummary(rep))
}

func countStale(ups []fsck.Upload) int {
	n := 0
	for _, up := range ups {
		if up.Stale {
			n++
		}
	}
	return n
}

func problemSummary(rep *fsck.Report) string {
	if rep.OK() {
		return "no problems"
	}
	s := fmt.Sprintf("%d problems", len(rep.Problems))
	if len(rep.Problems) == 1 {
		s = "1 problem"
	}
	if rep.Repair {
		s += fmt.Sprintf(", %d repaired", len(rep.Problems)-rep.Unrepaired())
	} else if n := rep.Repairable(); n > 0 {
		s += fmt.Sprintf(" (%d repairable with --repair)", n)
	}
	if n := needsRepush(rep); n > 0 {
		s += fmt.Sprintf(", %d need a re-push", n)
	}
	return s
}

func needsRepush(rep *fsck.Report) int {
	n := 0
	for _, p := range rep.Problems {
		if p.Fix == fsck.FixRepush {
			n++
		}
	}
	return n
}

// humanBytes prints n in the largest binary unit that keeps it >= 1.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// progressLine keeps one self-overwriting status line on a terminal. The
// store serialises calls to update.
type progressLine struct {
	w     io.Writer
	every time.Duration
	last  time.Time
	shown bool
	eta   etaClock
}

func (p *progressLine) update(pr fsck.Progress) {
	done := pr.BlobsDone == pr.BlobsTotal
	if !done && time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	pct := 100
	if pr.BytesTotal > 0 {
		pct = int(pr.BytesDone * 100 / pr.BytesTotal)
	}
	tail := p.eta.tail(pr.BytesDone, pr.BytesTotal, humanBytes)
	if done {
		tail = ", checking links"
	}
	fmt.Fprintf(p.w, "\rregfs fsck: blobs %d/%d, %s/%s (%d%%)%s\x1b[K",
		pr.BlobsDone, pr.BlobsTotal, humanBytes(pr.BytesDone), humanBytes(pr.BytesTotal), pct, tail)
	p.shown = true
}

// etaClock turns how much of a long run is done into a rate and the time
// left, for progress lines.
type etaClock struct {
	now   func() time.Time // nil means time.Now
	start time.Time        // set by the first call of tail
}

// tail is ", RATE/s, ETA D" for done of total, with the rate formatted by
// unit, measured from tail's first call; "" until there is a rate.
func (c *etaClock) tail(done, total int64, unit func(int64) string) string {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	t := now()
	if c.start.IsZero() {
		c.start = t
		return ""
	}
	elapsed := t.Sub(c.start)
	if elapsed <= 0 || done <= 0 || total <= done {
		return ""
	}
	rate := float64(done) / elapsed.Seconds()
	left := time.Duration(float64(total-done) / rate * float64(time.Second))
	return fmt.Sprintf(", %s/s, ETA %s", unit(int64(rate)), left.Round(time.Second))
}

// clear erases the line, so the report starts on a clean line.
func (p *progressLine) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
