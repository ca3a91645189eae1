package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/driver/inmemory"
)

// testdataRoot is a registry root written by hand in distribution's layout:
// repositories hello and library/ubuntu, their layers, revisions and tags,
// and an upload the registry left behind (no regfs-expected file).
const testdataRoot = "testdata/registry"

// Digests in testdata/registry.
const (
	tdLayerHello  = digest.Digest("sha256:248e2594fcdaad8f13804d84fb9070f01a3e25b70ee26237086d914edca65cdc")
	tdLayerUbuntu = digest.Digest("sha256:31c25a644eebc064495f605c7513fd92e80baf67e5d9d33e01a4fff7fe436060")
	tdConfig      = digest.Digest("sha256:c5b1d63604f273462ef36fadac3182d43ae6a6138731cf594b314835cf1c034f")
	tdManHello    = digest.Digest("sha256:e243fc8d424c66e26b4b097e0308f0c76c3e5215b3c95da9d7be16b0fe2b7293")
	tdManUbuntu   = digest.Digest("sha256:34926a892b7488d5b837142382fbc4e0a21d090e63a1f88b454b17bb00d69410")
	tdUploadID    = "0b7e6a9c-3f1d-4c2e-9a55-6d3c1f2e8b40"
)

// driverCase makes a fresh driver, optionally seeded with a registry tree
// from the local file system.
type driverCase struct {
	name string
	new  func(t *testing.T, seed string) *testDriver
}

// testDriver is a driver under test; root is the directory of a filesystem
// driver, "" for others.
type testDriver struct {
	driver.StorageDriver
	root string
}

// drivers are the drivers the format tests run on: the in-memory one and
// the filesystem one in a temporary directory (seeded by copying the files,
// so the hand-written tree is read as the registry left it on disk).
var drivers = []driverCase{
	{"inmemory", func(t *testing.T, seed string) *testDriver {
		d := inmemory.New()
		if seed != "" {
			loadTree(t, d, seed)
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

// loadTree copies the files below dir into d at the same relative paths.
func loadTree(t *testing.T, d driver.StorageDriver, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		return d.PutContent(context.Background(), "/"+filepath.ToSlash(rel), b)
	})
	if err != nil {
		t.Fatal(err)
	}
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
		if err != nil {
			return err
		}
		out[fi.Path] = string(b)
		return nil
	})
	if err != nil && !driver.IsNotFound(err) {
		t.Fatal(err)
	}
	return out
}

