package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/store"
)

const (
	wo         = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	appendFlag = os.O_WRONLY | os.O_APPEND
)

func TestListNestedNamespaces(t *testing.T) {
	m := newMount(t, mountConfig{})
	mf, mfd, layers := m.pushImage("library/ubuntu", "22.04", 2)
	m.pushImage("team/app/api", "v1", 1)

	root := m.readDir(m.dir)
	for _, want := range []string{".regfs", "library", "team"} {
		if !contains(root, want) {
			t.Errorf("root lists %v, want %s", root, want)
		}
	}
	lib := m.readDir(m.path("library"))
	for _, want := range []string{"ubuntu", "_layers", "_manifests", "_uploads"} {
		if !contains(lib, want) {
			t.Errorf("library lists %v, want %s", lib, want)
		}
	}
	if got := m.readDir(m.path("team")); !contains(got, "app") {
		t.Errorf("team lists %v", got)
	}
	if got := m.readDir(m.path("team/app")); !contains(got, "api") {
		t.Errorf("team/app lists %v", got)
	}
	man := m.readDir(m.path("library/ubuntu/_manifests"))
	if !contains(man, "22.04") || !contains(man, mfd.String()) || len(man) != 2 {
		t.Errorf("_manifests lists %v", man)
	}
	ls := m.readDir(m.path("library/ubuntu/_layers"))
	if len(ls) != 3 || !contains(ls, digest.FromBytes(layers[1]).String()) {
		t.Errorf("_layers lists %v", ls)
	}
	if _, err := m.stat(m.path("nope")); !os.IsNotExist(err) {
		t.Errorf("stat of a missing namespace: %v", err)
	}
	if _, err := m.stat(m.path("library/ubuntu/_manifests/nope")); !os.IsNotExist(err) {
		t.Errorf("stat of a missing tag: %v", err)
	}

	// Sizes are exact, modes as documented, inodes derived.
	for _, c := range []struct {
		p    string
		size int
		mode os.FileMode
	}{
		{"library/ubuntu/_manifests/22.04", len(mf), 0o644},
		{"library/ubuntu/_manifests/" + mfd.String(), len(mf), 0o444},
		{"library/ubuntu/_layers/" + digest.FromBytes(layers[1]).String(), len(layers[1]), 0o444},
		{".regfs/stats", -1, 0o444},
	} {
		fi, err := m.stat(m.path(c.p))
		if err != nil {
			t.Errorf("stat %s: %v", c.p, err)
			continue
		}
		if c.size >= 0 && fi.Size() != int64(c.size) {
			t.Errorf("stat %s: size %d, want %d", c.p, fi.Size(), c.size)
		}
		if fi.Mode() != c.mode {
			t.Errorf("stat %s: mode %v, want %v", c.p, fi.Mode(), c.mode)
		}
	}
	fi, _ := m.stat(m.path("library/ubuntu/_layers/" + digest.FromBytes(layers[0]).String()))
	if ino := fi.Sys().(*syscall.Stat_t).Ino; ino != digestInode(digest.FromBytes(layers[0])) {
		t.Errorf("layer inode %d, want it derived from the digest", ino)
	}
	fi, _ = m.stat(m.path("library/ubuntu"))
	if !fi.IsDir() || fi.Mode().Perm() != 0o755 || fi.Sys().(*syscall.Stat_t).Ino != pathInode("library/ubuntu") {
		t.Errorf("library/ubuntu: %v ino %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Ino)
	}
}

func TestReadAtOffsets(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 3<<20+1234)
	d := m.pushBlob("r", content)
	p := m.path("r/_layers", d.String())
	m.must("read at offsets", func() error {
		f, err := openFile(p, os.O_RDONLY)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, off := range []int{len(content) - 10, 0, 1, 4095, 1 << 20, 256<<10 - 3, 2<<20 + 77} {
			buf := make([]byte, 100000)
			n, err := f.ReadAt(buf, int64(off))
			want := content[off:min(off+len(buf), len(content))]
			if n != len(want) || !bytes.Equal(buf[:n], want) {
				t.Errorf("ReadAt(%d): %d bytes, err %v, wrong content", off, n, err)
			}
			if n < len(buf) && err != io.EOF {
				t.Errorf("ReadAt(%d) at the end: err %v, want io.EOF", off, err)
			}
		}
		return nil
	})
	if got := m.readFile(p); !bytes.Equal(got, content) {
		t.Error("whole read differs")
	}
	mf, mfd, _ := m.pushImage("r", "v1", 1)
	for _, name := range []string{"v1", mfd.String()} {
		if got := m.readFile(m.path("r/_manifests", name)); !bytes.Equal(got, mf) {
			t.Errorf("%s reads %q", name, got)
		}
	}
	m.must("read manifest at an offset", func() error {
		f, err := openFile(m.path("r/_manifests/v1"), os.O_RDONLY)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, 20)
		n, err := f.ReadAt(buf, 10)
		if n != 20 || !bytes.Equal(buf, mf[10:30]) {
			t.Errorf("manifest ReadAt(10): %q %v", buf[:n], err)
		}
		return nil
	})
}

