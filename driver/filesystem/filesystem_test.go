package filesystem

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(t *testing.T) driver.StorageDriver { return newDriver(t, t.TempDir()) })
}

func newDriver(t testing.TB, root string) driver.StorageDriver {
	t.Helper()
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func walkPaths(t *testing.T, d driver.StorageDriver, path string) []string {
	t.Helper()
	var got []string
	err := d.Walk(context.Background(), path, func(fi driver.FileInfo) error {
		got = append(got, fi.Path)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk(%s): %v", path, err)
	}
	return got
}

// TestForeignNamesHidden: temporary files and any name that is not a valid
// path component (a registry's or a user's stray file) never show up.
func TestForeignNamesHidden(t *testing.T) {
	root := t.TempDir()
	d := newDriver(t, root)
	ctx := context.Background()
	if err := d.PutContent(ctx, "/dir/obj", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".#obj.12345", "with space", "caf\u00e9", "a:b"} {
		if err := os.WriteFile(filepath.Join(root, "dir", name), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	names, err := d.List(ctx, "/dir")
	if err != nil || !slices.Equal(names, []string{"/dir/obj"}) {
		t.Errorf("List = %q, %v; want only /dir/obj", names, err)
	}
	if got := walkPaths(t, d, "/"); !slices.Equal(got, []string{"/dir", "/dir/obj"}) {
		t.Errorf("Walk = %q; want /dir, /dir/obj", got)
	}
}

// TestPutContentLeavesNoTemp: after PutContent only the object is there, with
// the registry's permissions.
func TestPutContentLeavesNoTemp(t *testing.T) {
	root := t.TempDir()
	d := newDriver(t, root)
	if err := d.PutContent(context.Background(), "/a/b/link", []byte("sha256:x")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "a", "b"))
	if err != nil || len(entries) != 1 || entries[0].Name() != "link" {
		t.Fatalf("directory holds %v, %v; want only link", entries, err)
	}
	for path, want := range map[string]fs.FileMode{"a": 0o755, "a/b": 0o755, "a/b/link": 0o644} {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		// The umask may take bits away from directories, never add them.
		if got := fi.Mode().Perm(); got&^want != 0 || (!fi.IsDir() && got != want) {
			t.Errorf("%s has mode %v, want %v", path, got, want)
		}
	}
}

// TestWriterBytesVisibleBeforeClose: written bytes are in the file as soon as
// Write returns, so a crash of the process before Close loses nothing.
func TestWriterBytesVisibleBeforeClose(t *testing.T) {
	root := t.TempDir()
	d := newDriver(t, root)
	ctx := context.Background()
	w, err := d.Writer(ctx, "/up/data", false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("first part"))
	got, err := os.ReadFile(filepath.Join(root, "up", "data"))
	if err != nil || string(got) != "first part" {
		t.Errorf("file holds %q, %v before Close; want the written bytes", got, err)
	}
	// A second driver on the same root (a restarted process) appends to them.
	w2, err := newDriver(t, root).Writer(ctx, "/up/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if w2.Size() != int64(len("first part")) {
		t.Errorf("resumed writer Size() = %d", w2.Size())
	}
	w2.Close()
}

// TestDeleteRootKeepsRoot: Delete("/") empties the store but keeps its root.
func TestDeleteRootKeepsRoot(t *testing.T) {
	root := t.TempDir()
	d := newDriver(t, root)
	ctx := context.Background()
	for _, p := range []string{"/a/b", "/c"} {
		if err := d.PutContent(ctx, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Delete(ctx, "/"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root)
	if err != nil || len(entries) != 0 {
		t.Errorf("root after Delete(/) = %v, %v; want an empty directory", entries, err)
	}
}

// TestObjectAsParent: a path below an object is not found, not an I/O error.
func TestObjectAsParent(t *testing.T) {
	d := newDriver(t, t.TempDir())
	ctx := context.Background()
	if err := d.PutContent(ctx, "/obj", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/obj/below"); !driver.IsNotFound(err) {
		t.Errorf("Stat below an object = %v, want PathNotFoundError", err)
	}
	if err := d.Delete(ctx, "/obj/below"); !driver.IsNotFound(err) {
		t.Errorf("Delete below an object = %v, want PathNotFoundError", err)
	}
}

func TestRelativeRoot(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	d := newDriver(t, "store")
	if err := d.PutContent(context.Background(), "/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	if _, err := os.Stat(filepath.Join(dir, "store", "x")); err != nil {
		t.Errorf("object not under the root as given: %v", err)
	}
	if _, err := d.Stat(context.Background(), "/x"); err != nil {
		t.Errorf("Stat after chdir: %v", err)
	}
}

func TestNewRootIsAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(file); err == nil {
		t.Error("New accepted a regular file as root")
	}
}

func BenchmarkSuite(b *testing.B) {
	testsuite.Bench(b, func(b *testing.B) driver.StorageDriver { return newDriver(b, b.TempDir()) })
}
