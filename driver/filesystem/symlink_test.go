package filesystem

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
)

// snapshot describes every file and directory under dir (names, types,
// modes, modification times, contents and link targets), so that a test can
// tell that nothing there was created, changed or removed.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d", fi.Mode(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, d := range before {
		if after[p] != d {
			t.Errorf("%s: %s changed or removed (%q, now %q)", what, p, d, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s created", what, p)
		}
	}
}

// outsideTree makes a directory outside the root with a secret file in it
// and below it.
func outsideTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range map[string]string{
		"secret":          "the outside secret",
		"dir/secret":      "a secret below",
		"dir/sub/data":    "deeper",
		"dir/link":        "sha256:outside",
		"dir/current/x/y": "z",
	} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// op is one driver call on a path; it returns the error.
type op struct {
	name string
	fn   func(ctx context.Context, d driver.StorageDriver, p string) error
}

var ops = []op{
	{"GetContent", func(ctx context.Context, d driver.StorageDriver, p string) error {
		b, err := d.GetContent(ctx, p)
		if err == nil {
			return fmt.Errorf("read %q", b)
		}
		return err
	}},
	{"Reader", func(ctx context.Context, d driver.StorageDriver, p string) error {
		r, err := d.Reader(ctx, p, 0)
		if err == nil {
			b, _ := io.ReadAll(r)
			r.Close()
			return fmt.Errorf("read %q", b)
		}
		return err
	}},
	{"Stat", func(ctx context.Context, d driver.StorageDriver, p string) error {
		_, err := d.Stat(ctx, p)
		return err
	}},
	{"List", func(ctx context.Context, d driver.StorageDriver, p string) error {
		_, err := d.List(ctx, p)
		return err
	}},
	{"Walk", func(ctx context.Context, d driver.StorageDriver, p string) error {
		return d.Walk(ctx, p, func(driver.FileInfo) error { return nil })
	}},
	{"PutContent", func(ctx context.Context, d driver.StorageDriver, p string) error {
		return d.PutContent(ctx, p, []byte("planted write"))
	}},
	{"Writer", func(ctx context.Context, d driver.StorageDriver, p string) error {
		w, err := d.Writer(ctx, p, false)
		if err == nil {
			w.Write([]byte("planted write"))
			w.Close()
		}
		return err
	}},
	{"Writer(append)", func(ctx context.Context, d driver.StorageDriver, p string) error {
		w, err := d.Writer(ctx, p, true)
		if err == nil {
			w.Write([]byte("planted append"))
			w.Close()
		}
		return err
	}},
	{"Move(src)", func(ctx context.Context, d driver.StorageDriver, p string) error {
		return d.Move(ctx, p, "/moved/here")
	}},
	{"Move(dst)", func(ctx context.Context, d driver.StorageDriver, p string) error {
		if err := d.PutContent(ctx, "/src", []byte("moved in")); err != nil {
			return err
		}
		return d.Move(ctx, "/src", p)
	}},
	{"Delete", func(ctx context.Context, d driver.StorageDriver, p string) error {
		return d.Delete(ctx, p)
	}},
}