func TestUploadCommitOnClose(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 1<<20+5)
	d := digest.FromBytes(content)
	m.must("mkdir", func() error { return os.MkdirAll(m.path("a/b"), 0o755) })
	up := m.path("a/b/_uploads", d.String())
	if err := m.writeClose(up, wo, content); err != nil {
		t.Fatalf("upload: %v", err)
	}
	// Gone for every other process (this one, which committed it, may
	// still set its attributes by name: committedFile).
	if err := m.do(func() error { return exec.Command("test", "-e", up).Run() }); err == nil {
		t.Error("committed upload still in _uploads for another process")
	}
	if fi, err := m.stat(up); err != nil || fi.Size() != int64(len(content)) {
		t.Errorf("the committing process's stat of its upload: %v", err)
	}
	if got := m.readDir(m.path("a/b/_uploads")); len(got) != 0 {
		t.Errorf("_uploads lists %v after commit", got)
	}
	if got := m.readFile(m.path("a/b/_layers", d.String())); !bytes.Equal(got, content) {
		t.Error("committed layer reads differently")
	}
	if ok, _ := m.st.IsRepository(context.Background(), "a/b"); !ok {
		t.Error("a/b is not a repository after its first upload")
	}
	if ok, _ := m.st.IsRepository(context.Background(), "a"); ok {
		t.Error("namespace a became a repository")
	}
	// The empty blob is pushed by creating its upload file.
	empty := digest.FromBytes(nil)
	if err := m.writeClose(m.path("a/b/_uploads", empty.String()), wo, nil); err != nil {
		t.Errorf("empty upload: %v", err)
	}
	if _, err := m.stat(m.path("a/b/_layers", empty.String())); err != nil {
		t.Errorf("empty blob not committed: %v", err)
	}
}

func TestUploadMismatchThenAppend(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 600000)
	d := digest.FromBytes(content)
	m.must("mkdir", func() error { return os.Mkdir(m.path("r"), 0o755) })
	up := m.path("r/_uploads", d.String())
	err := m.writeClose(up, wo, content[:200000])
	wantErrno(t, "close of a partial upload", err, syscall.EBADMSG)
	fi, err := m.stat(up)
	if err != nil || fi.Size() != 200000 || fi.Mode() != 0o644 {
		t.Fatalf("upload after mismatch: %v %v", fi, err)
	}
	if _, err := m.stat(m.path("r/_layers", d.String())); !os.IsNotExist(err) {
		t.Errorf("layer visible after a mismatch: %v", err)
	}
	errs := string(m.readFile(m.path(".regfs/errors")))
	if !strings.Contains(errs, d.String()) || !strings.Contains(errs, "r/_uploads/"+d.String()) {
		t.Errorf(".regfs/errors:\n%s", errs)
	}
	// O_APPEND continues at the size; a second mismatch keeps it.
	wantErrno(t, "append middle", m.writeClose(up, appendFlag, content[200000:400000]), syscall.EBADMSG)
	// A positioned write at the end completes it.
	m.must("write the rest at the end", func() error {
		f, err := openFile(up, os.O_WRONLY)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(content[400000:], 400000); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if got := m.readFile(m.path("r/_layers", d.String())); !bytes.Equal(got, content) {
		t.Error("resumed layer reads differently")
	}
}

func TestUploadWriteNotAtEnd(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 100000)
	d := digest.FromBytes(content)
	up := m.path("r/_uploads", d.String())
	m.must("mkdir", func() error { return os.Mkdir(m.path("r"), 0o755) })
	_ = m.writeClose(up, wo, content[:50000])
	err := m.do(func() error {
		f, err := openFile(up, os.O_WRONLY)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(content[1000:2000], 1000)
		return err
	})
	wantErrno(t, "write in the middle", err, syscall.EINVAL)
	err = m.do(func() error { return os.Truncate(up, 10) })
	wantErrno(t, "truncate to a smaller size", err, syscall.EINVAL)
	if err := m.do(func() error { return os.Truncate(up, 50000) }); err != nil {
		t.Errorf("truncate to the current size: %v", err)
	}
	if fi, _ := m.stat(up); fi == nil || fi.Size() != 50000 {
		t.Errorf("upload size after refused writes: %v", fi)
	}
	// O_TRUNC starts it over.
	wantErrno(t, "rewrite", m.writeClose(up, wo, content[:10]), syscall.EBADMSG)
	if fi, _ := m.stat(up); fi == nil || fi.Size() != 10 {
		t.Errorf("upload size after O_TRUNC rewrite: %v", fi)
	}
}

func TestUploadRmCancels(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 10000)
	d := digest.FromBytes(content)
	up := m.path("r/_uploads", d.String())
	m.must("mkdir", func() error { return os.Mkdir(m.path("r"), 0o755) })
	_ = m.writeClose(up, wo, content[:5000])
	m.must("rm", func() error { return os.Remove(up) })
	if got := m.readDir(m.path("r/_uploads")); len(got) != 0 {
		t.Errorf("_uploads after rm: %v", got)
	}
	m.eventually("store has no upload", func() bool {
		infos, err := m.repo("r").Uploads().List(context.Background())
		return err == nil && len(infos) == 0
	})
	wantErrno(t, "rm of a missing upload", m.do(func() error { return os.Remove(up) }), syscall.ENOENT)
}

