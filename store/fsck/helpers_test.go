package fsck

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
)

// testdataRoot is store's hand-written registry tree: repositories hello
// and library/ubuntu (5 blobs, 12 links, 3 tags) and an upload the
// registry left.
const testdataRoot = "../testdata/registry"

const tdUploadID = "0b7e6a9c-3f1d-4c2e-9a55-6d3c1f2e8b40"

// fsckNow is the clock of every test: a day after testdata's upload
// started.
var fsckNow = time.Date(2024, 1, 3, 3, 4, 5, 0, time.UTC)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testDriver is a driver under test; root is the directory of a filesystem
// driver, "" for the in-memory one.
type testDriver struct {
	driver.StorageDriver
	root string
}

// drivers are the drivers the tests run on, optionally seeded with a tree
// from the local file system.
var drivers = []struct {
	name string
	new  func(t *testing.T, seed string) *testDriver
}{
	{"inmemory", func(t *testing.T, seed string) *testDriver {
		d := inmemory.New()
		if seed != "" {
			err := filepath.WalkDir(seed, func(p string, e fs.DirEntry, err error) error {
				if err != nil || e.IsDir() {
					return err
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(seed, p)
				return d.PutContent(context.Background(), "/"+filepath.ToSlash(rel), b)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return &testDriver{StorageDriver: d}
	}},
	{"filesystem", func(t *testing.T, seed string) *testDriver {
		root := t.TempDir()
		if seed != "" {
			if err := os.CopyFS(root, os.DirFS(seed)); err != nil {
				t.Fatal(err)
			}
		}
		d, err := filesystem.New(root)
		if err != nil {
			t.Fatal(err)
		}
		return &testDriver{StorageDriver: d, root: root}
	}},
}

func run(t *testing.T, d driver.StorageDriver, repair bool) *Report {
	t.Helper()
	rep, err := Run(context.Background(), d, Options{Repair: repair, Now: func() time.Time { return fsckNow },
		RecheckAfter: time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// pathOf is the path of l.
func pathOf(t testing.TB, l store.Location) string {
	t.Helper()
	p, err := l.Path()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// put writes content at l's path and returns the path.
func put(t *testing.T, d driver.StorageDriver, l store.Location, content string) string {
	t.Helper()
	p := pathOf(t, l)
	if err := d.PutContent(context.Background(), p, []byte(content)); err != nil {
		t.Fatal(err)
	}
	return p
}

func newStore(t *testing.T, d driver.StorageDriver) store.Store {
	t.Helper()
	s, err := store.New(d, store.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func repo(t *testing.T, s store.Store, name string) store.Repository {
	t.Helper()
	r, err := s.Repository(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushBlob uploads content into r and returns its digest.
func pushBlob(t *testing.T, r store.Repository, content []byte) digest.Digest {
	t.Helper()
	ctx := context.Background()
	up, err := r.Uploads().Create(ctx, digest.FromBytes(content))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(content); err != nil {
		t.Fatal(err)
	}
	desc, err := up.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return desc.Digest
}

func schema2(config digest.Digest, layers ...digest.Digest) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":%q},"layers":[`,
		store.MediaTypeSchema2, config)
	for i, l := range layers {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1,"digest":%q}`, l)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// dirMarker stands for a directory in a snapshot.
const dirMarker = "<dir>"

// snapshot returns every object (with its content) and directory in d.
func snapshot(t *testing.T, d driver.StorageDriver) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := d.Walk(context.Background(), "/", func(fi driver.FileInfo) error {
		if fi.IsDir {
			out[fi.Path] = dirMarker
			return nil
		}
		b, err := d.GetContent(context.Background(), fi.Path)
		out[fi.Path] = string(b)
		return err
	})
	if err != nil && !driver.IsNotFound(err) {
		t.Fatal(err)
	}
	return out
}

// diffSnapshots describes how two snapshots differ, "" when they do not.
func diffSnapshots(before, after map[string]string) string {
	var b strings.Builder
	for p, c := range before {
		if a, ok := after[p]; !ok {
			b.WriteString("removed " + p + "\n")
		} else if a != c {
			b.WriteString("changed " + p + "\n")
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			b.WriteString("added " + p + "\n")
		}
	}
	return b.String()
}

func problemsString(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}
