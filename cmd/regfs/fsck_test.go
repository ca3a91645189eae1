package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/fsck"
	"github.com/regfs/regfs/store/gc"
)

// fsckRoot is a filesystem storage root holding repository "app" with a
// config, a layer, a tagged manifest and an upload in progress.
type fsckRoot struct {
	root             string
	config, layer    digest.Digest
	manifest, upload string
}

// testRepo opens the repository "app" on a filesystem root and returns it
// with a function that pushes bytes into it as a committed layer.
func testRepo(t *testing.T, root string) (store.Repository, func([]byte) digest.Digest) {
	t.Helper()
	ctx := context.Background()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(d, store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := st.Repository("app")
	if err != nil {
		t.Fatal(err)
	}
	return repo, func(b []byte) digest.Digest {
		t.Helper()
		up, err := repo.Uploads().Create(ctx, digest.FromBytes(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(b); err != nil {
			t.Fatal(err)
		}
		desc, err := up.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return desc.Digest
	}
}

func newFsckRoot(t *testing.T) fsckRoot {
	t.Helper()
	ctx := context.Background()
	fr := fsckRoot{root: t.TempDir()}
	repo, push := testRepo(t, fr.root)
	fr.config = push([]byte(`{"architecture":"amd64","os":"linux"}`))
	fr.layer = push(bytes.Repeat([]byte("layer "), 1000))
	mf := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + fr.config.String() + `","size":37},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + fr.layer.String() + `","size":6000}]}`
	dgst, err := repo.Manifests().Put(ctx, []byte(mf), "v1", "")
	if err != nil {
		t.Fatal(err)
	}
	fr.manifest = dgst.String()
	up, err := repo.Uploads().Create(ctx, digest.FromString("later"))
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	fr.upload = up.ID()
	return fr
}

// file returns the file name of a path below docker/registry/v2.
func (fr fsckRoot) file(rel string) string {
	return filepath.Join(fr.root, "docker/registry/v2", rel)
}

func (fr fsckRoot) blobFile(d digest.Digest) string {
	return fr.file("blobs/sha256/" + d.Encoded()[:2] + "/" + d.Encoded() + "/data")
}

// tree returns every file below root with its content, and every
// directory.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			out[p] = "<dir>"
			return nil
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fsckCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = regfs(append([]string{"fsck"}, args...), &o, &e)
	return code, o.String(), e.String()
}

func TestFsckCommandClean(t *testing.T) {
	fr := newFsckRoot(t)
	before := tree(t, fr.root)
	code, out, errOut := fsckCmd(t, "--root", fr.root)
	if code != 0 {
		t.Fatalf("exit %d on a clean root\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "3 blobs") || !strings.Contains(out, "no problems") {
		t.Errorf("summary:\n%s", out)
	}
	// The upload is listed with its file name and expected digest.
	upDir := fr.file("repositories/app/_uploads/" + fr.upload)
	if !strings.Contains(out, "upload "+upDir+": 0 B, for "+digest.FromString("later").String()) {
		t.Errorf("upload not listed:\n%s", out)
	}
	if errOut != "" {
		t.Errorf("stderr is not a terminal, yet: %q", errOut)
	}
	if diff := treeDiff(before, tree(t, fr.root)); diff != "" {
		t.Errorf("fsck changed the root:\n%s", diff)
	}
}

func treeDiff(a, b map[string]string) string {
	var out strings.Builder
	for p, c := range a {
		if bc, ok := b[p]; !ok || bc != c {
			out.WriteString("changed or removed " + p + "\n")
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out.WriteString("added " + p + "\n")
		}
	}
	return out.String()
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFsckCommandProblems(t *testing.T) {
	fr := newFsckRoot(t)
	corrupt := fr.blobFile(fr.layer)
	writeFile(t, corrupt, "flipped")
	missing := digest.FromString("missing")
	dangling := fr.file("repositories/app/_layers/sha256/" + missing.Encoded() + "/link")
	writeFile(t, dangling, missing.String())
	oldEntry := fr.file("repositories/app/_manifests/tags/v1/index/sha256/" + missing.Encoded() + "/link")
	writeFile(t, oldEntry, missing.String())
	manifest := digest.Digest(fr.manifest)
	newline := fr.file("repositories/app/_manifests/revisions/sha256/" + manifest.Encoded() + "/link")
	writeFile(t, newline, fr.manifest+"\n")
	before := tree(t, fr.root)

	code, out, _ := fsckCmd(t, "--root", fr.root)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"corrupt-blob " + corrupt + ": ", "dangling-link " + dangling + ": ", "dangling-link " + oldEntry + ": ",
		"malformed-link " + newline + ": ", "[needs re-push]", "4 problems (2 repairable with --repair), 2 need a re-push",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if diff := treeDiff(before, tree(t, fr.root)); diff != "" {
		t.Errorf("fsck without --repair changed the root:\n%s", diff)
	}

	// --json: the same findings, machine-readable, with storage paths.
	code, out, _ = fsckCmd(t, "--root", fr.root, "--json")
	if code != 1 {
		t.Fatalf("--json exit %d, want 1", code)
	}
	var rep struct {
		Driver   string `json:"driver"`
		Root     string `json:"root"`
		Blobs    int    `json:"blobs"`
		Complete bool   `json:"complete"`
		ExitCode int    `json:"exitCode"`
		Problems []struct {
			Kind, Path, Digest, Fix string
			Repaired                bool
		} `json:"problems"`
		Uploads []struct {
			ID         string `json:"id"`
			AgeSeconds int64  `json:"ageSeconds"`
			StartedAt  string `json:"startedAt"`
		} `json:"uploads"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if rep.Driver != "filesystem" || rep.Root != fr.root || rep.Blobs != 3 || !rep.Complete || rep.ExitCode != 1 {
		t.Errorf("report header %+v", rep)
	}
	fixes := map[string]string{}
	for _, p := range rep.Problems {
		fixes[filepath.Join(fr.root, p.Path)] = p.Kind + " " + p.Fix
	}
	if fixes[corrupt] != "corrupt-blob needs-repush" || fixes[dangling] != "dangling-link needs-repush" ||
		fixes[oldEntry] != "dangling-link remove" || fixes[newline] != "malformed-link rewrite" || len(fixes) != 4 {
		t.Errorf("problems %v", fixes)
	}
	if len(rep.Uploads) != 1 || rep.Uploads[0].ID != fr.upload || rep.Uploads[0].StartedAt == "" || rep.Uploads[0].AgeSeconds < 0 {
		t.Errorf("uploads %+v", rep.Uploads)
	}

	// --repair rewrites the revision link, removes the old index entry
	// and its directory, and keeps the rest.
	code, out, _ = fsckCmd(t, "--root", fr.root, "--repair")
	if code != 1 {
		t.Fatalf("--repair exit %d, want 1 (problems were found)\n%s", code, out)
	}
	for _, want := range []string{
		"malformed-link " + newline + ": ", "[rewritten]", "[removed]", "removed " + filepath.Dir(oldEntry) + ": empty directory",
		"4 problems, 2 repaired, 2 need a re-push",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--repair output lacks %q:\n%s", want, out)
		}
	}
	after := tree(t, fr.root)
	if after[newline] != fr.manifest {
		t.Errorf("revision link after repair: %q", after[newline])
	}
	delete(before, oldEntry)
	delete(before, filepath.Dir(oldEntry))
	delete(before, newline)
	delete(after, newline)
	if diff := treeDiff(before, after); diff != "" {
		t.Errorf("--repair changed more than it said:\n%s", diff)
	}
	code, out, _ = fsckCmd(t, "--root", fr.root)
	if code != 1 || !strings.Contains(out, "2 problems, 2 need a re-push") {
		t.Errorf("after repair: exit %d\n%s", code, out)
	}
	// Once the blobs are pushed again, the root is clean.
	writeFile(t, corrupt, strings.Repeat("layer ", 1000))
	writeFile(t, fr.blobFile(missing), "missing")
	if code, out, _ := fsckCmd(t, "--root", fr.root); code != 0 {
		t.Errorf("restored root: exit %d\n%s", code, out)
	}
}

// TestFsckCommandJSONEveryOutcome checks that --json prints a report for
// every exit status, those of a check that never started included.
func TestFsckCommandJSONEveryOutcome(t *testing.T) {
	fr := newFsckRoot(t)
	broken := newFsckRoot(t)
	writeFile(t, broken.blobFile(broken.layer), "flipped")
	for _, c := range []struct {
		name     string
		args     []string
		code     int
		complete bool
		err      string
	}{
		{"clean", []string{"--root", fr.root}, 0, true, ""},
		{"problems", []string{"--root", broken.root}, 1, true, ""},
		{"usage", []string{"--root", fr.root, "--workers", "0"}, 2, false, "--workers"},
		{"missing root", []string{"--root", filepath.Join(t.TempDir(), "nothing-here")}, 2, false, "is not a directory"},
		{"root is a file", []string{"--root", broken.blobFile(broken.layer)}, 2, false, "is not a directory"},
	} {
		code, out, _ := fsckCmd(t, append(c.args, "--json")...)
		var rep struct {
			Complete bool              `json:"complete"`
			Error    string            `json:"error"`
			ExitCode int               `json:"exitCode"`
			Problems []json.RawMessage `json:"problems"`
			Uploads  []json.RawMessage `json:"uploads"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Errorf("%s: exit %d, output does not parse: %v\n%q", c.name, code, err, out)
			continue
		}
		if code != c.code || rep.ExitCode != code || rep.Complete != c.complete || !strings.Contains(rep.Error, c.err) ||
			rep.Problems == nil || rep.Uploads == nil {
			t.Errorf("%s: exit %d, report %s", c.name, code, out)
		}
	}
}

func TestFsckCommandStaleUpload(t *testing.T) {
	fr := newFsckRoot(t)
	started := fr.file("repositories/app/_uploads/" + fr.upload + "/startedat")
	old := time.Now().Add(-30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	if err := os.WriteFile(started, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := fsckCmd(t, "--root", fr.root)
	if code != 0 || !strings.Contains(out, "[stale]") || !strings.Contains(out, "1 uploads (1 stale)") {
		t.Errorf("exit %d\n%s", code, out)
	}
	code, out, _ = fsckCmd(t, "--root", fr.root, "--stale-after", "1000h")
	if code != 0 || strings.Contains(out, "[stale]") {
		t.Errorf("--stale-after 1000h: exit %d\n%s", code, out)
	}
}

// TestFsckCommandUploadWithoutStartedAt: an upload with no startedat is
// aged by its directory's and files' times, says so, and goes stale.
func TestFsckCommandUploadWithoutStartedAt(t *testing.T) {
	fr := newFsckRoot(t)
	dir := fr.file("repositories/app/_uploads/" + fr.upload)
	if err := os.Remove(filepath.Join(dir, "startedat")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-30 * 24 * time.Hour)
	err := filepath.WalkDir(dir, func(p string, _ iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := fsckCmd(t, "--root", fr.root)
	if code != 0 || !strings.Contains(out, "no startedat, last written "+old.UTC().Format(time.RFC3339)) ||
		!strings.Contains(out, "(estimated age) [stale]") || !strings.Contains(out, "1 uploads (1 stale)") {
		t.Errorf("exit %d\n%s", code, out)
	}
	code, out, _ = fsckCmd(t, "--root", fr.root, "--json")
	var rep struct {
		Uploads []fsck.Upload `json:"uploads"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || len(rep.Uploads) != 1 ||
		!rep.Uploads[0].AgeEstimated || !rep.Uploads[0].Stale || rep.Uploads[0].AgeSeconds < 30*24*3600 {
		t.Errorf("--json: exit %d, %v\n%s", code, err, out)
	}
}

func TestFsckCommandUsageAndStorageErrors(t *testing.T) {
	missingRoot := filepath.Join(t.TempDir(), "nothing-here")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--root", t.TempDir(), "extra"}, 2, "unexpected argument"},
		{[]string{"--driver", "inmemory"}, 2, "inmemory driver holds nothing to check"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"--root", t.TempDir(), "--stale-after", "0s"}, 2, "--stale-after"},
		{[]string{"--root", t.TempDir(), "--workers", "0"}, 2, "--workers"},
		{[]string{"--driver", "s3"}, 2, "--s3-bucket"},
		{[]string{"--root", missingRoot}, 2, "is not a directory"},
	} {
		code, _, errOut := fsckCmd(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("fsck %q: exit %d, stderr %q; want %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}
	if _, err := os.Stat(missingRoot); !os.IsNotExist(err) {
		t.Errorf("fsck created the missing root: %v", err)
	}
	// An empty root is a clean, empty registry.
	if code, out, _ := fsckCmd(t, "--root", t.TempDir()); code != 0 || !strings.Contains(out, "0 blobs") {
		t.Errorf("empty root: exit %d\n%s", code, out)
	}
	var out bytes.Buffer
	if code := regfs([]string{"fsck", "--help"}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "Exit status") {
		t.Errorf("--help: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := regfs([]string{"help", "fsck"}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "--repair") {
		t.Errorf("help fsck: exit %d\n%s", code, out.String())
	}
}

// TestFsckCommandIncomplete checks exit status 3 when the check cannot
// finish: here the context is cancelled before it starts.
func TestFsckCommandIncomplete(t *testing.T) {
	fr := newFsckRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	cfg := FsckConfig{Storage: Storage{Driver: driverFilesystem, Root: fr.root}, JSON: true, StaleAfter: time.Hour, Workers: 1}
	if code := runFsck(ctx, cfg, &out, &errOut, false); code != 3 {
		t.Fatalf("exit %d, want 3; stderr %s", code, errOut.String())
	}
	var rep struct {
		Complete bool   `json:"complete"`
		Error    string `json:"error"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Complete || rep.Error == "" {
		t.Errorf("report %s (%v)", out.String(), err)
	}
	if !strings.Contains(errOut.String(), "check not completed") {
		t.Errorf("stderr %q", errOut.String())
	}
}

func TestFsckProgressLine(t *testing.T) {
	fr := newFsckRoot(t)
	var out, errOut bytes.Buffer
	cfg := FsckConfig{Storage: Storage{Driver: driverFilesystem, Root: fr.root}, StaleAfter: time.Hour, Workers: 1}
	if code := runFsck(context.Background(), cfg, &out, &errOut, true); code != 0 {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
	e := errOut.String()
	if !strings.Contains(e, "\rregfs fsck: blobs 3/3, ") || !strings.Contains(e, "(100%), checking links") || !strings.HasSuffix(e, "\r\x1b[K") {
		t.Errorf("progress on stderr: %q", e)
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("progress leaked into the report: %q", out.String())
	}
	// Throttled: updates within the interval are dropped, the last one is not.
	var b bytes.Buffer
	pl := &progressLine{w: &b, every: time.Hour}
	pl.update(fsck.Progress{BlobsDone: 0, BlobsTotal: 2, BytesTotal: 2048})
	pl.update(fsck.Progress{BlobsDone: 1, BlobsTotal: 2, BytesDone: 1024, BytesTotal: 2048})
	pl.update(fsck.Progress{BlobsDone: 2, BlobsTotal: 2, BytesDone: 2048, BytesTotal: 2048})
	if got := b.String(); strings.Count(got, "\r") != 2 || strings.Contains(got, "1/2") || !strings.Contains(got, "blobs 2/2, 2.0 KiB/2.0 KiB (100%)") {
		t.Errorf("throttled progress: %q", got)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// A progress line shows the rate and the time left once there is a rate.
func TestProgressRateAndETA(t *testing.T) {
	now := time.Unix(1000, 0)
	c := etaClock{now: func() time.Time { return now }}
	if got := c.tail(0, 100<<20, humanBytes); got != "" {
		t.Errorf("first call: %q, want nothing yet", got)
	}
	now = now.Add(2 * time.Second)
	if got, want := c.tail(20<<20, 100<<20, humanBytes), ", 10.0 MiB/s, ETA 8s"; got != want {
		t.Errorf("after 20 MiB in 2 s: %q, want %q", got, want)
	}
	if got := c.tail(100<<20, 100<<20, humanBytes); got != "" {
		t.Errorf("when done: %q, want nothing", got)
	}

	var b bytes.Buffer
	p := &gcProgress{w: &b, eta: etaClock{now: func() time.Time { return now }}}
	p.update(gc.Progress{Phase: "sweeping blobs", Done: 0, Total: 10})
	now = now.Add(time.Second)
	p.update(gc.Progress{Phase: "sweeping blobs", Done: 5, Total: 10})
	if got := b.String(); !strings.Contains(got, "sweeping blobs 5/10, 5/s, ETA 1s") {
		t.Errorf("gc progress: %q", got)
	}
}
