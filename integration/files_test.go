package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// The image file view (_files/) is checked against umoci: the same image,
// built here layer by layer from tar archives written in Go (so every
// whiteout, hard link and device node is exactly what the test means),
// is unpacked by `umoci unpack` and read through the mount after a push by
// skopeo through the registry; both trees must agree on every path, type,
// mode, owner, size, link target, link count and content hash.

// filesLayer is one layer of the fixture image: tar entries in order.
type filesLayer []tarEntry

// tarEntry is one tar header and, for regular files, its content.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

// fixture times: every entry gets one, so that mtimes compare exactly.
var filesTime = time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)

func tfile(name string, mode int64, data []byte) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: filesTime}, data: data}
}

func tdir(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: filesTime}}
}

func tsymlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: filesTime}}
}

func thardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: filesTime}}
}

func towned(e tarEntry, uid, gid int) tarEntry {
	e.hdr.Uid, e.hdr.Gid = uid, gid
	return e
}

// seededBytes returns n seeded random bytes (incompressible).
func seededBytes(seed uint64, n int) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// filesBigSize is the size of the large file: several gzip checkpoint
// intervals (1-4 MiB each).
const filesBigSize = 20 << 20

// longName is a path component longer than tar's 100-byte name field, so
// the header needs a PAX record.
var longName = strings.Repeat("long-name-", 20) + "end"

// filesLayers is the fixture image: three layers that exercise whiteouts,
// an opaque directory, hard links, symlinks (relative, absolute,
// dangling), long names, empty files, a large file, a file changed in
// every layer, device and fifo nodes, owners and odd modes, and a file
// replaced by a directory.
func filesLayers() []filesLayer {
	big := seededBytes(17, filesBigSize)
	return []filesLayer{{
		tdir("etc", 0o755),
		tfile("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")),
		tfile("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n")),
		tfile("etc/shadow", 0o640, []byte("root:*:19000:0:99999:7:::\n")),
		tdir("bin", 0o755),
		tfile("bin/sh", 0o4755, []byte("#!not really a shell\n")),
		tdir("data", 0o755),
		tfile("data/changed.txt", 0o644, []byte("version one\n")),
		tfile("data/empty", 0o644, nil),
		tfile("data/big.bin", 0o644, big),
		tdir("data/"+longName, 0o750),
		tfile("data/"+longName+"/"+longName+".txt", 0o600, []byte("a file with a long name in a directory with a long name\n")),
		tsymlink("data/"+longName+"/up", "../../etc/"+strings.Repeat("x", 150)),
		tdir("opaque", 0o755),
		tfile("opaque/old1", 0o644, []byte("hidden by the opaque marker\n")),
		tdir("opaque/sub", 0o755),
		tfile("opaque/sub/old2", 0o644, []byte("hidden too\n")),
		tfile("gone.txt", 0o644, []byte("deleted in layer 2\n")),
		tdir("gonedir", 0o755),
		tfile("gonedir/inner", 0o644, []byte("deleted with its directory\n")),
		tdir("hl", 0o755),
		tfile("hl/a", 0o644, []byte("one inode, three names\n")),
		thardlink("hl/b", "hl/a"),
		thardlink("hl/c", "hl/a"),
		tdir("links", 0o755),
		tsymlink("links/rel", "../etc/passwd"),
		tsymlink("links/abs", "/etc/hosts"),
		tsymlink("links/dangling", "/no/such/file"),
		tsymlink("links/dir", "../data"),
		tdir("dev", 0o755),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: filesTime}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop9", Mode: 0o660, Devmajor: 7, Devminor: 9, Gid: 6, ModTime: filesTime}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o620, ModTime: filesTime}},
		tdir("home", 0o755),
		towned(tdir("home/user", 0o700), 1000, 1000),
		towned(tfile("home/user/.profile", 0o644, []byte("export PS1='$ '\n")), 1000, 1000),
		tfile("swap", 0o644, []byte("a file that becomes a directory\n")),
	}, {
		tfile("data/changed.txt", 0o644, []byte("version two, longer than one\n")),
		tfile(".wh.gone.txt", 0o644, nil),
		tfile(".wh.gonedir", 0o644, nil),
		tdir("opaque", 0o755),
		tfile("opaque/.wh..wh..opq", 0o644, nil),
		tfile("opaque/new1", 0o644, []byte("the only file left in opaque/\n")),
		tfile("etc/added", 0o644, []byte("added in layer 2\n")),
		tfile("hl/.wh.c", 0o644, nil),
	}, {
		tfile("data/changed.txt", 0o600, []byte("v3\n")),
		tfile(".wh.swap", 0o644, nil),
		tdir("swap", 0o711),
		tfile("swap/inside", 0o644, []byte("swap is a directory now\n")),
		tdir("hl2", 0o755),
		towned(tfile("hl2/x", 0o640, []byte("linked within layer 3\n")), 33, 33),
		thardlink("hl2/y", "hl2/x"),
		tfile("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost\n")),
	}}
}