func TestUploadNames(t *testing.T) {
	m := newMount(t, mountConfig{})
	m.must("mkdir", func() error { return os.Mkdir(m.path("r"), 0o755) })
	for _, name := range []string{"layer.tgz", "sha256:abc", "sha512:" + strings.Repeat("a", 128), "sha256:" + strings.Repeat("A", 64)} {
		err := m.writeClose(m.path("r/_uploads", name), wo, []byte("hi"))
		wantErrno(t, "create _uploads/"+name, err, syscall.EINVAL)
	}
	// Reading an upload is refused.
	d := digest.FromBytes([]byte("abc"))
	_ = m.writeClose(m.path("r/_uploads", d.String()), wo, []byte("ab"))
	wantErrno(t, "read an upload", m.do(func() error {
		_, err := readFile(m.path("r/_uploads", d.String()))
		return err
	}), syscall.EACCES)
}

func TestUploadResumesFromStorage(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 300000)
	d := digest.FromBytes(content)
	// An upload a previous daemon left.
	up, err := m.repo("r").Uploads().Create(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(content[:123456]); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	p := m.path("r/_uploads", d.String())
	if fi, err := m.stat(p); err != nil || fi.Size() != 123456 {
		t.Fatalf("stat of a left upload: %v %v", fi, err)
	}
	if err := m.writeClose(p, appendFlag, content[123456:]); err != nil {
		t.Fatalf("append: %v", err)
	}
	if got := m.readFile(m.path("r/_layers", d.String())); !bytes.Equal(got, content) {
		t.Error("resumed layer differs")
	}
}

