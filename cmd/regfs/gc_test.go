package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/gc"
)

// gcRoot is a filesystem storage root holding repository "app" with a
// linked blob and an unlinked one, all written two hours ago.
type gcRoot struct {
	root           string
	linked, loose  digest.Digest
	looseDataPath  string
	linkedDataPath string
}

func newGCRoot(t *testing.T) gcRoot {
	t.Helper()
	ctx := context.Background()
	g := gcRoot{root: t.TempDir()}
	repo, push := testRepo(t, g.root)
	g.linked = push([]byte("linked"))
	g.loose = push(bytes.Repeat([]byte("loose"), 300))
	if err := repo.Layers().Unlink(ctx, g.loose); err != nil {
		t.Fatal(err)
	}
	p, _ := store.Location{Kind: store.PathBlobData, Digest: g.loose}.Path()
	g.looseDataPath = filepath.Join(g.root, p)
	p, _ = store.Location{Kind: store.PathBlobData, Digest: g.linked}.Path()
	g.linkedDataPath = filepath.Join(g.root, p)
	err := filepath.WalkDir(g.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		old := time.Now().Add(-2 * time.Hour)
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestGCUsage(t *testing.T) {
	root := t.TempDir()
	for _, args := range [][]string{
		{"--root", root, "extra"},
		{"--root", root, "--grace", "-1s"},
		{"--root", root, "--upload-age", "0"},
		{"--root", root, "--workers", "0"},
		{"--driver", "inmemory"},
		{"--no-such-flag"},
	} {
		var out, errb bytes.Buffer
		if code := regfs(append([]string{"gc"}, args...), &out, &errb); code != gcExitUsage {
			t.Errorf("gc %q: exit %d, want %d (%s)", args, code, gcExitUsage, errb.String())
		}
		if !strings.Contains(errb.String(), "regfs gc --help") {
			t.Errorf("gc %q: no pointer to --help in %q", args, errb.String())
		}
	}
	var out bytes.Buffer
	if code := regfs([]string{"gc", "--help"}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "--delete-untagged") {
		t.Fatalf("gc --help: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := regfs([]string{"help", "gc"}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "--grace AGE") {
		t.Fatalf("help gc: exit %d\n%s", code, out.String())
	}
	if code := regfs([]string{"gc", "--root", filepath.Join(root, "missing")}, io.Discard, io.Discard); code != gcExitErrors {
		t.Fatalf("missing root: exit %d, want %d", code, gcExitErrors)
	}
	if exists(filepath.Join(root, "missing")) {
		t.Fatal("gc created the missing root")
	}
}

func TestGCDryRunThenRun(t *testing.T) {
	g := newGCRoot(t)
	var out, errb bytes.Buffer
	if code := regfs([]string{"gc", "--root", g.root, "--dry-run"}, &out, &errb); code != gcExitOK {
		t.Fatalf("dry run: exit %d: %s", code, errb.String())
	}
	want := "would delete blob " + g.loose.String() + " (1.5 KiB)\n"
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "total: 1 blob, 1.5 KiB reclaimable;") {
		t.Fatalf("dry run printed\n%s\nwant %q and the total", out.String(), want)
	}
	if !exists(g.looseDataPath) {
		t.Fatal("dry run deleted the blob")
	}
	out.Reset()
	if code := regfs([]string{"gc", "--root", g.root, "--json"}, &out, &errb); code != gcExitOK {
		t.Fatalf("run: exit %d: %s", code, errb.String())
	}
	var rep struct {
		DryRun bool `json:"dryRun"`
		Blobs  []struct {
			Digest digest.Digest `json:"digest"`
			Size   int64         `json:"size"`
		} `json:"blobs"`
		Total struct {
			Blobs int   `json:"blobs"`
			Bytes int64 `json:"bytes"`
		} `json:"total"`
		Complete bool `json:"complete"`
		ExitCode int  `json:"exitCode"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if rep.DryRun || !rep.Complete || rep.ExitCode != 0 || len(rep.Blobs) != 1 || rep.Blobs[0].Digest != g.loose ||
		rep.Blobs[0].Size != 1500 || rep.Total.Blobs != 1 || rep.Total.Bytes != 1500 {
		t.Fatalf("report %+v", rep)
	}
	if exists(g.looseDataPath) || !exists(g.linkedDataPath) {
		t.Fatal("wrong blob deleted")
	}
	// The storage checks clean afterwards.
	if code := regfs([]string{"fsck", "--root", g.root}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("fsck after gc: exit %d", code)
	}
}

func TestGCGraceFlag(t *testing.T) {
	g := newGCRoot(t)
	var out bytes.Buffer
	if code := regfs([]string{"gc", "--root", g.root, "--grace", "3h"}, &out, io.Discard); code != gcExitOK {
		t.Fatalf("exit %d", code)
	}
	if !exists(g.looseDataPath) || !strings.Contains(out.String(), "spared 1 inside the grace window") {
		t.Fatalf("a blob written 2h ago was not spared by --grace 3h:\n%s", out.String())
	}
}

// A tagged manifest that cannot be parsed makes what it references
// unknown: no blob is deleted, and the exit status says so.
func TestGCUnreadableManifestKeepsBlobs(t *testing.T) {
	g := newGCRoot(t)
	ctx := context.Background()
	d, err := filesystem.New(g.root)
	if err != nil {
		t.Fatal(err)
	}
	junk := []byte("not a manifest")
	md := digest.FromBytes(junk)
	dataPath, _ := store.Location{Kind: store.PathBlobData, Digest: md}.Path()
	revPath, _ := store.Location{Kind: store.PathRevisionLink, Repository: "app", Digest: md}.Path()
	tagPath, _ := store.Location{Kind: store.PathTagCurrentLink, Repository: "app", Tag: "v1"}.Path()
	for p, c := range map[string][]byte{dataPath: junk, revPath: []byte(md), tagPath: []byte(md)} {
		if err := d.PutContent(ctx, p, c); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if code := regfs([]string{"gc", "--root", g.root, "--grace", "0"}, &out, io.Discard); code != gcExitErrors {
		t.Fatalf("exit %d, want %d\n%s", code, gcExitErrors, out.String())
	}
	if !exists(g.looseDataPath) || !strings.Contains(out.String(), "no blob deleted: a kept manifest of app could not be read") {
		t.Fatalf("blob deleted or no reason given:\n%s", out.String())
	}
}

func TestMountGCFlags(t *testing.T) {
	cfg, err := parseMount([]string{"--gc-interval", "10m", "--root", t.TempDir(), "mnt"}, io.Discard, io.Discard)
	if err != nil || cfg.GCInterval != 10*time.Minute || cfg.GCGrace != time.Hour {
		t.Fatalf("parse: %+v %v", cfg, err)
	}
	for _, args := range [][]string{
		{"--gc-interval", "10m", "--read-only", "mnt"},
		{"--gc-interval", "-1s", "mnt"},
		{"--gc-grace", "-1s", "mnt"},
	} {
		if _, err := parseMount(append(args, "--root", t.TempDir()), io.Discard, io.Discard); err == nil {
			t.Errorf("parseMount %q accepted", args)
		}
	}
}

func TestGCLast(t *testing.T) {
	var l gc.Last
	if l.Get() != nil {
		t.Fatal("a summary before any run")
	}
	l.Record(time.Now(), &gc.Report{Total: gc.Totals{Blobs: 3}, Problems: []string{"x"}}, nil)
	l.Record(time.Now(), &gc.Report{Total: gc.Totals{Blobs: 2}}, nil)
	if s := l.Get(); s.Runs != 2 || s.Total.Blobs != 2 || s.Problems != 0 {
		t.Fatalf("summary %+v", s)
	}
}

// On a terminal a progress line goes to stderr and is erased before the
// report; elsewhere stderr stays empty.
func TestGCProgressLine(t *testing.T) {
	g := newGCRoot(t)
	cfg, err := parseGC([]string{"--root", g.root, "--dry-run"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runGC(context.Background(), cfg, &out, &errb, true); code != gcExitOK {
		t.Fatalf("exit %d", code)
	}
	if s := errb.String(); !strings.HasPrefix(s, "\rregfs gc: ") || !strings.HasSuffix(s, "\r\x1b[K") {
		t.Fatalf("progress on a terminal: %q", s)
	}
	errb.Reset()
	if code := runGC(context.Background(), cfg, &out, &errb, false); code != gcExitOK || errb.Len() != 0 {
		t.Fatalf("exit %d, stderr %q without a terminal", code, errb.String())
	}
}