// tarOf writes a layer's entries as an uncompressed tar.
func tarOf(t *testing.T, l filesLayer) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range l {
		h := e.hdr
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// umociImage builds an OCI layout in a new temp dir holding tag, made by
// umoci from layers (each added verbatim with umoci raw add-layer, which
// gzips it), for platform.
func umociImage(t *testing.T, dir, tag string, platform v1.Platform, layers []filesLayer) {
	t.Helper()
	requireTools(t, "umoci")
	if _, err := os.Stat(filepath.Join(dir, "index.json")); errors.Is(err, fs.ErrNotExist) {
		umoci(t, "init", "--layout", dir)
	}
	img := dir + ":" + tag
	umoci(t, "new", "--image", img)
	umoci(t, "config", "--image", img, "--os", platform.OS, "--architecture", platform.Architecture)
	work := t.TempDir()
	for i, l := range layers {
		p := filepath.Join(work, fmt.Sprintf("layer%d.tar", i))
		if err := os.WriteFile(p, tarOf(t, l), 0o644); err != nil {
			t.Fatal(err)
		}
		umoci(t, "raw", "add-layer", "--image", img, p)
	}
}

func umoci(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("umoci", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("umoci %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// umociUnpack unpacks tag of the layout at dir and returns its rootfs.
func umociUnpack(t *testing.T, dir, tag string) string {
	t.Helper()
	bundle := filepath.Join(t.TempDir(), "bundle")
	umoci(t, "unpack", "--image", dir+":"+tag, bundle)
	return filepath.Join(bundle, "rootfs")
}

// layoutIndex adds to the OCI layout at dir an image index over the
// manifests tagged tags, with their platforms, tagged as tag.
func layoutIndex(t *testing.T, dir, tag string, platforms map[string]v1.Platform, tags ...string) {
	t.Helper()
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex}
	for _, child := range tags {
		d := readLayout(t, dir, child)
		d.Annotations = nil
		p := platforms[child]
		d.Platform = &p
		idx.Manifests = append(idx.Manifests, d)
	}
	data := mustJSON(t, idx)
	dgst := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", dgst.Encoded()), data, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top v1.Index
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	top.Manifests = append(top.Manifests, v1.Descriptor{
		MediaType: v1.MediaTypeImageIndex, Digest: dgst, Size: int64(len(data)),
		Annotations: map[string]string{v1.AnnotationRefName: tag},
	})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, top), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileInfo is what the comparison checks of one path.
type fileInfo struct {
	Type   string
	Mode   os.FileMode // permission, setuid, setgid and sticky bits
	UID    uint32
	GID    uint32
	Size   int64  // regular files
	Target string // symlinks
	Nlink  uint64 // not directories
	Rdev   uint64 // devices
	Hash   string // regular files
	Mtime  int64  // not directories
}

// snapshot walks root (not following symlinks) and describes every path
// below it, relative to root.
func snapshot(t *testing.T, root string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		// The first lookup below a tag merges the image, long enough for
		// a signal to interrupt it: retried on EINTR, as os.Lstat does.
		var st syscall.Stat_t
		if err := retryEINTR(func() error { return syscall.Lstat(p, &st) }); err != nil {
			return err
		}
		fi := fileInfo{
			Mode: os.FileMode(st.Mode & 0o7777),
			UID:  st.Uid,
			GID:  st.Gid,
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			fi.Type = "dir"
		case syscall.S_IFREG:
			fi.Type = "file"
			fi.Size = st.Size
			fi.Hash = hashFile(t, p)
		case syscall.S_IFLNK:
			fi.Type = "symlink"
			fi.Target, err = os.Readlink(p)
			if err != nil {
				return err
			}
		case syscall.S_IFCHR:
			fi.Type, fi.Rdev = "char", st.Rdev
		case syscall.S_IFBLK:
			fi.Type, fi.Rdev = "block", st.Rdev
		case syscall.S_IFIFO:
			fi.Type = "fifo"
		default:
			fi.Type = fmt.Sprintf("mode %o", st.Mode)
		}
		if fi.Type != "dir" {
			fi.Nlink = uint64(st.Nlink)
			fi.Mtime = st.Mtim.Sec
		}
		if fi.Type == "symlink" {
			fi.Mode = 0 // Linux symlinks are always 0777
		}
		out[rel] = fi
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return out
}

func hashFile(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("reading %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sameTree fails t with every difference between want (umoci's unpack)
// and got (the mount).
func sameTree(t *testing.T, want, got map[string]fileInfo) {
	t.Helper()
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: missing from the mount (umoci: %+v)", p, w))
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s:\n    umoci %+v\n    mount %+v", p, w, g))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in the mount (%+v)", p, g))
		}
	}
	slices.Sort(diffs)
	if len(diffs) > 0 {
		t.Errorf("%d differences between umoci unpack and _files:\n%s", len(diffs), strings.Join(diffs, "\n"))
	}
}

// filesFixture is the fixture image pushed to a registry's storage in
// several forms.
type filesFixture struct {
	Root   string // the registry's storage root
	Layout string // the OCI layout umoci built
	Want   map[string]fileInfo
	// Repos maps each pushed repository (tag v1) to how it was pushed.
	Repos map[string]string
}

// Platforms of the fixture's index.
var (
	filesAMD64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	filesARM64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// newFilesFixture builds the fixture image with umoci, unpacks it with
// umoci for the expected tree, and pushes it with skopeo through Debian's
// docker-registry: as a docker schema2 image (gzip), an OCI image (gzip),
// an OCI image recompressed to zstd, a schema1 image, and an OCI index of
// it and a small arm64 image.
func newFilesFixture(t *testing.T) *filesFixture {
	t.Helper()
	requireTools(t, "umoci", "skopeo", registryBin)
	fx := &filesFixture{Root: t.TempDir(), Layout: filepath.Join(t.TempDir(), "layout"), Repos: map[string]string{}}
	umociImage(t, fx.Layout, "img", filesAMD64, filesLayers())
	umociImage(t, fx.Layout, "arm", filesARM64, []filesLayer{{
		tdir("etc", 0o755), tfile("etc/arch", 0o644, []byte("arm64\n")),
	}})
	layoutIndex(t, fx.Layout, "multi", map[string]v1.Platform{"img": filesAMD64, "arm": filesARM64}, "img", "arm")
	fx.Want = snapshot(t, umociUnpack(t, fx.Layout, "img"))

	r := startRegistry(t, fx.Root)
	src := func(tag string) string { return "oci:" + fx.Layout + ":" + tag }
	push := func(repo, how string, args ...string) {
		skopeoCopy(t, args...)
		fx.Repos[repo] = how
	}
	push("files/docker", "docker schema2, gzip", "--format", "v2s2", src("img"), r.ref("files/docker", "v1"))
	push("files/oci", "OCI, gzip", "--format", "oci", src("img"), r.ref("files/oci", "v1"))
	// skopeo 1.9 recompresses into an OCI layout (--dest-compress), then
	// copies the zstd layers as they are.
	zstdLayout := filepath.Join(t.TempDir(), "zstd")
	skopeoCopy(t, "--dest-compress", "--dest-compress-format", "zstd", src("img"), "oci:"+zstdLayout+":img")
	push("files/zstd", "OCI, zstd", "--format", "oci", "oci:"+zstdLayout+":img", r.ref("files/zstd", "v1"))
	push("files/schema1", "docker schema1", "--format", "v2s1", src("img"), r.ref("files/schema1", "v1"))
	skopeoCopy(t, "--multi-arch", "all", "--format", "oci", src("multi"), r.ref("files/multi", "v1"))
	// The zstd push really is zstd: its layers say so.
	if m := r.mustGetManifest("files/zstd", "v1"); !bytes.Contains(m.Body, []byte(v1.MediaTypeImageLayerZstd)) {
		t.Fatalf("skopeo pushed files/zstd without zstd layers:\n%s", m.Body)
	}
	r.stop()
	return fx
}

// storageState lists every regular file under root with its size and
// mtime, to check that the mount wrote nothing.
func storageState(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// manifestDigest returns the digest the tag of repo points at, through
// the mount.
func manifestDigest(t *testing.T, m *mount, repo, tag string) string {
	t.Helper()
	return sha(readFile(t, m.path(repo, "_manifests", tag)))
}

// TestFilesMatchUmoci compares _files/v1/ of every push of the fixture,
// and its _files/sha256:<digest>/, with umoci's unpack of the same image:
// paths, types, modes, owners, sizes, symlink targets, link counts, device
// numbers, mtimes and the hash of every file. An index shows a directory
// per platform. _files/ lists the tags and revisions; the repository's
// listing does not show _files. Nothing is written to storage, and every
// change below _files/ is refused.
func TestFilesMatchUmoci(t *testing.T) {
	fx := newFilesFixture(t)
	before := storageState(t, fx.Root)
	index := t.TempDir()
	m := startMount(t, "filesystem", mountOpts{Root: fx.Root, Extra: []string{"--index-dir", index}})

	for repo, how := range fx.Repos {
		t.Run(strings.ReplaceAll(repo, "/", "_"), func(t *testing.T) {
			got := listDir(t, m.path(repo, "_files"))
			if len(got) != 2 || !strings.HasPrefix(got[0], "sha256:") || got[1] != "v1" {
				t.Fatalf("%s/_files lists %v, want the revision and the tag", repo, got)
			}
			dgst := got[0]
			// A schema1 manifest is served signed, and its revision is
			// the digest of its payload.
			if d := manifestDigest(t, m, repo, "v1"); d != dgst && repo != "files/schema1" {
				t.Errorf("%s/_files lists revision %s, the tag points at %s", repo, dgst, d)
			}
			t.Logf("%s: %s", repo, how)
			sameTree(t, fx.Want, snapshot(t, m.path(repo, "_files", "v1")))
			sameTree(t, fx.Want, snapshot(t, m.path(repo, "_files", dgst)))
		})
	}

	t.Run("index", func(t *testing.T) {
		if got := listDir(t, m.path("files/multi/_files/v1")); !slices.Equal(got, []string{"linux-amd64", "linux-arm64-v8"}) {
			t.Fatalf("the index's _files/v1 lists %v, want a directory per platform", got)
		}
		sameTree(t, fx.Want, snapshot(t, m.path("files/multi/_files/v1/linux-amd64")))
		if got := string(readFile(t, m.path("files/multi/_files/v1/linux-arm64-v8/etc/arch"))); got != "arm64\n" {
			t.Errorf("linux-arm64-v8/etc/arch reads %q", got)
		}
	})

	t.Run("tools", func(t *testing.T) {
		img := m.path("files/oci/_files/v1")
		unpacked := umociUnpack(t, fx.Layout, "img")
		// diff -r leaves out dev/: it would open the fifo.
		sh(t, fmt.Sprintf("diff -r --no-dereference -x dev %q %q", unpacked, img))
		cp := filepath.Join(t.TempDir(), "copy")
		sh(t, fmt.Sprintf("cp -a %q %q", img, cp))
		sameTree(t, fx.Want, snapshot(t, cp))
		if got := strings.Fields(sh(t, fmt.Sprintf("cd %q && grep -rl 'one inode' . | sort", img))); !slices.Equal(got, []string{"./hl/a", "./hl/b"}) {
			t.Errorf("grep -rl lists %v, want the two names of the hard link", got)
		}
		if got := strings.TrimSpace(sh(t, "readlink "+img+"/links/abs")); got != "/etc/hosts" {
			t.Errorf("readlink links/abs: %q", got)
		}
	})

	t.Run("tag moves", func(t *testing.T) {
		var idx v1.Index
		if err := json.Unmarshal(readFile(t, m.path("files/multi/_manifests/v1")), &idx); err != nil {
			t.Fatal(err)
		}
		var arm digest.Digest
		for _, c := range idx.Manifests {
			if c.Platform != nil && c.Platform.Architecture == "arm64" {
				arm = c.Digest
			}
		}
		if arm == "" {
			t.Fatalf("the index has no arm64 image: %+v", idx)
		}
		// A tag of its own, moved from the index to its arm64 image.
		sh(t, fmt.Sprintf("ln %q %q", m.path("files/multi/_manifests/v1"), m.path("files/multi/_manifests/moving")))
		if got := listDir(t, m.path("files/multi/_files/moving")); !slices.Equal(got, []string{"linux-amd64", "linux-arm64-v8"}) {
			t.Fatalf("_files/moving lists %v before the move", got)
		}
		inode := func() string { return strings.TrimSpace(sh(t, "stat -c %i "+m.path("files/multi/_files/moving"))) }
		before := inode()
		sh(t, fmt.Sprintf("ln -f %q %q", m.path("files/multi/_manifests", arm.String()), m.path("files/multi/_manifests/moving")))
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err := os.ReadFile(m.path("files/multi/_files/moving/etc/arch"))
			if err == nil && string(b) == "arm64\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("_files/moving does not show the image the tag moved to: %q %v", b, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if inode() == before {
			t.Errorf("_files/moving kept its inode %s when its tag moved to another image", before)
		}
	})

	t.Run("hidden from listings", func(t *testing.T) {
		if got := listDir(t, m.path("files/oci")); slices.Contains(got, "_files") {
			t.Errorf("the repository lists %v: _files must be reached by name only", got)
		}
	})

	t.Run("read-only", func(t *testing.T) {
		img := m.path("files/oci/_files/v1")
		for _, cmd := range []string{
			"touch " + img + "/etc/new",
			"echo x >> " + img + "/etc/passwd",
			"echo x > " + img + "/etc/passwd",
			"rm " + img + "/etc/passwd",
			"rm -r " + img + "/opaque",
			"mkdir " + img + "/newdir",
			"ln -s x " + img + "/newlink",
			"ln " + img + "/etc/passwd " + img + "/etc/passwd2",
			"mv " + img + "/etc/passwd " + img + "/etc/passwd3",
			"chmod 600 " + img + "/etc/passwd",
			"touch " + img + "/etc/passwd",
			"truncate -s 0 " + img + "/etc/passwd",
			"mkdir " + m.path("files/oci/_files/new"),
			"rmdir " + img + "/gonedir-not-there " + img + "/opaque/sub 2>&1 || false",
		} {
			out, err := shErr(t, cmd)
			if err == nil {
				t.Errorf("%s succeeded", cmd)
				continue
			}
			if !strings.Contains(out, "Operation not permitted") && !strings.Contains(out, "Read-only file system") &&
				!strings.Contains(out, "No such file or directory") {
				t.Errorf("%s: %s, want EPERM or EROFS", cmd, out)
			}
		}
		sameTree(t, fx.Want, snapshot(t, img))
	})

	m.stop()
	// The tag moves changed storage; nothing else may have.
	if err := os.RemoveAll(filepath.Join(fx.Root, "docker/registry/v2/repositories/files/multi/_manifests/tags/moving")); err != nil {
		t.Fatal(err)
	}
	if after := storageState(t, fx.Root); after != before {
		t.Errorf("the storage changed under a mount that only read _files/")
	}
	if ents, err := os.ReadDir(index); err != nil || len(ents) == 0 {
		t.Errorf("the index directory %s holds %d entries (%v): no index was kept", index, len(ents), err)
	}
}

// bigExpected is the large file's content.
var bigExpected = sync.OnceValue(func() []byte { return seededBytes(17, filesBigSize) })

// checkRandomReads reads the large file of the image at dir at seeded
// random offsets and lengths, each with its own pread, and checks every
// byte.
func checkRandomReads(t *testing.T, dir string, seed uint64) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "data", "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := bigExpected()
	rng := rand.New(rand.NewPCG(seed, 1))
	buf := make([]byte, 256<<10)
	for i := 0; i < 40; i++ {
		off := rng.Int64N(filesBigSize)
		n := 1 + rng.IntN(len(buf))
		if i%10 == 0 {
			off = filesBigSize - int64(n)/2 // across the end
		}
		got, err := f.ReadAt(buf[:n], off)
		end := min(off+int64(n), filesBigSize)
		if err != nil && !(errors.Is(err, io.EOF) && off+int64(n) > filesBigSize) {
			t.Fatalf("pread %d bytes at %d: %v", n, off, err)
		}
		if int64(got) != end-off || !bytes.Equal(buf[:got], want[off:end]) {
			t.Fatalf("pread %d bytes at %d: %d bytes that differ from the file's", n, off, got)
		}
	}
}

// TestFilesIndexReused reads the large file of the fixture at random
// offsets through a fresh mount that finds the layer indexes built by an
// earlier one, for gzip, zstd and schema1 pushes; then through one whose
// index files were damaged, which rebuilds them and reads the same bytes.
func TestFilesIndexReused(t *testing.T) {
	fx := newFilesFixture(t)
	index := t.TempDir()
	repos := []string{"files/oci", "files/docker", "files/zstd", "files/schema1"}
	m := startMount(t, "filesystem", mountOpts{Root: fx.Root, Extra: []string{"--index-dir", index}})
	for _, repo := range repos {
		if got := hashFile(t, m.path(repo, "_files/v1/data/big.bin")); got != fx.Want["data/big.bin"].Hash {
			t.Fatalf("%s: data/big.bin hashes to %s, umoci's to %s", repo, got, fx.Want["data/big.bin"].Hash)
		}
	}
	m.stop()
	files := indexFiles(t, index)
	if len(files) == 0 {
		t.Fatalf("no index file in %s after reading every image", index)
	}

	m.start()
	for i, repo := range repos {
		checkRandomReads(t, m.path(repo, "_files/v1"), uint64(i))
	}
	m.stop()

	// Damage every index file: a flipped byte in each, one cut short.
	for i, p := range indexFiles(t, index) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			continue
		}
		if i == 0 {
			b = b[:len(b)/2]
		} else {
			b[len(b)/2] ^= 0x55
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.start()
	for i, repo := range repos {
		checkRandomReads(t, m.path(repo, "_files/v1"), uint64(10+i))
	}
	sameTree(t, fx.Want, snapshot(t, m.path("files/oci/_files/v1")))
}

// indexFiles lists the regular files below dir.
func indexFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFilesBrokenImages: a layer missing from the repository, a layer
// blob cut short (with and without an index built before), and a layer of
// a media type regfs does not read each make the image fail with an errno
// (EIO, EIO, ENOTSUP) and a line in .regfs/errors that names the layer,
// and never give a wrong byte.
func TestFilesBrokenImages(t *testing.T) {
	fx := newFilesFixture(t)
	index := t.TempDir()
	m := startMount(t, "filesystem", mountOpts{Root: fx.Root, Extra: []string{"--index-dir", index}})
	// Build the index of the zstd image while its blobs are whole.
	if got := hashFile(t, m.path("files/zstd/_files/v1/data/big.bin")); got != fx.Want["data/big.bin"].Hash {
		t.Fatalf("files/zstd: data/big.bin hashes to %s before any damage", got)
	}
	layersOf := func(repo string) []v1.Descriptor {
		var man v1.Manifest
		if err := json.Unmarshal(readFile(t, m.path(repo, "_manifests", "v1")), &man); err != nil {
			t.Fatal(err)
		}
		return man.Layers
	}
	ociLayers, zstdLayers := layersOf("files/oci"), layersOf("files/zstd")

	// An image whose first layer has a media type nobody reads.
	var weird v1.Manifest
	if err := json.Unmarshal(readFile(t, m.path("files/oci", "_manifests", "v1")), &weird); err != nil {
		t.Fatal(err)
	}
	weird.Layers[0].MediaType = "application/vnd.example.layer.v1.squashfs"
	cpManifest(t, m, "files/oci", "weird", mustJSON(t, weird))
	m.stop()

	v2 := filepath.Join(fx.Root, "docker/registry/v2")
	// files/oci loses the link of its second layer.
	missing := ociLayers[1].Digest
	if err := os.RemoveAll(filepath.Join(v2, "repositories/files/oci/_layers/sha256", missing.Encoded())); err != nil {
		t.Fatal(err)
	}
	// files/zstd's big layer is cut to half.
	big := zstdLayers[0]
	data := filepath.Join(v2, "blobs/sha256", big.Digest.Encoded()[:2], big.Digest.Encoded(), "data")
	if err := os.Truncate(data, big.Size/2); err != nil {
		t.Fatal(err)
	}

	m.start()
	errsWant := func(what string, reasons ...string) {
		t.Helper()
		errs := string(readFile(t, m.path(".regfs/errors")))
		for _, r := range reasons {
			if !strings.Contains(errs, r) {
				t.Errorf("%s: .regfs/errors does not say %q:\n%s", what, r, errs)
			}
		}
	}
	failsWith := func(cmd, errno string) string {
		t.Helper()
		out, err := shErr(t, cmd)
		if err == nil || !strings.Contains(out, errno) {
			t.Errorf("%s: %v %s, want %q", cmd, err, out, errno)
		}
		return out
	}

	failsWith("ls "+m.path("files/oci/_files/v1/"), "Input/output error")
	errsWant("missing layer", "files/oci/_files/v1", missing.String(), "not in storage")
	// The same layers through a repository that has them all.
	sameTree(t, fx.Want, snapshot(t, m.path("files/docker/_files/v1")))
	// A failure is not kept: once the layer is linked again, the image
	// shows.
	sh(t, fmt.Sprintf("ln %q %q", m.path("files/docker/_layers", missing.String()), m.path("files/oci/_layers/")))
	sameTree(t, fx.Want, snapshot(t, m.path("files/oci/_files/v1")))

	failsWith("ls "+m.path("files/oci/_files/weird/"), "Operation not supported")
	errsWant("unknown media type", "files/oci/_files/weird", "application/vnd.example.layer.v1.squashfs")

	// With the index built before the damage, the listing works and the
	// read fails where the blob ends: what it gave is the file's start.
	out, err := exec.Command("cat", m.path("files/zstd/_files/v1/data/big.bin")).Output()
	if err == nil {
		t.Errorf("cat of a file in a truncated layer succeeded")
	}
	if !bytes.HasPrefix(bigExpected(), out) {
		t.Errorf("cat of a file in a truncated layer gave %d bytes that are not the file's", len(out))
	}
	errsWant("truncated layer, indexed", big.Digest.String())
	// One failed cat is one entry, however many reads the kernel retried.
	if n := strings.Count(string(readFile(t, m.path(".regfs/errors"))), "files/zstd/_files/v1/data/"); n != 1 {
		t.Errorf(".regfs/errors has %d entries for one failed cat, want 1", n)
	}
	m.stop()

	// Without an index, the image fails as a whole.
	m.args = slices.Clone(m.args)
	for i, a := range m.args {
		if a == index {
			m.args[i] = t.TempDir()
		}
	}
	m.start()
	failsWith("ls "+m.path("files/zstd/_files/v1/"), "Input/output error")
	errsWant("truncated layer", "files/zstd/_files/v1", big.Digest.String())
}