func TestForeignUpload(t *testing.T) {
	m := newMount(t, mountConfig{})
	ctx := context.Background()
	id := "0b6f0a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
	base := "/docker/registry/v2/repositories/r/_uploads/" + id
	if err := m.drv.PutContent(ctx, base+"/data", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := m.drv.PutContent(ctx, base+"/startedat", []byte("2024-01-02T03:04:05Z")); err != nil {
		t.Fatal(err)
	}
	if got := m.readDir(m.path("r/_uploads")); len(got) != 1 || got[0] != id {
		t.Fatalf("_uploads lists %v", got)
	}
	p := m.path("r/_uploads", id)
	fi, err := m.stat(p)
	if err != nil || fi.Size() != 5 || fi.Mode() != 0o444 {
		t.Fatalf("stat: %v %v", fi, err)
	}
	wantErrno(t, "write a foreign upload", m.writeClose(p, appendFlag, []byte("6")), syscall.EPERM)
	m.must("rm", func() error { return os.Remove(p) })
	if _, err := m.drv.Stat(ctx, base); err == nil {
		t.Error("foreign upload still in storage after rm")
	}
}

func TestManifestPush(t *testing.T) {
	m := newMount(t, mountConfig{})
	config := []byte(`{"architecture":"arm64","os":"linux"}`)
	layer := randomBytes(t, 5000)
	m.pushBlob("app", config)
	m.pushBlob("app", layer)
	mf := imageManifest(t, config, layer)
	mfd := digest.FromBytes(mf)

	// By tag.
	if err := m.writeClose(m.path("app/_manifests/latest"), wo, mf); err != nil {
		t.Fatalf("push by tag: %v", err)
	}
	if got := m.readFile(m.path("app/_manifests/latest")); !bytes.Equal(got, mf) {
		t.Error("tag reads differently")
	}
	if d, err := m.repo("app").Tags().Get(context.Background(), "latest"); err != nil || d != mfd {
		t.Errorf("tag in storage: %s %v", d, err)
	}
	// Re-push to the same tag moves it; the page cache must not serve the
	// old manifest.
	mf2 := imageManifest(t, config)
	if err := m.writeClose(m.path("app/_manifests/latest"), wo, mf2); err != nil {
		t.Fatalf("re-push: %v", err)
	}
	m.eventually("tag reads the new manifest", func() bool {
		return bytes.Equal(m.readFile(m.path("app/_manifests/latest")), mf2)
	})
	if fi, err := m.stat(m.path("app/_manifests/latest")); err != nil || fi.Size() != int64(len(mf2)) {
		t.Errorf("tag size after re-push: %v %v", fi, err)
	}

	// By digest, untagged.
	mf3 := imageManifest(t, layer)
	m.pushBlob("app", layer)
	if err := m.writeClose(m.path("app/_manifests", digest.FromBytes(mf3).String()), wo, mf3); err != nil {
		// layer as config is fine for verification: it is linked.
		t.Fatalf("push by digest: %v", err)
	}
	if tags, _ := m.repo("app").Tags().List(context.Background()); len(tags) != 1 {
		t.Errorf("push by digest tagged: %v", tags)
	}
	// Under the wrong digest: rejected, nothing left.
	wrong := "sha256:" + strings.Repeat("ab", 32)
	err := m.writeClose(m.path("app/_manifests", wrong), wo, mf3)
	wantErrno(t, "push under a wrong digest", err, syscall.EBADMSG)
	if _, err := m.stat(m.path("app/_manifests", wrong)); !os.IsNotExist(err) {
		t.Errorf("rejected revision visible: %v", err)
	}
	// Writing an existing revision is refused.
	err = m.writeClose(m.path("app/_manifests", mfd.String()), wo, mf)
	wantErrno(t, "rewrite a revision", err, syscall.EPERM)
	// Bad names.
	wantErrno(t, "bad tag", m.writeClose(m.path("app/_manifests/-bad"), wo, mf), syscall.EINVAL)
	wantErrno(t, "bad digest", m.writeClose(m.path("app/_manifests/sha256:12"), wo, mf), syscall.EINVAL)
}

func TestManifestRejected(t *testing.T) {
	m := newMount(t, mountConfig{})
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	m.pushBlob("app", config)
	missing := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	mf := imageManifest(t, config, missing...)
	err := m.writeClose(m.path("app/_manifests/v1"), wo, mf)
	wantErrno(t, "push with missing layers", err, syscall.EBADMSG)
	errs := string(m.readFile(m.path(".regfs/errors")))
	for _, l := range missing {
		if !strings.Contains(errs, digest.FromBytes(l).String()) {
			t.Errorf(".regfs/errors does not name %s:\n%s", digest.FromBytes(l), errs)
		}
	}
	// Each reason on its own line, after a line with time and path.
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	if len(lines) < 4 || !strings.HasSuffix(lines[0], " app/_manifests/v1") {
		t.Errorf(".regfs/errors layout:\n%s", errs)
	}
	if _, err := m.stat(m.path("app/_manifests/v1")); !os.IsNotExist(err) {
		t.Errorf("rejected tag visible: %v", err)
	}
	if revs, _ := m.repo("app").Manifests().List(context.Background()); len(revs) != 0 {
		t.Errorf("rejected manifest stored: %v", revs)
	}
	// Malformed JSON fails at the write already, so shells see it.
	err = m.do(func() error {
		f, err := openFile(m.path("app/_manifests/bad"), wo)
		if err != nil {
			return err
		}
		_, werr := f.Write([]byte("{not json\n"))
		cerr := f.Close()
		if !errors.Is(cerr, syscall.EBADMSG) {
			t.Errorf("close after a malformed write: %v", cerr)
		}
		return werr
	})
	wantErrno(t, "write of malformed JSON", err, syscall.EBADMSG)
	// Too large.
	big := bytes.Repeat([]byte(" "), 5<<20)
	err = m.writeClose(m.path("app/_manifests/big"), wo, big)
	wantErrno(t, "oversized manifest", err, syscall.EFBIG)
	if got := m.readDir(m.path("app/_manifests")); len(got) != 0 {
		t.Errorf("_manifests lists %v after rejections", got)
	}
}

func TestLnTagAndRm(t *testing.T) {
	m := newMount(t, mountConfig{})
	mf, mfd, _ := m.pushImage("app", "v1", 1)
	rev := m.path("app/_manifests", mfd.String())
	m.must("ln", func() error { return os.Link(rev, m.path("app/_manifests/stable")) })
	if got := m.readFile(m.path("app/_manifests/stable")); !bytes.Equal(got, mf) {
		t.Error("ln-made tag reads differently")
	}
	a, _ := m.stat(rev)
	b, _ := m.stat(m.path("app/_manifests/stable"))
	if a == nil || b == nil || a.Sys().(*syscall.Stat_t).Ino != b.Sys().(*syscall.Stat_t).Ino {
		t.Error("tag and revision inodes differ")
	}
	// ln from a tag tags the same revision.
	m.must("ln from a tag", func() error { return os.Link(m.path("app/_manifests/stable"), m.path("app/_manifests/also")) })
	if d, _ := m.repo("app").Tags().Get(context.Background(), "also"); d != mfd {
		t.Errorf("also -> %s", d)
	}
	wantErrno(t, "ln to a digest name", m.do(func() error {
		return os.Link(rev, m.path("app/_manifests", "sha256:"+strings.Repeat("0", 64)))
	}), syscall.EINVAL)

	// rm of a tag untags; the revision stays.
	m.must("rm tag", func() error { return os.Remove(m.path("app/_manifests/v1")) })
	if _, err := m.stat(m.path("app/_manifests/v1")); !os.IsNotExist(err) {
		t.Errorf("tag after rm: %v", err)
	}
	if got := m.readFile(rev); !bytes.Equal(got, mf) {
		t.Error("revision gone after untag")
	}

	// rm of the revision removes it and its tags.
	keep, keepd, _ := m.pushImage("app", "other", 1)
	m.must("stat the tags", func() error {
		for _, n := range []string{"stable", "also"} {
			if _, err := os.Stat(m.path("app/_manifests", n)); err != nil {
				return err
			}
		}
		return nil
	})
	m.must("rm revision", func() error { return os.Remove(rev) })
	ls := m.readDir(m.path("app/_manifests"))
	for _, gone := range []string{"stable", "also", mfd.String()} {
		if contains(ls, gone) {
			t.Errorf("%s listed after rm of its revision: %v", gone, ls)
		}
	}
	if !contains(ls, "other") || !contains(ls, keepd.String()) {
		t.Errorf("unrelated entries gone: %v", ls)
	}
	m.eventually("tags of the removed revision are gone", func() bool {
		_, err := m.stat(m.path("app/_manifests/stable"))
		return os.IsNotExist(err)
	})
	if got := m.readFile(m.path("app/_manifests/other")); !bytes.Equal(got, keep) {
		t.Error("other tag reads differently")
	}
	wantErrno(t, "rm of a missing tag", m.do(func() error { return os.Remove(m.path("app/_manifests/v1")) }), syscall.ENOENT)
}

func TestLnLayerAcrossRepositories(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 400000)
	d := m.pushBlob("a", content)
	_, mfd, _ := m.pushImage("a", "v1", 1)
	m.must("mkdir b", func() error { return os.Mkdir(m.path("b"), 0o755) })
	m.must("ln", func() error { return os.Link(m.path("a/_layers", d.String()), m.path("b/_layers", d.String())) })
	if got := m.readFile(m.path("b/_layers", d.String())); !bytes.Equal(got, content) {
		t.Error("cross-mounted layer reads differently")
	}
	if ok, _ := m.st.IsRepository(context.Background(), "b"); !ok {
		t.Error("b is not a repository after a link")
	}
	wantErrno(t, "ln under another name", m.do(func() error {
		return os.Link(m.path("a/_layers", d.String()), m.path("b/_layers/x"))
	}), syscall.EINVAL)
	wantErrno(t, "ln a layer into _manifests", m.do(func() error {
		return os.Link(m.path("a/_layers", d.String()), m.path("a/_manifests/t"))
	}), syscall.EINVAL)
	wantErrno(t, "ln a manifest into _layers", m.do(func() error {
		return os.Link(m.path("a/_manifests", mfd.String()), m.path("b/_layers", mfd.String()))
	}), syscall.EINVAL)
	wantErrno(t, "ln a manifest into another repository", m.do(func() error {
		return os.Link(m.path("a/_manifests", mfd.String()), m.path("b/_manifests/v1"))
	}), syscall.EXDEV)

	// rm unlinks; the data stays for the other repository.
	m.must("rm layer", func() error { return os.Remove(m.path("a/_layers", d.String())) })
	if _, err := m.stat(m.path("a/_layers", d.String())); !os.IsNotExist(err) {
		t.Errorf("layer after rm: %v", err)
	}
	if got := m.readFile(m.path("b/_layers", d.String())); !bytes.Equal(got, content) {
		t.Error("unlink in a removed the data")
	}
}

