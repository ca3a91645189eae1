// Command regfs-bench measures regfs's speed (issue 6) side by side with
// what it is built on, in one run, and prints one markdown table.
//
//	go run ./cmd/regfs-bench [-regfs bin/regfs] [-bench-size 1G] [-repos 10000] [-runs 3]
//
// It makes its own data in a temporary directory (a random layer, a larger
// one for the memory test, a registry of many repositories written directly
// in docker/distribution's format), builds regfs unless -regfs names a
// binary, and compares:
//
//   - regfs reading a layer with a bare bazil.org/fuse passthrough file
//     system (this program, re-executed as a child) mounted with the very
//     options regfs mounts with (fs.MountOptions), serving the same file;
//     the ratio is then regfs's own cost;
//   - regfs with reading the blob file directly (kernel page cache);
//   - where rclone is installed, `rclone mount` of the backing directory;
//   - an upload through regfs with Go's sha256 over the same bytes alone and
//     with a bare write of the same bytes;
//   - listing through regfs with listing the backing directory.
//
// Every figure is the median of -runs runs. Every mount is made fresh where
// a cold regfs cache is wanted; the system page cache is never dropped (the
// machine is shared): backing files are read once first so they are in it.
// Every mount is unmounted and the temporary directory removed at the end,
// on an error and on SIGINT or SIGTERM too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/regfs/regfs/cmd/internal/size"
)

func main() {
	if os.Getenv(bareEnvMount) != "" {
		os.Exit(bareMain())
	}
	os.Exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

// Config is what one benchmark run measures, from the command line.
type Config struct {
	// LayerSize is the size of the layer read by P1, P2, P6 and P7 and of
	// the upload of P3.
	LayerSize int64
	// BigSize is the size of the layer P5 reads twice in parallel.
	BigSize int64
	// Repos is the number of repositories P4 lists.
	Repos int
	// Runs is how many times each figure is measured; the median is shown.
	Runs int
	// RandomReads is the number of 4 KiB reads of P6.
	RandomReads int
	// ImageFiles is the number of files in the image of F3 and F4.
	ImageFiles int
	// CacheSize is regfs's block cache budget (--cache-size).
	CacheSize int64
	// Regfs is a regfs binary to measure; empty builds ./cmd/regfs.
	Regfs string
	// Rclone adds rclone mount as a peer when it is installed.
	Rclone bool
	// Only, when not empty, limits the run to these measurements ("P1",
	// "P4", ...; P1 and P2 are one measurement), to look at one change.
	Only []string
	// TempDir is where the temporary directory is made; empty means
	// os.TempDir(). It needs room for about 2 x LayerSize + BigSize.
	TempDir string
}

// defaultConfig is the benchmark.
func defaultConfig() Config {
	return Config{
		LayerSize:   1 << 30,
		Repos:       10000,
		Runs:        3,
		RandomReads: 2000,
		ImageFiles:  20000,
		CacheSize:   256 << 20,
		Rclone:      true,
	}
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "regfs-bench: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "regfs-bench: %v\n", err)
		return 1
	}
	rep.write(stdout)
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := defaultConfig()
	fl := flag.NewFlagSet("regfs-bench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Var(size.Flag{N: &cfg.LayerSize}, "bench-size", "layer `SIZE` (K, M, G suffixes): P1-P3, P6, P7; tiny sizes (4M) check that the code still runs")
	bigSize := fl.String("big-size", "", "`SIZE` of the layer P5 reads twice in parallel (default 4 x -bench-size)")
	fl.IntVar(&cfg.Repos, "repos", cfg.Repos, "`N` repositories for P4")
	fl.IntVar(&cfg.Runs, "runs", cfg.Runs, "`N` runs per figure (the median is shown)")
	fl.IntVar(&cfg.RandomReads, "random-reads", cfg.RandomReads, "`N` random 4 KiB reads for P6")
	fl.IntVar(&cfg.ImageFiles, "image-files", cfg.ImageFiles, "`N` files in the image of F3 and F4")
	fl.Var(size.Flag{N: &cfg.CacheSize}, "cache-size", "regfs block cache budget `SIZE`")
	fl.StringVar(&cfg.Regfs, "regfs", "", "regfs `BINARY` to measure (default: go build ./cmd/regfs)")
	fl.BoolVar(&cfg.Rclone, "rclone", cfg.Rclone, "add rclone mount as a peer for P1/P2 when installed")
	only := fl.String("only", "", "measure only these, comma-separated (`P1,S1,F3,R1`; P1 and P2 go together, as do S1 and S2, S3 and S4, F3 and F4, R1 to R3)")
	fl.StringVar(&cfg.TempDir, "tmpdir", "", "parent `DIR` of the temporary directory (default $TMPDIR or /tmp)")
	if err := fl.Parse(args); err != nil {
		return cfg, err
	}
	if fl.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	cfg.BigSize = 4 * cfg.LayerSize
	if *only != "" {
		for _, id := range strings.Split(*only, ",") {
			id = strings.ToUpper(strings.TrimSpace(id))
			switch id {
			case "P2":
				id = "P1"
			case "F4":
				id = "F3"
			case "S4":
				id = "S3"
			case "S2":
				id = "S1"
			}
			if id == "R1" || id == "R2" || id == "R3" {
				id = "R" // the remote rows share one registry and dataset
			}
			if !knownMeasurement(id) {
				return cfg, fmt.Errorf("-only: unknown measurement %q: want P1 to P8, S1 to S6, F3, F4 or R1 to R3", id)
			}
			cfg.Only = append(cfg.Only, id)
		}
	}
	if *bigSize != "" {
		n, err := size.Parse(*bigSize)
		if err != nil {
			return cfg, err
		}
		cfg.BigSize = n
	}
	switch {
	case cfg.LayerSize < 64<<10:
		return cfg, errors.New("-bench-size must be at least 64K")
	case cfg.Repos < 1:
		return cfg, errors.New("-repos must be at least 1")
	case cfg.Runs < 1:
		return cfg, errors.New("-runs must be at least 1")
	case cfg.ImageFiles < 1:
		return cfg, errors.New("-image-files must be at least 1")
	case cfg.RandomReads < 1:
		return cfg, errors.New("-random-reads must be at least 1")
	}
	return cfg, nil
}

// formatBytes prints n with the largest exact binary suffix.
func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + " " + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + " B"
}

// knownMeasurement tells whether id names a row -only can select.
func knownMeasurement(id string) bool {
	if id == "F3" || id == "R" {
		return true
	}
	if len(id) != 2 {
		return false
	}
	switch id[0] {
	case 'P':
		return id[1] >= '1' && id[1] <= '8'
	case 'S':
		return id[1] >= '1' && id[1] <= '6'
	}
	return false
}
