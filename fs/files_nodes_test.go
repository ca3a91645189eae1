package fs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/image"
	"github.com/regfs/regfs/store"
)

// gzipLayer writes entries as a gzip-compressed tar.
func gzipLayer(t *testing.T, entries ...tarFile) []byte {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gb bytes.Buffer
	zw := gzip.NewWriter(&gb)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gb.Bytes()
}

type tarFile struct {
	hdr  tar.Header
	data []byte
}

// storeImage stores a two-layer image in repo "app" tagged v1 and returns
// an FS over the store and the manifest's digest.
func storeImage(t *testing.T, readOnly bool) (*FS, digest.Digest) {
	t.Helper()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(inmemory.New(), store.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := st.Repository("app")
	if err != nil {
		t.Fatal(err)
	}
	push := func(b []byte) {
		up, err := repo.Uploads().Create(ctx, digest.FromBytes(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := up.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	l1 := gzipLayer(t,
		tarFile{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}},
		tarFile{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/motd", Mode: 0o644}, data: []byte("hello\n")},
		tarFile{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/old", Mode: 0o644}, data: []byte("old\n")},
		tarFile{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "etc/motd2", Linkname: "etc/motd", Mode: 0o644}},
		tarFile{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/link", Linkname: "/etc/motd", Mode: 0o777}},
	)
	l2 := gzipLayer(t,
		tarFile{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/.wh.old", Mode: 0o644}},
	)
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	for _, b := range [][]byte{config, l1, l2} {
		push(b)
	}
	d, err := repo.Manifests().Put(ctx, imageManifest(t, config, l1, l2), "v1", "")
	if err != nil {
		t.Fatal(err)
	}
	return New(st, Options{ReadOnly: readOnly, Logger: logger}), d
}

func direntNames(ds []fuse.Dirent) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}

// The image view's nodes called directly: a tag and a digest are
// directories of the merged tree, whiteouts applied; a hard link is one
// node; every change is EPERM.
func TestFilesNodes(t *testing.T) {
	ctx := context.Background()
	f, dgst := storeImage(t, false)
	files := newFilesDir(f, "app")
	ds, err := files.ReadDirAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := direntNames(ds); len(got) != 2 || got[0] != dgst.String() || got[1] != "v1" {
		t.Errorf("_files lists %v, want the revision and the tag", got)
	}
	if _, err := files.Lookup(ctx, &fuse.LookupRequest{Name: "v2"}, &fuse.LookupResponse{}); classify(err) != syscall.ENOENT {
		t.Errorf("lookup of a missing tag: %v", err)
	}
	var resp fuse.LookupResponse
	n, err := files.Lookup(ctx, &fuse.LookupRequest{Name: "v1"}, &resp)
	if err != nil {
		t.Fatal(err)
	}
	img := n.(imageDir)
	if img.dgst != dgst || resp.EntryValid != f.opts.EntryTTL {
		t.Errorf("_files/v1 is %v valid for %v, want the revision %s for the entry timeout", img.dgst, resp.EntryValid, dgst)
	}
	byDigest, err := files.Lookup(ctx, &fuse.LookupRequest{Name: dgst.String()}, &fuse.LookupResponse{})
	if err != nil {
		t.Fatal(err)
	}
	if byDigest == n {
		t.Errorf("_files/v1 and _files/%s are one node: a directory has one parent", dgst)
	}
	var a fuse.Attr
	if err := img.Attr(ctx, &a); err != nil || a.Mode != os.ModeDir|0o755 || a.Uid != 0 {
		t.Errorf("image root attr %v %v", a, err)
	}

	etcNode, err := img.Lookup(ctx, &fuse.LookupRequest{Name: "etc"}, &fuse.LookupResponse{})
	if err != nil {
		t.Fatal(err)
	}
	etc := etcNode.(treeDir)
	ds, err = etc.ReadDirAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := direntNames(ds); len(got) != 3 || got[0] != "link" || got[1] != "motd" || got[2] != "motd2" {
		t.Errorf("etc lists %v, want link, motd, motd2 (old is whited out)", got)
	}
	lookup := func(name string) treeFile {
		t.Helper()
		n, err := etc.Lookup(ctx, &fuse.LookupRequest{Name: name}, &fuse.LookupResponse{})
		if err != nil {
			t.Fatalf("lookup %s: %v", name, err)
		}
		return n.(treeFile)
	}
	motd, motd2, link := lookup("motd"), lookup("motd2"), lookup("link")
	if motd != motd2 {
		t.Errorf("the two names of a hard link are two nodes")
	}
	if err := motd.Attr(ctx, &a); err != nil || a.Nlink != 2 || a.Size != 6 || a.Mode != 0o644 || a.Valid != immutableTTL {
		t.Errorf("motd attr %v %v", a, err)
	}
	if target, err := link.Readlink(ctx, &fuse.ReadlinkRequest{}); err != nil || target != "/etc/motd" {
		t.Errorf("readlink: %q %v", target, err)
	}
	h, err := motd.Open(ctx, &fuse.OpenRequest{Flags: fuse.OpenReadOnly}, &fuse.OpenResponse{})
	if err != nil {
		t.Fatal(err)
	}
	rr := fuse.ReadResponse{Data: make([]byte, 0, 100)}
	if err := h.(treeFile).Read(ctx, &fuse.ReadRequest{Size: 100}, &rr); err != nil || string(rr.Data) != "hello\n" {
		t.Errorf("read: %q %v", rr.Data, err)
	}

	for what, err := range map[string]error{
		"open for writing": func() error {
			_, err := motd.Open(ctx, &fuse.OpenRequest{Flags: fuse.OpenWriteOnly}, &fuse.OpenResponse{})
			return err
		}(),
		"chmod":         motd.Setattr(ctx, &fuse.SetattrRequest{Valid: fuse.SetattrMode, Mode: 0o600}, &fuse.SetattrResponse{}),
		"utimes of dir": etc.Setattr(ctx, &fuse.SetattrRequest{Valid: fuse.SetattrMtime}, &fuse.SetattrResponse{}),
		"unlink":        etc.Remove(ctx, &fuse.RemoveRequest{Name: "motd"}),
		"rename":        etc.Rename(ctx, &fuse.RenameRequest{OldName: "motd", NewName: "x"}, etc),
		"create": func() error {
			_, _, err := etc.Create(ctx, &fuse.CreateRequest{Name: "x"}, &fuse.CreateResponse{})
			return err
		}(),
		"mkdir in _files": func() error {
			_, err := files.Mkdir(ctx, &fuse.MkdirRequest{Name: "v2"})
			return err
		}(),
	} {
		if classify(err) != syscall.EPERM {
			t.Errorf("%s: %v, want EPERM", what, err)
		}
	}
}

func TestFilesNodesReadOnly(t *testing.T) {
	ctx := context.Background()
	f, _ := storeImage(t, true)
	n, err := newFilesDir(f, "app").Lookup(ctx, &fuse.LookupRequest{Name: "v1"}, &fuse.LookupResponse{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.(imageDir).Setattr(ctx, &fuse.SetattrRequest{Valid: fuse.SetattrMode}, &fuse.SetattrResponse{}); classify(err) != syscall.EROFS {
		t.Errorf("chmod on a read-only mount: %v, want EROFS", err)
	}
}

// Many lookups of an image not built yet build one tree.
func TestFilesTreeBuiltOnce(t *testing.T) {
	f, dgst := storeImage(t, false)
	var wg sync.WaitGroup
	trees := make([]*image.Tree, 8)
	for i := range trees {
		wg.Go(func() {
			tr, err := f.images.tree(context.Background(), "app", dgst)
			if err != nil {
				t.Error(err)
			}
			trees[i] = tr
		})
	}
	wg.Wait()
	for _, tr := range trees {
		if tr == nil || tr != trees[0] {
			t.Fatalf("concurrent lookups got different trees: %v", trees)
		}
	}
}