// TestSymlinksRefused plants symbolic links at every level of a tree, to
// targets outside the root and inside it, and calls every method on paths
// through them and on them: each call fails with SymlinkError naming the
// link (Delete of the link itself removes the link), and nothing outside
// the root, or at the link's target inside it, is read, created or changed.
func TestSymlinksRefused(t *testing.T) {
	type plant struct {
		name   string
		link   string // driver path of the link
		inside bool   // the target is inside the root
		dir    bool   // the target is a directory
	}
	plants := []plant{
		{"root child to outside dir", "/repos", false, true},
		{"middle dir to outside dir", "/repos/app/_layers", false, true},
		{"object to outside file", "/repos/app/_layers/sha256/aa/link", false, false},
		{"blob data to outside file", "/blobs/sha256/aa/data", false, false},
		{"middle dir to inside dir", "/repos/app/_manifests/tags", true, true},
		{"object to inside file", "/repos/app/_manifests/tags/v1/current/link", true, false},
	}
	objects := []string{
		"/repos/app/_layers/sha256/bb/link",
		"/repos/app/_manifests/tags/v2/current/link",
		"/blobs/sha256/bb/data",
		"/other/dir/link",
		"/other/file",
	}
	for _, pl := range plants {
		t.Run(pl.name, func(t *testing.T) {
			ctx := context.Background()
			root := t.TempDir()
			outside := outsideTree(t)
			d := newDriver(t, root)
			for _, p := range objects {
				if err := d.PutContent(ctx, p, []byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			target := filepath.Join(outside, "secret")
			if pl.dir {
				target = filepath.Join(outside, "dir")
			}
			if pl.inside {
				target = filepath.Join(root, "other", "file")
				if pl.dir {
					target = filepath.Join(root, "other", "dir")
				}
			}
			full := filepath.Join(root, filepath.FromSlash(pl.link))
			os.RemoveAll(full)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			outsideBefore := snapshot(t, outside)
			otherBefore := snapshot(t, filepath.Join(root, "other"))

			paths := []string{pl.link, pl.link + "/link", pl.link + "/secret", pl.link + "/sub/data", pl.link + "/new/deeper/link", pl.link + "/current/x/y"}
			for _, p := range paths {
				for _, o := range ops {
					if o.name == "Delete" && p == pl.link {
						continue // below
					}
					err := o.fn(ctx, d, p)
					var se driver.SymlinkError
					if !errors.As(err, &se) {
						t.Errorf("%s(%s) = %v, want SymlinkError", o.name, p, err)
						continue
					}
					if se.Path != p && !(o.name == "Move(src)" && se.Path == "/moved/here") {
						t.Errorf("%s(%s): SymlinkError.Path = %q", o.name, p, se.Path)
					}
					if se.Link != pl.link || se.Driver != Name {
						t.Errorf("%s(%s): SymlinkError{Link: %q, Driver: %q}, want link %s", o.name, p, se.Link, se.Driver, pl.link)
					}
				}
			}
			sameSnapshot(t, "outside", outsideBefore, snapshot(t, outside))
			sameSnapshot(t, "link target inside the root", otherBefore, snapshot(t, filepath.Join(root, "other")))

			// A walk reports the link and does not descend it.
			var links []string
			err := d.Walk(ctx, "/", func(fi driver.FileInfo) error {
				if fi.Symlink {
					if fi.IsDir || fi.Size != 0 {
						t.Errorf("Walk: link %s has IsDir %v, Size %d", fi.Path, fi.IsDir, fi.Size)
					}
					links = append(links, fi.Path)
				}
				if len(fi.Path) > len(pl.link) && fi.Path[:len(pl.link)+1] == pl.link+"/" {
					t.Errorf("Walk descended the link: %s", fi.Path)
				}
				return nil
			})
			if err != nil || !slices.Equal(links, []string{pl.link}) {
				t.Errorf("Walk = %v, links %q; want the link %s", err, links, pl.link)
			}

			// Delete of the link removes the link, not its target.
			if err := d.Delete(ctx, pl.link); err != nil {
				t.Errorf("Delete(%s) of the link = %v", pl.link, err)
			}
			if _, err := os.Lstat(full); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the link is still there: %v", err)
			}
			sameSnapshot(t, "outside after Delete", outsideBefore, snapshot(t, outside))
			sameSnapshot(t, "inside target after Delete", otherBefore, snapshot(t, filepath.Join(root, "other")))
			for _, p := range objects {
				if got, err := d.GetContent(ctx, p); err != nil && !(len(p) > len(pl.link) && p[:len(pl.link)] == pl.link) {
					t.Errorf("GetContent(%s) after the test = %q, %v", p, got, err)
				}
			}
		})
	}
}

// TestSymlinkRoot: a root given as a symbolic link is the administrator's
// choice and is followed, once, when the driver starts.
func TestSymlinkRoot(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, link)
	if err := d.PutContent(context.Background(), "/a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(real, "a", "b")); err != nil || string(b) != "x" {
		t.Errorf("object not in the real root: %q, %v", b, err)
	}
}

// TestSpecialFilesRefused: a FIFO planted as an object neither blocks a read
// nor is read.
func TestSpecialFilesRefused(t *testing.T) {
	root := t.TempDir()
	d := newDriver(t, root)
	ctx := context.Background()
	if err := d.PutContent(ctx, "/dir/obj", nil); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(root, "dir", "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Skip("mkfifo:", err)
	}
	if _, err := d.GetContent(ctx, "/dir/fifo"); err == nil || driver.IsNotFound(err) {
		t.Errorf("GetContent of a FIFO = %v, want an error", err)
	}
	if w, err := d.Writer(ctx, "/dir/fifo", true); err == nil {
		w.Close()
		t.Error("Writer(append) of a FIFO succeeded")
	}
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o644) }