func TestMkdirRmdir(t *testing.T) {
	m := newMount(t, mountConfig{})
	ctx := context.Background()
	m.must("mkdir -p", func() error { return os.MkdirAll(m.path("team/app"), 0o755) })
	for _, sub := range []string{"_layers", "_manifests", "_uploads"} {
		if fi, err := m.stat(m.path("team/app", sub)); err != nil || !fi.IsDir() {
			t.Errorf("team/app/%s: %v", sub, err)
		}
	}
	if got := m.readDir(m.path("team")); !contains(got, "app") {
		t.Errorf("team lists %v", got)
	}
	if ok, _ := m.st.IsRepository(ctx, "team/app"); ok {
		t.Error("mkdir made a repository in storage")
	}
	wantErrno(t, "rmdir of a namespace holding a directory", m.do(func() error { return os.Remove(m.path("team")) }), syscall.ENOTEMPTY)
	m.must("rmdir", func() error { return os.Remove(m.path("team/app")) })
	if _, err := m.stat(m.path("team/app")); !os.IsNotExist(err) {
		t.Errorf("team/app after rmdir: %v", err)
	}
	m.must("rmdir team", func() error { return os.Remove(m.path("team")) })

	m.pushBlob("full", []byte("x"))
	wantErrno(t, "rmdir of a non-empty repository", m.do(func() error { return os.Remove(m.path("full")) }), syscall.ENOTEMPTY)
	m.must("rm its layer", func() error { return os.Remove(m.path("full/_layers", digest.FromBytes([]byte("x")).String())) })
	m.must("rmdir of the emptied repository", func() error { return os.Remove(m.path("full")) })
	if ok, _ := m.st.IsRepository(ctx, "full"); ok {
		t.Error("repository still in storage after rmdir")
	}

	for _, name := range []string{"Upper", "a..b", "-lead", "trail-", "_reserved", "x:y"} {
		wantErrno(t, "mkdir "+name, m.do(func() error { return os.Mkdir(m.path(name), 0o755) }), syscall.EINVAL)
	}
	m.must("mkdir r", func() error { return os.Mkdir(m.path("r"), 0o755) })
	if err := m.do(func() error { return os.Remove(m.path("r/_layers")) }); err != nil {
		t.Errorf("rmdir of an empty _layers: %v", err)
	}
	wantErrno(t, "mkdir in _layers", m.do(func() error { return os.Mkdir(m.path("r/_layers/x"), 0o755) }), syscall.EPERM)
	wantErrno(t, "mkdir of an existing one", m.do(func() error { return os.Mkdir(m.path("r"), 0o755) }), syscall.EEXIST)
}

