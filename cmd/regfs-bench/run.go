package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// readBuf is the size of the reads the benchmark makes: large enough that
// the reader's system calls are not what is measured.
const readBuf = 1 << 20

// bench is one benchmark run: its configuration, data and mounts.
type bench struct {
	cfg    Config
	log    *slog.Logger
	tmp    string
	ds     *dataset
	regfs  string
	self   string
	rclone string
	mounts *mountSet
	// mntSeq numbers the mountpoints, each used once.
	mntSeq int
	// readAhead is the read_ahead_kb of the kernel bdi each kind of mount
	// had, for the report.
	readAhead map[string]int
	// s3env is the S3 server of the S rows, once started (s3read.go).
	s3env *s3Env
}

// run builds regfs, makes the data, measures and returns the report. Every
// mount is gone and the temporary directory removed when it returns.
func run(ctx context.Context, cfg Config, log *slog.Logger) (rep *Report, err error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("FUSE is not available: %v", err)
	}
	tmp, err := os.MkdirTemp(cfg.TempDir, "regfs-bench-")
	if err != nil {
		return nil, err
	}
	if tmp, err = filepath.EvalSymlinks(tmp); err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, log: log, tmp: tmp, mounts: newMountSet(tmp), readAhead: map[string]int{}}
	// On SIGINT or SIGTERM, unmount at once: a read blocked in a FUSE call
	// then returns, and the run ends through its error path.
	stopWatch := context.AfterFunc(ctx, func() { _ = b.mounts.closeAll() })
	defer func() {
		stopWatch()
		if cerr := b.mounts.closeAll(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if serr := b.closeS3(); serr != nil {
			err = errors.Join(err, serr)
		}
		if left, merr := mountsBelow(tmp); merr != nil || len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("not removing %s: still mounted below it: %v %v", tmp, left, merr))
			return
		}
		if rerr := os.RemoveAll(tmp); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
	}()

	if b.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if b.regfs, err = b.buildRegfs(ctx); err != nil {
		return nil, err
	}
	if cfg.Rclone {
		if p, err := exec.LookPath("rclone"); err == nil {
			b.rclone = p
		}
	}
	start := time.Now()
	log.Info("generating data", "layer", formatBytes(cfg.LayerSize), "big", formatBytes(cfg.BigSize), "repositories", cfg.Repos)
	if b.ds, err = makeDataset(ctx, tmp, cfg); err != nil {
		return nil, fmt.Errorf("generating data: %w", err)
	}
	log.Info("data ready", "took", time.Since(start).Round(time.Millisecond))
	// "Backing file in page cache": read each once; the system page cache
	// is never dropped.
	for _, p := range []string{b.ds.layer.path, b.ds.big.path, b.ds.upload.path} {
		if _, _, err := readAll(p); err != nil {
			return nil, err
		}
	}

	rep = newReport(cfg)
	for _, step := range []struct {
		id, name string
		fn       func(context.Context, *Report) error
	}{
		{"P1", "P1/P2 sequential reads", b.sequentialReads},
		{"P3", "P3 upload", b.upload},
		{"P4", "P4 listing", b.listing},
		{"P5", "P5 memory", b.memory},
		{"P6", "P6 random reads", b.randomReads},
		{"P7", "P7 first byte", b.firstByte},
		{"P8", "P8 gc dry run", b.gcDryRun},
		{"S1", "S1/S2 sequential reads on S3", b.s3SequentialReads},
		{"S5", "S5 first byte on S3", b.s3FirstByte},
		{"S6", "S6 memory on S3", b.s3Memory},
		{"F3", "F3/F4 image files", b.imageFiles},
		{"R", "R1-R3 remote registry", b.remote},
		{"S3", "S3/S4 uploads and listings on S3", b.s3Writes},
	} {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, step.id) {
			continue
		}
		t := time.Now()
		log.Info("measuring", "what", step.name)
		if err := step.fn(ctx, rep); err != nil {
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
		log.Info("measured", "what", step.name, "took", time.Since(t).Round(time.Millisecond))
	}
	rep.Machine = b.machine(ctx)
	rep.Took = time.Since(start)
	return rep, nil
}

// buildRegfs returns cfg.Regfs, or builds ./cmd/regfs of the module this
// program belongs to into the temporary directory.
func (b *bench) buildRegfs(ctx context.Context) (string, error) {
	if b.cfg.Regfs != "" {
		return filepath.Abs(b.cfg.Regfs)
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module (go env GOMOD): %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the regfs module: run from the repository or pass -regfs")
	}
	bin := filepath.Join(b.tmp, "regfs")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/regfs")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/regfs: %v\n%s", err, out)
	}
	return bin, nil
}