// files returns the objects of a snapshot without the directories.
func files(snap map[string]string) map[string]string {
	out := map[string]string{}
	for p, c := range snap {
		if c != dirMarker {
			out[p] = c
		}
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

func newStore(t *testing.T, d driver.StorageDriver) Store {
	t.Helper()
	s, err := New(d, Options{
		Cache:  cache.New(1<<20, 4096),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func repo(t *testing.T, s Store, name string) Repository {
	t.Helper()
	r, err := s.Repository(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushBlob uploads content into r and returns its digest.
func pushBlob(t *testing.T, r Repository, content []byte) digest.Digest {
	t.Helper()
	ctx := context.Background()
	d := digest.FromBytes(content)
	up, err := r.Uploads().Create(ctx, d)
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
	if desc.Digest != d || desc.Size != int64(len(content)) {
		t.Fatalf("commit = %+v, want %s %d", desc, d, len(content))
	}
	return d
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTestdataReads(t *testing.T) {
	ctx := context.Background()
	helloManifest := readFile(t, filepath.Join(testdataRoot, "docker/registry/v2/blobs/sha256/e2", tdManHello.Encoded(), "data"))
	ubuntuManifest := readFile(t, filepath.Join(testdataRoot, "docker/registry/v2/blobs/sha256/34", tdManUbuntu.Encoded(), "data"))
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			s := newStore(t, dc.new(t, testdataRoot))

			repos, err := s.Repositories(ctx)
			if err != nil || !slices.Equal(repos, []string{"hello", "library/ubuntu"}) {
				t.Fatalf("Repositories = %v, %v", repos, err)
			}
			top, err := s.Children(ctx, "")
			if err != nil || !slices.Equal(top, []string{"hello", "library"}) {
				t.Fatalf("Children(\"\") = %v, %v", top, err)
			}
			lib, err := s.Children(ctx, "library")
			if err != nil || !slices.Equal(lib, []string{"ubuntu"}) {
				t.Fatalf("Children(library) = %v, %v", lib, err)
			}
			none, err := s.Children(ctx, "nothing/here")
			if err != nil || len(none) != 0 {
				t.Fatalf("Children(missing) = %v, %v", none, err)
			}
			for name, want := range map[string]bool{"hello": true, "library": false, "library/ubuntu": true, "missing": false} {
				got, err := s.IsRepository(ctx, name)
				if err != nil || got != want {
					t.Errorf("IsRepository(%s) = %v, %v; want %v", name, got, err, want)
				}
			}

			hello := repo(t, s, "hello")
			ubuntu := repo(t, s, "library/ubuntu")

			tags, err := ubuntu.Tags().List(ctx)
			if err != nil || !slices.Equal(tags, []string{"22.04", "latest"}) {
				t.Fatalf("ubuntu tags = %v, %v", tags, err)
			}
			if d, err := hello.Tags().Get(ctx, "latest"); err != nil || d != tdManHello {
				t.Fatalf("hello:latest = %s, %v", d, err)
			}
			revs, err := ubuntu.Manifests().List(ctx)
			if err != nil || !slices.Equal(revs, []digest.Digest{tdManUbuntu}) {
				t.Fatalf("ubuntu revisions = %v, %v", revs, err)
			}
			b, mt, err := hello.Manifests().Get(ctx, tdManHello)
			if err != nil || !bytes.Equal(b, helloManifest) || mt != MediaTypeSchema2 {
				t.Fatalf("hello manifest = %q, %q, %v", b, mt, err)
			}
			b, mt, err = ubuntu.Manifests().Get(ctx, tdManUbuntu)
			if err != nil || !bytes.Equal(b, ubuntuManifest) || mt != MediaTypeOCIManifest {
				t.Fatalf("ubuntu manifest = %q, %q, %v", b, mt, err)
			}
			if _, _, err := hello.Manifests().Get(ctx, tdManUbuntu); !errors.Is(err, ErrManifestUnknown) {
				t.Fatalf("ubuntu's manifest in hello: %v, want ErrManifestUnknown", err)
			}

			layers, err := hello.Layers().List(ctx)
			if err != nil || !slices.Equal(layers, []digest.Digest{tdLayerHello, tdConfig}) {
				t.Fatalf("hello layers = %v, %v", layers, err)
			}
			for _, d := range []digest.Digest{tdLayerUbuntu, tdConfig} {
				want := readFile(t, filepath.Join(testdataRoot, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data"))
				desc, err := ubuntu.Layers().Stat(ctx, d)
				if err != nil || desc.Size != int64(len(want)) || desc.Digest != d {
					t.Fatalf("Stat(%s) = %+v, %v", d, desc, err)
				}
				br, err := ubuntu.Layers().Open(ctx, d)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(br)
				br.Close()
				if err != nil || !bytes.Equal(got, want) || digest.FromBytes(got) != d {
					t.Fatalf("read %s = %q, %v", d, got, err)
				}
			}
			if _, err := hello.Layers().Stat(ctx, tdLayerUbuntu); !errors.Is(err, ErrBlobUnknown) {
				t.Fatalf("ubuntu's layer in hello: %v, want ErrBlobUnknown", err)
			}

			ups, err := hello.Uploads().List(ctx)
			wantStart := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
			if err != nil || len(ups) != 1 {
				t.Fatalf("uploads = %+v, %v", ups, err)
			}
			if u := ups[0]; u.ID != tdUploadID || u.Size != 16 || u.Expected != "" || !u.StartedAt.Equal(wantStart) {
				t.Fatalf("upload = %+v", u)
			}
			// The registry's upload resumes (its data re-hashed: it saved no
			// state) and can be cancelled.
			up, err := hello.Uploads().Resume(ctx, tdUploadID)
			if err != nil || up.Size() != 16 || up.Expected() != "" {
				t.Fatalf("Resume = %v, %v", up, err)
			}
			if _, err := up.Commit(ctx); !errors.Is(err, ErrInvalidDigest) {
				t.Fatalf("commit without an expected digest: %v", err)
			}
			if err := up.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := hello.Uploads().Stat(ctx, tdUploadID); !errors.Is(err, ErrUploadUnknown) {
				t.Fatalf("Stat after cancel: %v", err)
			}
		})
	}
}

// TestWritesMatchTestdata rebuilds the hand-written tree through the store
// and compares every object byte for byte: links, blobs, tags, indexes.
func TestWritesMatchTestdata(t *testing.T) {
	ctx := context.Background()
	blob := func(d digest.Digest) []byte {
		return readFile(t, filepath.Join(testdataRoot, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data"))
	}
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			want := files(snapshot(t, drivers[0].new(t, testdataRoot)))
			for p := range want {
				if strings.Contains(p, "/_uploads/") {
					delete(want, p)
				}
			}

			d := dc.new(t, "")
			s := newStore(t, d)
			hello := repo(t, s, "hello")
			ubuntu := repo(t, s, "library/ubuntu")
			pushBlob(t, hello, blob(tdLayerHello))
			pushBlob(t, hello, blob(tdConfig))
			if got, err := hello.Manifests().Put(ctx, blob(tdManHello), "latest", tdManHello); err != nil || got != tdManHello {
				t.Fatalf("Put hello = %s, %v", got, err)
			}
			pushBlob(t, ubuntu, blob(tdLayerUbuntu))
			if err := ubuntu.Layers().Link(ctx, tdConfig); err != nil { // cross-repository mount
				t.Fatal(err)
			}
			if _, err := ubuntu.Manifests().Put(ctx, blob(tdManUbuntu), "latest", ""); err != nil {
				t.Fatal(err)
			}
			if err := ubuntu.Tags().Tag(ctx, "22.04", tdManUbuntu); err != nil {
				t.Fatal(err)
			}

			got := files(snapshot(t, d))
			if diff := diffSnapshots(want, got); diff != "" {
				t.Fatalf("tree differs from testdata:\n%s", diff)
			}
			for p, c := range got {
				if path.Base(p) == "link" && (len(c) != 71 || !strings.HasPrefix(c, "sha256:")) {
					t.Errorf("link %s = %q", p, c)
				}
			}
		})
	}
}

// countingDriver is the real driver with counters on the calls that read
// blob data, to prove what the store does not read.
type countingDriver struct {
	driver.StorageDriver
	blobReads atomic.Int64
}

func (c *countingDriver) isData(p string) bool { return path.Base(p) == "data" }

func (c *countingDriver) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	if c.isData(p) {
		c.blobReads.Add(1)
	}
	return c.StorageDriver.Reader(ctx, p, off)
}

func (c *countingDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if c.isData(p) {
		c.blobReads.Add(1)
	}
	return c.StorageDriver.GetContent(ctx, p)
}

// TestUploadFormat checks the upload files as the registry writes them:
// startedat, the hash state (decodable, and at the flushed offset only),
// regfs's expected file, and what a commit leaves.
func TestUploadFormat(t *testing.T) {
	ctx := context.Background()
	content := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	dgst := digest.FromBytes(content)
	startedRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			d := dc.new(t, "")
			s := newStore(t, d)
			r := repo(t, s, "team/app")
			before := time.Now().UTC().Add(-time.Second)
			up, err := r.Uploads().Create(ctx, dgst)
			if err != nil {
				t.Fatal(err)
			}
			base := storageRoot + "/repositories/team/app/_uploads/" + up.ID()
			if _, err := up.Write(content[:5000]); err != nil {
				t.Fatal(err)
			}
			if err := up.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := up.WriteAt(content[5000:7000], 5000); err != nil {
				t.Fatal(err)
			}
			if err := up.Flush(ctx); err != nil {
				t.Fatal(err)
			}

			snap := files(snapshot(t, d))
			var names []string
			for p := range snap {
				names = append(names, strings.TrimPrefix(p, base+"/"))
			}
			slices.Sort(names)
			wantNames := []string{"data", "hashstates/sha256/7000", "regfs-expected", "startedat"}
			if !slices.Equal(names, wantNames) {
				t.Fatalf("upload files = %v, want %v", names, wantNames)
			}
			if got := snap[base+"/data"]; got != string(content[:7000]) {
				t.Fatalf("data has %d bytes", len(got))
			}
			if got := snap[base+"/regfs-expected"]; got != dgst.String() || len(got) != 71 {
				t.Fatalf("regfs-expected = %q", got)
			}
			started := snap[base+"/startedat"]
			ts, err := time.Parse(time.RFC3339, started)
			if !startedRE.MatchString(started) || err != nil || ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
				t.Fatalf("startedat = %q (%v)", started, err)
			}
			h := sha256.New()
			if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary([]byte(snap[base+"/hashstates/sha256/7000"])); err != nil {
				t.Fatalf("hash state does not decode: %v", err)
			}
			h.Write(content[7000:])
			if got := digest.NewDigest(digest.SHA256, h); got != dgst {
				t.Fatalf("hash state continued gives %s, want %s", got, dgst)
			}

			if _, err := up.Write(content[7000:]); err != nil {
				t.Fatal(err)
			}
			if _, err := up.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				storageRoot + "/blobs/sha256/" + dgst.Encoded()[:2] + "/" + dgst.Encoded() + "/data": string(content),
				storageRoot + "/repositories/team/app/_layers/sha256/" + dgst.Encoded() + "/link":    dgst.String(),
			}
			if got := files(snapshot(t, d)); !reflect.DeepEqual(got, want) {
				t.Fatalf("after commit:\n%s", diffSnapshots(want, got))
			}
			if dc.name == "filesystem" {
				// Nothing else on disk either (no temporary files left).
				fsys := snapshotOS(t, d.root)
				if !reflect.DeepEqual(fsys, want) {
					t.Fatalf("files on disk differ:\n%s", diffSnapshots(want, fsys))
				}
			}
		})
	}
}