func TestOtherOperationsRefused(t *testing.T) {
	m := newMount(t, mountConfig{})
	mf, mfd, layers := m.pushImage("app", "v1", 1)
	_ = mf
	layer := m.path("app/_layers", digest.FromBytes(layers[0]).String())
	rev := m.path("app/_manifests", mfd.String())
	cases := []struct {
		what string
		fn   func() error
		want syscall.Errno
	}{
		{"rename a revision", func() error { return os.Rename(rev, m.path("app/_manifests/v2")) }, syscall.EPERM},
		{"rename a tag to a digest", func() error {
			return os.Rename(m.path("app/_manifests/v1"), m.path("app/_manifests", digest.FromString("x").String()))
		}, syscall.EINVAL},
		{"rename a directory", func() error { return os.Rename(m.path("app"), m.path("app2")) }, syscall.EPERM},
		{"symlink", func() error { return os.Symlink("x", m.path("app/_manifests/s")) }, syscall.EPERM},
		{"chmod setuid", func() error { return os.Chmod(layer, 0o777|os.ModeSetuid) }, syscall.EPERM},
		{"open a layer for writing", func() error { return openClose(layer, os.O_WRONLY) }, syscall.EPERM},
		{"open a layer read-write", func() error { return openClose(layer, os.O_RDWR) }, syscall.EPERM},
		{"truncate a layer", func() error { return os.Truncate(layer, 0) }, syscall.EPERM},
		{"open a revision for writing", func() error { return openClose(rev, os.O_WRONLY) }, syscall.EPERM},
		{"write .regfs/stats", func() error { return openClose(m.path(".regfs/stats"), os.O_WRONLY) }, syscall.EPERM},
		{"create in a namespace", func() error { return openClose(m.path("app/file"), wo) }, syscall.EPERM},
		{"create in _layers", func() error { return openClose(m.path("app/_layers/f"), wo) }, syscall.EPERM},
		{"setxattr", func() error { return syscall.Setxattr(layer, "user.x", []byte("1"), 0) }, syscall.ENOTSUP},
		{"rmdir .regfs", func() error { return os.Remove(m.path(".regfs")) }, syscall.EPERM},
	}
	for _, c := range cases {
		wantErrno(t, c.what, m.do(c.fn), c.want)
	}
	// Times, permission bits and owners are accepted and ignored.
	if err := m.do(func() error { return os.Chtimes(layer, timeZero, timeZero) }); err != nil {
		t.Errorf("touch a layer: %v", err)
	}
	if err := m.do(func() error { return os.Chmod(layer, 0o600) }); err != nil {
		t.Errorf("chmod a layer: %v", err)
	}
	if err := m.do(func() error { return os.Chown(m.path("app"), 1, 1) }); err != nil {
		t.Errorf("chown a repository: %v", err)
	}
	if fi, err := os.Stat(layer); err != nil || fi.Mode() != 0o444 {
		t.Errorf("layer after chmod: %v %v", fi.Mode(), err)
	}
	if got := m.readFile(layer); !bytes.Equal(got, layers[0]) {
		t.Error("layer changed")
	}
}

var timeZero = time.Unix(0, 0)

func openClose(p string, flag int) error {
	f, err := openFile(p, flag)
	if err != nil {
		return err
	}
	return f.Close()
}

func TestReadOnly(t *testing.T) {
	for _, kernelRO := range []bool{false, true} {
		name := "fs"
		if kernelRO {
			name = "fs+mount"
		}
		t.Run(name, func(t *testing.T) {
			m := newMount(t, mountConfig{readOnly: true, mountRO: kernelRO})
			mf, mfd, layers := m.pushImage("app", "v1", 1)
			layer := m.path("app/_layers", digest.FromBytes(layers[0]).String())
			d := digest.FromBytes([]byte("hello"))
			cases := []struct {
				what string
				fn   func() error
			}{
				{"mkdir", func() error { return os.Mkdir(m.path("new"), 0o755) }},
				{"rmdir", func() error { return os.Remove(m.path("app")) }},
				{"upload", func() error { return openClose(m.path("app/_uploads", d.String()), wo) }},
				{"push manifest", func() error { return openClose(m.path("app/_manifests/v2"), wo) }},
				{"rewrite tag", func() error { return openClose(m.path("app/_manifests/v1"), os.O_WRONLY) }},
				{"untag", func() error { return os.Remove(m.path("app/_manifests/v1")) }},
				{"delete revision", func() error { return os.Remove(m.path("app/_manifests", mfd.String())) }},
				{"unlink layer", func() error { return os.Remove(layer) }},
				{"tag", func() error { return os.Link(m.path("app/_manifests", mfd.String()), m.path("app/_manifests/v3")) }},
				{"rename", func() error { return os.Rename(m.path("app/_manifests/v1"), m.path("app/_manifests/v4")) }},
				{"open layer for writing", func() error { return openClose(layer, os.O_WRONLY) }},
			}
			for _, c := range cases {
				wantErrno(t, c.what, m.do(c.fn), syscall.EROFS)
			}
			if got := m.readFile(m.path("app/_manifests/v1")); !bytes.Equal(got, mf) {
				t.Error("read-only mount does not read the manifest")
			}
			if tags, _ := m.repo("app").Tags().List(context.Background()); len(tags) != 1 {
				t.Errorf("tags changed: %v", tags)
			}
		})
	}
}