// newMountpoint returns a fresh directory to mount on.
func (b *bench) newMountpoint(kind string) string {
	b.mntSeq++
	return filepath.Join(b.tmp, "mnt", fmt.Sprintf("%s-%d", kind, b.mntSeq))
}

// startRegfs mounts the registry with regfs, its cache empty, with more
// regfs mount flags when given.
func (b *bench) startRegfs(cacheSize int64, flags ...string) (*mount, error) {
	dir := b.newMountpoint("regfs")
	argv := []string{
		b.regfs, "mount", "--driver", "filesystem", "--root", b.ds.root,
		"--cache-size", strconv.FormatInt(cacheSize, 10),
	}
	argv = append(append(argv, flags...), dir)
	return b.mounts.start("regfs", dir, argv, nil, "msg=mounted")
}

// startBare mounts the bare passthrough of dir.
func (b *bench) startBare(dir string) (*mount, error) {
	return b.startBareWith("bare", dir)
}

// startBareWriteback mounts the bare passthrough of dir with the kernel's
// FUSE writeback cache on: the fastest write path bazil offers (writes are
// batched in the page cache and sent in parallel, out of order).
func (b *bench) startBareWriteback(dir string) (*mount, error) {
	return b.startBareWith("bare-wb", dir, bareEnvWriteback+"=1")
}

// startBareWith mounts the bare passthrough of dir at a new mountpoint
// named after name, with env added to the server's environment.
func (b *bench) startBareWith(name, dir string, env ...string) (*mount, error) {
	mnt := b.newMountpoint(name)
	return b.mounts.start("bare", mnt, []string{b.self},
		append([]string{bareEnvMount + "=" + mnt, bareEnvDir + "=" + dir}, env...), bareReady)
}

// startRclone mounts the registry's root with rclone, read-only, with its
// default options.
func (b *bench) startRclone() (*mount, error) {
	dir := b.newMountpoint("rclone")
	return b.mounts.start("rclone", dir, []string{
		b.rclone, "mount", "--read-only", "--config", os.DevNull, b.ds.root, dir,
	}, nil, "")
}

// statsSnapshot is the part of .regfs/stats the benchmark reads. It is
// decoded from the JSON, the interface users see, so that a counter regfs
// does not have (yet) reads as absent.
type statsSnapshot struct {
	Cache *struct {
		Loads int64 `json:"loads"`
	} `json:"cache"`
	// DriverCalls counts storage driver calls by method.
	DriverCalls map[string]int64 `json:"driver_calls"`
	// FuseOps counts the FUSE requests served, by operation.
	FuseOps map[string]struct {
		Requests int64 `json:"requests"`
	} `json:"fuse_ops"`
}

// fuseRequests is the number of FUSE requests served between two
// snapshots.
func fuseRequests(before, after statsSnapshot) int64 {
	var n int64
	for op, a := range after.FuseOps {
		n += a.Requests - before.FuseOps[op].Requests
	}
	return n
}

// regfsStats reads .regfs/stats of a regfs mount.
func regfsStats(mnt string) (statsSnapshot, error) {
	var s statsSnapshot
	raw, err := os.ReadFile(filepath.Join(mnt, ".regfs", "stats"))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(raw, &s)
}

// readAll reads the file at path from start to end in readBuf reads, and
// returns how many bytes it read and how long opening and reading took.
func readAll(path string) (int64, time.Duration, error) {
	buf := make([]byte, readBuf)
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var n int64
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, 0, err
		}
	}
	return n, time.Since(start), nil
}

// readSize reads path whole and checks it has size bytes.
func readSize(path string, size int64) (time.Duration, error) {
	n, d, err := readAll(path)
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("read %d bytes of %s, want %d", n, path, size)
	}
	return d, nil
}

// runCmd runs a command with the C locale, its output going to stdout (nil
// discards it), and returns how long it took.
func runCmd(ctx context.Context, stdout io.Writer, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout = stdout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return d, nil
}

// lineCounter counts the lines written to it.
type lineCounter struct{ n int }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += bytes.Count(p, []byte{'\n'})
	return len(p), nil
}

// withMount takes what a start method returns and gives a function that
// runs fn on the mount and stops the mount afterwards, whatever fn returns.
// The kernel read-ahead the mount had while in use goes in the report.
func (b *bench) withMount(m *mount, err error) func(fn func(m *mount) error) error {
	return func(fn func(m *mount) error) error {
		if err != nil {
			return err
		}
		ferr := fn(m)
		b.readAhead[m.name] = m.readAheadKB()
		return errors.Join(ferr, m.stop())
	}
}
