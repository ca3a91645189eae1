package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/testenv"
)

// TestMain lets the test binary serve the bare passthrough when run()
// re-executes it, as the command does.
func TestMain(m *testing.M) {
	if os.Getenv(bareEnvMount) != "" {
		os.Exit(bareMain())
	}
	os.Exit(m.Run())
}

// needFUSE skips a test that mounts when the machine cannot.
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.SkipOrFail(t, "/dev/fuse is not available (%v): the benchmark mounts file systems", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		testenv.SkipOrFail(t, "fusermount3 is not installed: %v", err)
	}
}

// runTiny runs the benchmark of cfg (tinyConfig's, with its Only) and
// returns the report and its table, which it also logs.
func runTiny(t *testing.T, cfg Config) (*Report, string) {
	t.Helper()
	rep, err := run(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.write(&out)
	t.Log("\n" + out.String())
	return rep, out.String()
}

// tinyConfig is the benchmark on data small enough for a test.
func tinyConfig(t *testing.T) Config {
	cfg := defaultConfig()
	cfg.LayerSize = 4 << 20
	cfg.BigSize = 8 << 20
	cfg.Repos = 50
	cfg.Runs = 1
	cfg.RandomReads = 50
	cfg.ImageFiles = 300
	cfg.TempDir = t.TempDir()
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestBenchTiny runs the whole benchmark once on tiny data, so that it
// cannot rot: every measurement runs, through real mounts of regfs (built
// from this module), the bare passthrough and rclone where installed. No
// figure is checked against a target (speed stays out of the tests); what
// is checked is that each measurement produced figures, that listing read
// no blob, and that nothing is left behind.
func TestBenchTiny(t *testing.T) {
	needFUSE(t)
	cfg := tinyConfig(t)
	rep, out := runTiny(t, cfg)

	wantRows(t, rep, out, []rowWant{
		{"P1", "bare bazil passthrough"},
		{"P1", "reading the blob file directly"},
		{"P2", "reading the blob file directly"},
		{"P3", "Go crypto/sha256"},
		{"P3", "cp to the bare bazil passthrough"},
		{"P3", "cp to the bare passthrough with the FUSE writeback cache"},
		{"P4", "ls -l of the backing directory"},
		{"P4", "find on the backing directory"},
		{"P5", "the cache budget"},
		{"P6", "the same reads of the blob file"},
		{"P7", "head -c1 of the blob file"},
	})
	if _, err := exec.LookPath(umociBin); err == nil {
		wantRows(t, rep, "", []rowWant{
			{"F3", "find of the tree umoci unpacked"},
			{"F3", "find through the bare bazil passthrough"},
			{"F4", "umoci unpack"},
		})
	}
	if _, err := exec.LookPath("rclone"); err == nil {
		if _, ok := rep.row("P1", "rclone"); !ok {
			t.Error("rclone is installed but P1 has no rclone row")
		}
	}
	// Listing must read no blob: its rows say whether it did.
	n := 0
	for _, row := range rep.Rows {
		if row.ID == "P4" && strings.HasSuffix(row.What, "driver calls per listed entry") {
			n++
			if row.Met != "yes" {
				t.Errorf("%s: %s", row.What, row.CompareText)
			}
		}
	}
	if n != 4 {
		t.Errorf("%d P4 rows on driver calls and blob reads, want 4 (ls and find, cold and warm)", n)
	}
	checkS3Rows(t, rep, out)
	checkRemoteRows(t, rep)
	assertCleanedUp(t, cfg.TempDir)
}

// TestBenchInterrupted cancels a run while a file system is mounted, as
// SIGINT does, and checks that it unmounts everything and removes its
// data.
func TestBenchInterrupted(t *testing.T) {
	needFUSE(t)
	cfg := tinyConfig(t)
	cfg.Runs = 50 // long enough to be interrupted in the middle
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		done <- err
	}()
	deadline := time.After(2 * time.Minute)
wait:
	for {
		select {
		case err := <-done:
			t.Fatalf("the run ended before it mounted anything: %v", err)
		case <-deadline:
			t.Fatal("no mount appeared within 2 minutes")
		case <-time.After(5 * time.Millisecond):
		}
		if mounts, err := mountsBelow(cfg.TempDir); err != nil {
			t.Fatal(err)
		} else if len(mounts) > 0 {
			break wait
		}
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an interrupted run reported success")
		}
		t.Logf("interrupted run: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the interrupted run did not end within a minute")
	}
	assertCleanedUp(t, cfg.TempDir)
}

// assertCleanedUp checks that nothing is mounted below dir and that the
// run's temporary directory in it is gone.
func assertCleanedUp(t *testing.T, dir string) {
	t.Helper()
	mounts, err := mountsBelow(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) > 0 {
		for _, m := range mounts {
			lazyUnmount(m)
		}
		t.Fatalf("left mounted: %v", mounts)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("left in %s: %v", dir, left)
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-bench-size", "4M", "-repos", "50", "-runs", "1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LayerSize != 4<<20 || cfg.BigSize != 16<<20 || cfg.Repos != 50 || cfg.Runs != 1 {
		t.Errorf("got %+v", cfg)
	}
	if cfg, err = parseFlags(nil, io.Discard); err != nil || cfg.LayerSize != 1<<30 || cfg.BigSize != 4<<30 || cfg.Repos != 10000 {
		t.Errorf("defaults: %+v, %v; want the issue's 1 GiB, 4 GiB, 10000 repositories", cfg, err)
	}
	for _, args := range [][]string{{"-runs", "0"}, {"-bench-size", "1K"}, {"extra"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestMedian(t *testing.T) {
	s := samples{}
	if got := s.median("x"); got != 0 {
		t.Errorf("median of nothing = %v", got)
	}
	for _, v := range []float64{5, 1, 3} {
		s.add("x", v)
	}
	if got := s.median("x"); got != 3 {
		t.Errorf("median(5, 1, 3) = %v, want 3", got)
	}
	s.add("x", 10)
	if got := s.median("x"); got != 4 {
		t.Errorf("median(5, 1, 3, 10) = %v, want 4", got)
	}
}

// rowWant names a row of the report: its id and the start of what it is
// compared with.
type rowWant struct{ id, against string }

// wantRows checks that rep has each wanted row, with a positive value,
// comparison and ratio, and, unless table is "", that the table printed
// has a line for it.
func wantRows(t *testing.T, rep *Report, table string, wants []rowWant) {
	t.Helper()
	for _, want := range wants {
		row, ok := rep.row(want.id, want.against)
		if !ok {
			t.Errorf("no %s row against %q", want.id, want.against)
			continue
		}
		if row.Value <= 0 || row.Compare <= 0 || row.Ratio <= 0 {
			t.Errorf("%s against %q: value %v, comparison %v, ratio %v: want all positive", want.id, want.against, row.Value, row.Compare, row.Ratio)
		}
		if table != "" && !strings.Contains(table, "| "+want.id+" | ") {
			t.Errorf("the table has no %s line", want.id)
		}
	}
}