func TestStats(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 2<<20)
	d := m.pushBlob("r", content)
	read := func() Stats {
		var s Stats
		if err := json.Unmarshal(m.readFile(m.path(".regfs/stats")), &s); err != nil {
			t.Fatalf(".regfs/stats is not JSON: %v", err)
		}
		return s
	}
	before := read()
	if before.Cache == nil || before.Cache.Budget != 16<<20 {
		t.Fatalf("stats without the cache: %+v", before)
	}
	m.readFile(m.path("r/_layers", d.String()))
	_, _ = m.stat(m.path("r/_layers/nope"))
	after := read()
	if after.BytesRead-before.BytesRead < int64(len(content)) {
		t.Errorf("bytes_read moved by %d, want >= %d", after.BytesRead-before.BytesRead, len(content))
	}
	if after.Cache.Misses+after.Cache.Hits <= before.Cache.Misses+before.Cache.Hits {
		t.Errorf("cache counters did not move: %+v -> %+v", before.Cache, after.Cache)
	}
	if after.ErrorsByErrno["ENOENT"] <= before.ErrorsByErrno["ENOENT"] {
		t.Errorf("ENOENT not counted: %v", after.ErrorsByErrno)
	}
	if after.DriverCalls["Reader"] <= before.DriverCalls["Reader"] {
		t.Errorf("driver_calls did not count the blob read: %v -> %v", before.DriverCalls, after.DriverCalls)
	}
	// Uploads in flight while a file is open.
	var inFlight int
	m.must("open an upload", func() error {
		f, err := openFile(m.path("r/_uploads", digest.FromBytes([]byte("z")).String()), wo)
		if err != nil {
			return err
		}
		inFlight = read().UploadsInFlight
		if _, err := f.Write([]byte("z")); err != nil {
			return err
		}
		return f.Close()
	})
	if inFlight != 1 {
		t.Errorf("uploads_in_flight = %d with one open, want 1", inFlight)
	}
	if s := read(); s.UploadsCommitted != 1 || s.BytesWritten != 1 {
		t.Errorf("after one upload: %+v", s)
	}
}

// TestShellRedirection does what a shell does for `cmd > file`: open, dup2
// the descriptor, close the original (a flush with nothing written), write
// through the copy, close it. Only the last close may commit, and the
// first must record nothing.
func TestShellRedirection(t *testing.T) {
	m := newMount(t, mountConfig{})
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	mf := imageManifest(t, config)
	m.must("mkdir", func() error { return os.Mkdir(m.path("r"), 0o755) })
	redirect := func(p string, b []byte) error {
		return m.do(func() error {
			fd, err := syscall.Open(p, wo|syscall.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			fd2, err := syscall.Dup(fd)
			if err != nil {
				return err
			}
			if err := syscall.Close(fd); err != nil {
				syscall.Close(fd2)
				return err
			}
			if _, err := syscall.Write(fd2, b); err != nil {
				syscall.Close(fd2)
				return err
			}
			return syscall.Close(fd2)
		})
	}
	if err := redirect(m.path("r/_uploads", digest.FromBytes(config).String()), config); err != nil {
		t.Fatalf("upload through a redirection: %v", err)
	}
	if err := redirect(m.path("r/_manifests/v1"), mf); err != nil {
		t.Fatalf("manifest through a redirection: %v", err)
	}
	if got := m.readFile(m.path("r/_manifests/v1")); !bytes.Equal(got, mf) {
		t.Error("tag reads differently")
	}
	if errs := m.readFile(m.path(".regfs/errors")); len(errs) != 0 {
		t.Errorf(".regfs/errors after clean pushes:\n%s", errs)
	}
	// A manifest file created and closed without a write disappears.
	m.must("touch", func() error { return openClose(m.path("r/_manifests/empty"), wo) })
	m.eventually("unwritten manifest disappears", func() bool {
		_, err := m.stat(m.path("r/_manifests/empty"))
		return os.IsNotExist(err)
	})
}

// TestSharedDescriptor checks that only the opening process's close
// commits: children that inherited the descriptor (`(cat a; cat b) >
// file`) close it first, and their closes must neither commit nor fail.
// When the opener closes before a child, the last close (the release)
// commits.
func TestSharedDescriptor(t *testing.T) {
	m := newMount(t, mountConfig{})
	content := randomBytes(t, 300000)
	d := digest.FromBytes(content)
	dir := t.TempDir()
	parts := []string{dir + "/1", dir + "/2"}
	if err := os.WriteFile(parts[0], content[:100000], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(parts[1], content[100000:], 0o644); err != nil {
		t.Fatal(err)
	}
	m.must("mkdir", func() error { return os.Mkdir(m.path("r"), 0o755) })
	up := m.path("r/_uploads", d.String())
	catInto := func(f *os.File, part string) error {
		var stderr bytes.Buffer
		cmd := exec.Command("cat", part)
		cmd.Stdout, cmd.Stderr = f, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("cat %s: %v: %s", part, err, stderr.String())
		}
		return nil
	}
	m.must("two children write, the opener closes", func() error {
		f, err := openFile(up, wo)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if err := catInto(f, p); err != nil {
				f.Close()
				return err
			}
		}
		return f.Close()
	})
	if got := m.readFile(m.path("r/_layers", d.String())); !bytes.Equal(got, content) {
		t.Error("layer written by two children differs")
	}

	// The opener writes part of it and closes first; a child finishes.
	content2 := randomBytes(t, 200000)
	d2 := digest.FromBytes(content2)
	if err := os.WriteFile(parts[1], content2[50000:], 0o644); err != nil {
		t.Fatal(err)
	}
	up2 := m.path("r/_uploads", d2.String())
	m.must("opener closes before the child", func() error {
		f, err := openFile(up2, wo)
		if err != nil {
			return err
		}
		if _, err := f.Write(content2[:50000]); err != nil {
			return err
		}
		cmd := exec.Command("sh", "-c", `read x; exec cat "$1"`, "sh", parts[1])
		cmd.Stdout = f
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		if err := f.Close(); !errors.Is(err, syscall.EBADMSG) {
			t.Errorf("opener's close of a partial upload: %v, want EBADMSG", err)
		}
		stdin.Write([]byte("go\n"))
		stdin.Close()
		return cmd.Wait()
	})
	m.eventually("the last close commits", func() bool {
		_, err := m.stat(m.path("r/_layers", d2.String()))
		return err == nil
	})
	if got := m.readFile(m.path("r/_layers", d2.String())); !bytes.Equal(got, content2) {
		t.Error("layer finished by a child differs")
	}
}

