package filesystem

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/driver"
)

// TestLeftoversAndClean: what a crash leaves in the trash and staging
// directories is reported by Leftovers and removed by Clean, while the
// staging entry of a writer still running is neither; the internal
// directories go once empty, and List never shows them.
func TestLeftoversAndClean(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	for _, p := range []string{
		trashDirName + "/dead.1/x/y",
		trashDirName + "/dead.2",
		tmpDirName + "/dead.3",
		tmpDirName + "/dead.4/tags/t/current/link",
	} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("left"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, root)
	running, err := newImpl(root)
	if err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, "New", before, snapshot(t, root)) // New changes nothing
	live, err := running.newTemp(false)
	if err != nil {
		t.Fatal(err)
	}

	d := newDriver(t, root)
	j := d.(driver.Janitor)
	want := []string{
		filepath.Join(root, tmpDirName, "dead.3"),
		filepath.Join(root, tmpDirName, "dead.4"),
		filepath.Join(root, trashDirName, "dead.1"),
		filepath.Join(root, trashDirName, "dead.2"),
	}
	left, err := j.Leftovers(ctx)
	if err != nil || !slices.Equal(left, want) {
		t.Errorf("Leftovers = %q, %v;\nwant %q", left, err, want)
	}
	if names, err := d.List(ctx, "/"); err != nil || len(names) != 0 {
		t.Errorf("List(/) = %q, %v; want nothing", names, err)
	}
	if err := j.Clean(ctx); err != nil {
		t.Fatal(err)
	}
	if left, err := j.Leftovers(ctx); err != nil || len(left) != 0 {
		t.Errorf("Leftovers after Clean = %q, %v", left, err)
	}
	if _, err := os.Stat(filepath.Join(root, tmpDirName, live.name)); err != nil {
		t.Errorf("Clean removed a running writer's staging entry: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, trashDirName)); !os.IsNotExist(err) {
		t.Errorf("the empty trash is still there: %v", err)
	}
	running.release(live)
	if entries, err := os.ReadDir(root); err != nil || len(entries) != 0 {
		t.Errorf("root after the writer finished = %v, %v; want it empty", entries, err)
	}
}

// crashRootEnv names the root the crash helper process writes to.
const crashRootEnv = "REGFS_TEST_CRASH_ROOT"

// TestCrashHelper is the process TestCrashLeavesNoGhosts kills: it writes,
// moves and deletes as the store does (tags, uploads, blob commits) until
// it is killed.
func TestCrashHelper(t *testing.T) {
	root := os.Getenv(crashRootEnv)
	if root == "" {
		t.Skip("run by TestCrashLeavesNoGhosts")
	}
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	link := []byte("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	for i := 0; ; i++ {
		repo := fmt.Sprintf("/docker/registry/v2/repositories/r%d", i%3)
		tag := fmt.Sprintf("%s/_manifests/tags/t%d", repo, i)
		up := fmt.Sprintf("%s/_uploads/u%d", repo, i)
		blob := fmt.Sprintf("/docker/registry/v2/blobs/sha256/%02d/b%d/data", i%100, i)
		must := func(err error) {
			if err != nil {
				panic(err)
			}
		}
		must(d.PutContent(ctx, tag+"/current/link", link))
		must(d.PutContent(ctx, tag+"/index/sha256/x/link", link))
		must(d.PutContent(ctx, up+"/startedat", []byte("2026-01-01T00:00:00Z")))
		w, err := d.Writer(ctx, up+"/data", false)
		must(err)
		_, err = w.Write(link)
		must(err)
		must(w.Close())
		must(d.Move(ctx, up+"/data", blob))
		must(d.Delete(ctx, up))
		if i >= 2 {
			must(d.Delete(ctx, fmt.Sprintf("%s/_manifests/tags/t%d", fmt.Sprintf("/docker/registry/v2/repositories/r%d", (i-2)%3), i-2)))
		}
	}
}

// TestCrashLeavesNoGhosts kills a process that writes and deletes as the
// store does at random moments, and checks after each kill what the
// registry would see: no name that is not an object of the store (no
// temporary or deleted names), and no directory without its content (a tag
// without current/link, an upload without startedat, a blob directory
// without data). What the crash left is reported and cleaned by the next
// driver.
func TestCrashLeavesNoGhosts(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes")
	}
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	leftovers := 0
	for round := range 12 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashRootEnv+"="+root)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: the helper ended with %v, not killed", round, err)
		}
		checkNoGhosts(t, root)

		d := newDriver(t, root)
		j := d.(driver.Janitor)
		left, err := j.Leftovers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		leftovers += len(left)
		if err := j.Clean(context.Background()); err != nil {
			t.Fatal(err)
		}
		if left, err := j.Leftovers(context.Background()); err != nil || len(left) != 0 {
			t.Errorf("round %d: Leftovers after Clean = %q, %v", round, left, err)
		}
		for _, name := range []string{tmpDirName, trashDirName} {
			if _, err := os.Lstat(filepath.Join(root, name)); !os.IsNotExist(err) {
				t.Errorf("round %d: %s still there after Clean: %v", round, name, err)
			}
		}
	}
	t.Logf("12 kills left %d leftovers, all cleaned", leftovers)
}

// checkNoGhosts walks the tree as the registry does, outside the driver's
// internal directories.
func checkNoGhosts(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == tmpDirName || rel == trashDirName {
			return filepath.SkipDir
		}
		if rel != "." && !driver.ValidComponent(e.Name()) {
			t.Errorf("ghost name in the tree: %s", rel)
		}
		if !e.IsDir() {
			return nil
		}
		parent := filepath.Base(filepath.Dir(p))
		var need string
		switch {
		case parent == "tags":
			need = "current/link"
		case parent == "_uploads":
			need = "startedat"
		case strings.Contains(rel, "blobs/sha256/") && strings.Count(rel, "/") == 6:
			need = "data"
		}
		if need != "" {
			if _, err := os.Stat(filepath.Join(p, need)); err != nil {
				t.Errorf("%s has no %s", rel, need)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