// snapshotOS lists the regular files below a filesystem driver's root by
// reading the disk, so files the driver would hide show up too.
func snapshotOS(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out["/"+filepath.ToSlash(rel)] = string(readFile(t, p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRegistryStyleDeletes: the registry deletes a layer or a revision by
// removing its link file only, leaving the directory; such entries are gone
// for the store too, in listings as in lookups.
func TestRegistryStyleDeletes(t *testing.T) {
	ctx := context.Background()
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			d := dc.new(t, testdataRoot)
			s := newStore(t, d)
			hello := repo(t, s, "hello")
			for _, p := range []string{
				mustPath(layerLinkPathSpec{name: "hello", digest: tdLayerHello}),
				mustPath(manifestRevisionLinkPathSpec{name: "hello", revision: tdManHello}),
				mustPath(manifestTagCurrentLinkPathSpec{name: "hello", tag: "latest"}),
			} {
				if err := d.Delete(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if l, err := hello.Layers().List(ctx); err != nil || !slices.Equal(l, []digest.Digest{tdConfig}) {
				t.Fatalf("layers = %v, %v", l, err)
			}
			if _, err := hello.Layers().Stat(ctx, tdLayerHello); !errors.Is(err, ErrBlobUnknown) {
				t.Fatalf("Stat of an unlinked layer: %v", err)
			}
			if m, err := hello.Manifests().List(ctx); err != nil || len(m) != 0 {
				t.Fatalf("revisions = %v, %v", m, err)
			}
			if _, _, err := hello.Manifests().Get(ctx, tdManHello); !errors.Is(err, ErrManifestUnknown) {
				t.Fatalf("Get of a deleted revision: %v", err)
			}
			if tags, err := hello.Tags().List(ctx); err != nil || len(tags) != 0 {
				t.Fatalf("tags = %v, %v", tags, err)
			}
			if err := hello.Layers().Unlink(ctx, tdConfig); err != nil {
				t.Fatal(err)
			}
			if err := hello.Uploads().Cancel(ctx, tdUploadID); err != nil {
				t.Fatal(err)
			}
			// What is left is empty directories: the repository is empty.
			if err := s.RemoveRepository(ctx, "hello"); err != nil && !errors.Is(err, ErrRepositoryUnknown) {
				t.Fatalf("RemoveRepository: %v", err)
			}
			if repos, err := s.Repositories(ctx); err != nil || !slices.Equal(repos, []string{"library/ubuntu"}) {
				t.Fatalf("Repositories = %v, %v", repos, err)
			}
		})
	}
}