// TestRetagIsSeenAtOnce moves a tag with rm and ln (what ln -f does) right
// after reading it: the kernel must not serve the old manifest's size or
// bytes from its caches.
func TestRetagIsSeenAtOnce(t *testing.T) {
	m := newMount(t, mountConfig{})
	mf1, _, _ := m.pushImage("app", "v1", 1)
	mf2, d2, _ := m.pushImage("app", "v2", 2)
	tag := m.path("app/_manifests/v1")
	if got := m.readFile(tag); !bytes.Equal(got, mf1) {
		t.Fatal("v1 reads differently")
	}
	m.must("rm", func() error { return os.Remove(tag) })
	m.must("ln", func() error { return os.Link(m.path("app/_manifests", d2.String()), tag) })
	if got := m.readFile(tag); !bytes.Equal(got, mf2) {
		t.Errorf("re-tagged v1 reads %d bytes, want the %d of the new revision", len(got), len(mf2))
	}
	fi, err := m.stat(tag)
	if err != nil || fi.Size() != int64(len(mf2)) || fi.Sys().(*syscall.Stat_t).Ino != digestInode(d2) {
		t.Errorf("re-tagged v1: %v %v", fi, err)
	}
	// A tag moved behind regfs's back is seen within the attribute TTL.
	_, d1, _ := m.pushImage("app", "v3", 1)
	if err := m.repo("app").Tags().Tag(context.Background(), "v1", d1); err != nil {
		t.Fatal(err)
	}
	m.eventually("v1 follows a tag moved in storage", func() bool {
		fi, err := m.stat(tag)
		return err == nil && fi.Sys().(*syscall.Stat_t).Ino == digestInode(d1)
	})
}

// TestLsLTimesCostNoCall: ls -l of _layers shows each layer's link time and
// costs no driver call per entry beyond the two a lookup needs anyway (the
// link's stat and the data's): the listing's walk carries the times.
func TestLsLTimesCostNoCall(t *testing.T) {
	d := inmemory.New()
	first := newMount(t, mountConfig{drv: d})
	_, _, layers := first.pushImage("app", "v1", 5)
	m := newMount(t, mountConfig{drv: d})
	calls := func() int64 {
		c := m.st.(store.StatsReporter).Stats().DriverCalls
		return c["Stat"] + c["GetContent"]
	}
	before := calls()
	names := m.readDir(m.path("app/_layers"))
	if len(names) != len(layers)+1 {
		t.Fatalf("ls _layers = %v", names)
	}
	repo, err := m.st.Repository("app")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		fi, err := m.stat(m.path("app/_layers", n))
		if err != nil {
			t.Fatal(err)
		}
		want, err := repo.Layers().LinkTime(context.Background(), digest.Digest(n))
		if err != nil || !fi.ModTime().Equal(want) {
			t.Errorf("mtime of %s = %v, want its link's %v (%v)", n, fi.ModTime(), want, err)
		}
	}
	// Two Stats per entry (the link's and the data's) for ls -l, then the
	// test's own LinkTime calls.
	if got := calls() - before; got != int64(3*len(names)) {
		t.Errorf("%d driver Stats and GetContents for ls -l of %d layers and %d LinkTime calls, want %d", got, len(names), len(names), 3*len(names))
	}
}
