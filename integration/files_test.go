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

// randomBytes returns n seeded random bytes (incompressible).
func randomBytes(seed uint64, n int) []byte {
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
	big := randomBytes(17, filesBigSize)
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
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
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
