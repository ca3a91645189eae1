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
	"strconv"
	"strings"
	"time"

	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/gc"
)

// Exit statuses of regfs gc.
const (
	gcExitOK     = 0
	gcExitErrors = 1
	gcExitUsage  = 2
)

// GCConfig is everything regfs gc needs, from the command line.
type GCConfig struct {
	Storage
	DryRun             bool
	JSON               bool
	Grace              time.Duration
	DeleteUntagged     bool
	UnreferencedLayers bool
	UploadAge          time.Duration
	PruneEmpty         bool
	Workers            int
}

// newGCFlags defines the gc flags on cfg.
func newGCFlags(cfg *GCConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("regfs gc", flag.ContinueOnError)
	addStorageFlags(fs, &cfg.Storage, false)
	fs.BoolVar(&cfg.DryRun, "dry-run", false, "print what would be deleted; delete nothing")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON on stdout")
	fs.DurationVar(&cfg.Grace, "grace", gc.DefaultGrace, "delete nothing written or re-linked less than `AGE` ago\n(default 1h; 0: no window)")
	fs.BoolVar(&cfg.DeleteUntagged, "delete-untagged", false, "delete revisions no tag points at (children of kept indexes\nand referrers of kept manifests stay)")
	fs.BoolVar(&cfg.UnreferencedLayers, "unreferenced-layers", false, "remove _layers links no kept manifest of their repository\nreferences (the registry's rule)")
	fs.DurationVar(&cfg.UploadAge, "upload-age", gc.DefaultUploadAge, "remove uploads started more than `AGE` ago (default 168h)")
	fs.BoolVar(&cfg.PruneEmpty, "prune-empty", false, "remove repositories left with nothing in them")
	fs.IntVar(&cfg.Workers, "workers", gc.DefaultWorkers, "read `N` manifests at once (default 8)")
	return fs
}

// gcUsage is regfs gc --help.
func gcUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(`Usage: regfs gc [flags]

Delete what nothing needs any more: blobs no repository links and no kept
manifest references, uploads older than --upload-age, and with flags untagged
revisions, unreferenced _layers links and empty repositories. Safe to run while
registries and regfs mounts use the storage: nothing written or re-linked
within the grace window is deleted, each deletion is checked again just
before it happens, and a run that is interrupted can simply be run again.

Live: every tagged revision; every untagged revision unless --delete-untagged;
children of kept manifest lists and OCI indexes; manifests whose OCI subject
is kept (signatures, SBOMs); the config and layers of every kept manifest;
every blob linked in a repository's _layers (rm of the last link frees it).

On a terminal, a progress line goes to stderr.

Exit status: 0 done (or nothing to do), 1 errors (the report says which),
2 usage error.

Flags:
`)
	writeFlags(&b, fs)
	b.WriteString(`
Examples:
  regfs gc --root /var/lib/docker-registry --dry-run
  regfs gc --root /var/lib/docker-registry --delete-untagged --prune-empty
  regfs gc --driver s3 --s3-bucket registry --s3-endpoint http://127.0.0.1:7070 --json
`)
	return b.String()
}

// parseGC parses regfs gc's arguments. --help prints the usage to stdout
// and returns flag.ErrHelp.
func parseGC(args []string, stdout io.Writer) (GCConfig, error) {
	var cfg GCConfig
	fs := newGCFlags(&cfg)
	if err := parseStorageCommand(fs, args, stdout, gcUsage); err != nil {
		return cfg, err
	}
	if cfg.Grace < 0 {
		return cfg, errors.New("--grace must not be negative")
	}
	if cfg.UploadAge <= 0 {
		return cfg, errors.New("--upload-age must be positive")
	}
	if cfg.Workers <= 0 {
		return cfg, errors.New("--workers must be positive")
	}
	return cfg, checkStorage(&cfg.Storage, false)
}

// gcMain runs regfs gc and returns its exit status.
func gcMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseGC(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return gcExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "regfs gc: %v\nRun 'regfs gc --help' for usage.\n", err)
		return gcExitUsage
	}
	return runGC(ctx, cfg, stdout, stderr, isTerminal(stderr))
}

// runGC collects the garbage of the storage cfg names, prints the report
// and returns the exit status.
func runGC(ctx context.Context, cfg GCConfig, stdout, stderr io.Writer, progress bool) int {
	if cfg.Driver == driverFilesystem {
		// The filesystem driver creates a missing root; gc must not.
		fi, err := os.Stat(cfg.Root)
		if err != nil || !fi.IsDir() {
			fmt.Fprintf(stderr, "regfs gc: storage root %s is not a directory\n", cfg.Root)
			return gcExitErrors
		}
	}
	d, err := openDriver(ctx, cfg.Storage)
	if err != nil {
		fmt.Fprintf(stderr, "regfs gc: %v\n", err)
		return gcExitErrors
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(d, store.Options{Logger: quiet})
	if err != nil {
		fmt.Fprintf(stderr, "regfs gc: %v\n", err)
		return gcExitErrors
	}
	opts := gc.Options{
		DryRun:             cfg.DryRun,
		Grace:              cfg.Grace,
		DeleteUntagged:     cfg.DeleteUntagged,
		UnreferencedLayers: cfg.UnreferencedLayers,
		UploadAge:          cfg.UploadAge,
		PruneEmpty:         cfg.PruneEmpty,
		Workers:            cfg.Workers,
		// Deletions are printed in the report; the log would repeat them.
		Logger: quiet,
	}
	var pl *gcProgress
	if progress {
		pl = &gcProgress{w: stderr, every: 200 * time.Millisecond}
		opts.Progress = pl.update
	}
	rep, gerr := gc.Run(ctx, st, d, opts)
	if pl != nil {
		pl.clear()
	}
	code := gcExitOK
	if gerr != nil || !rep.OK() {
		code = gcExitErrors
	}
	if cfg.JSON {
		out := gcJSON{Driver: cfg.Driver, Root: cfg.Root, Bucket: cfg.S3Bucket, Prefix: cfg.S3Prefix,
			Report: rep, ElapsedSeconds: rep.Elapsed.Seconds(), Complete: gerr == nil, ExitCode: code}
		if gerr != nil {
			out.Error = gerr.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "regfs gc: writing the report: %v\n", err)
			return gcExitErrors
		}
	} else {
		printGC(stdout, rep)
	}
	if gerr != nil {
		fmt.Fprintf(stderr, "regfs gc: stopped: %v (run it again to finish: every deletion so far left the storage consistent)\n", gerr)
	}
	return code
}

// gcJSON is the --json report.
type gcJSON struct {
	Driver string `json:"driver"`
	Root   string `json:"root,omitempty"`
	Bucket string `json:"bucket,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	*gc.Report
	ElapsedSeconds float64 `json:"elapsedSeconds"`
	// Complete is false when the run stopped early.
	Complete bool   `json:"complete"`
	Error    string `json:"error,omitempty"`
	ExitCode int    `json:"exitCode"`
}

// printGC prints the report for a person: each deletion, one line per
// repository, then the total.
func printGC(w io.Writer, rep *gc.Report) {
	verb := map[bool][2]string{false: {"deleted", "removed"}, true: {"would delete", "would remove"}}[rep.DryRun]
	for _, rr := range rep.Repositories {
		for _, d := range rr.Revisions {
			fmt.Fprintf(w, "%s revision %s@%s\n", verb[0], rr.Name, d)
		}
		for _, d := range rr.Links {
			fmt.Fprintf(w, "%s link %s/_layers/%s\n", verb[1], rr.Name, d)
		}
		for _, up := range rr.Uploads {
			fmt.Fprintf(w, "%s upload %s/_uploads/%s (%s)\n", verb[1], rr.Name, up.ID, humanBytes(up.Size))
		}
	}
	for _, b := range rep.Blobs {
		fmt.Fprintf(w, "%s blob %s (%s)\n", verb[0], b.Digest, humanBytes(b.Size))
	}
	for _, rr := range rep.Repositories {
		if rr.Removed {
			fmt.Fprintf(w, "%s empty repository %s\n", verb[1], rr.Name)
		}
	}
	for _, rr := range rep.Repositories {
		fmt.Fprintf(w, "%s: %s\n", rr.Name, countsLine(len(rr.Revisions), len(rr.Links), len(rr.Uploads), rr.Blobs, rr.Bytes, rep.DryRun))
	}
	if rep.BlobSweepSkipped != "" {
		fmt.Fprintf(w, "no blob deleted: %s\n", rep.BlobSweepSkipped)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "error: %s\n", p)
	}
	t := rep.Total
	line := countsLine(t.Revisions, t.Links, t.Uploads, t.Blobs, t.Bytes, rep.DryRun)
	if t.Repositories > 0 {
		line += fmt.Sprintf(", %s", plural(t.Repositories, "empty repository", "empty repositories"))
	}
	sc := rep.Scanned
	fmt.Fprintf(w, "total: %s; scanned %s, %s, %s (%s) in %s",
		line, plural(sc.Repositories, "repository", "repositories"), plural(sc.Revisions, "revision", "revisions"),
		plural(sc.Blobs, "blob", "blobs"), humanBytes(sc.BlobBytes), rep.Elapsed.Round(time.Millisecond))
	if sp := rep.Spared; sp.Grace+sp.Recheck+sp.Fenced > 0 {
		fmt.Fprintf(w, "; spared %d inside the grace window, %d on re-check, %d in use by the mount", sp.Grace, sp.Recheck, sp.Fenced)
	}
	fmt.Fprintln(w)
}

// countsLine says what went, or would go, and how many bytes.
func countsLine(revisions, links, uploads, blobs int, bytes int64, dry bool) string {
	var parts []string
	for _, c := range []struct {
		n              int
		single, plural string
	}{
		{revisions, "revision", "revisions"}, {links, "link", "links"},
		{uploads, "upload", "uploads"}, {blobs, "blob", "blobs"},
	} {
		if c.n > 0 {
			parts = append(parts, plural(c.n, c.single, c.plural))
		}
	}
	if len(parts) == 0 {
		parts = []string{"nothing"}
	}
	what := "reclaimed"
	if dry {
		what = "reclaimable"
	}
	return fmt.Sprintf("%s, %s %s", strings.Join(parts, ", "), humanBytes(bytes), what)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// gcProgress keeps one self-overwriting status line on a terminal; gc
// serialises calls to update.
type gcProgress struct {
	w     io.Writer
	every time.Duration
	last  time.Time
	shown bool
	eta   etaClock
	phase string
}

func (p *gcProgress) update(pr gc.Progress) {
	if pr.Done != pr.Total && time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	if pr.Total == 0 {
		fmt.Fprintf(p.w, "\rregfs gc: %s\x1b[K", pr.Phase)
	} else {
		if pr.Phase != p.phase {
			// A rate is per phase: each counts its own items.
			p.phase, p.eta.start = pr.Phase, time.Time{}
		}
		tail := p.eta.tail(int64(pr.Done), int64(pr.Total), func(n int64) string { return strconv.FormatInt(n, 10) })
		fmt.Fprintf(p.w, "\rregfs gc: %s %d/%d%s\x1b[K", pr.Phase, pr.Done, pr.Total, tail)
	}
	p.shown = true
}

func (p *gcProgress) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
