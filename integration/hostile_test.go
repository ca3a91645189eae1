package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/libtrust"
	"github.com/regfs/regfs/internal/testsupport"
)

// hostileFixture is the storage the hostile requests run against: an image
// in app (config, two layers, a manifest tagged v1, a schema1 manifest
// tagged s1ok), a layer only in other, and an upload in app that holds the
// first half of its blob.
type hostileFixture struct {
	m             *mount
	config, layer string
	layerBytes    []byte
	mf            []byte
	mfd           string
	otherLayer    string
	upload        string // name in app/_uploads
	uploadSize    int64
	key           libtrust.PrivateKey
}

func newHostileFixture(t *testing.T, m *mount) *hostileFixture {
	t.Helper()
	fx := &hostileFixture{m: m}
	fx.mf = pushImage(t, m, "app", "v1", 2)
	fx.mfd = sha(fx.mf)
	var doc struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(fx.mf, &doc); err != nil {
		t.Fatal(err)
	}
	fx.config, fx.layer = doc.Config.Digest, doc.Layers[0].Digest
	fx.layerBytes = readFile(t, m.path("app/_layers", fx.layer))
	fx.otherLayer = pushLayer(t, m, "other", []byte("a layer only in other"))

	// A half-written upload: the close fails (digest mismatch) and the
	// upload stays for the rest.
	blob := bytes.Repeat([]byte("half of an upload "), 200)
	fx.upload = sha(blob)
	fx.uploadSize = int64(len(blob) / 2)
	err := writeClose(m.path("app/_uploads", fx.upload), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, blob[:fx.uploadSize])
	if errnoOf(err) != syscall.EBADMSG {
		t.Fatalf("half upload: %v, want EBADMSG", err)
	}

	// A correctly signed schema1 manifest is accepted: the tampered one
	// below is rejected for its signature, not for anything else.
	k, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	fx.key = k
	if err := writeClose(m.path("app/_manifests/s1ok"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fx.schema1(t, "app", "s1ok")); err != nil {
		t.Fatalf("push of a signed schema1 manifest: %v", err)
	}
	return fx
}

// schema1 returns a schema1 manifest over the fixture's layer, signed
// with libtrust.
func (fx *hostileFixture) schema1(t *testing.T, name, tag string) []byte {
	t.Helper()
	payload, err := json.MarshalIndent(map[string]any{
		"schemaVersion": 1, "name": name, "tag": tag, "architecture": "amd64",
		"fsLayers": []map[string]string{{"blobSum": fx.layer}},
		"history":  []map[string]string{{"v1Compatibility": `{"id":"0123456789abcdef","created":"2015-01-02T03:04:05Z"}`}},
	}, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	return testsupport.SignSchema1(t, payload, fx.key)
}

// tamperSignature changes one character of the first JWS signature value,
// keeping the document valid JSON and base64url.
func tamperSignature(t *testing.T, signed []byte) []byte {
	t.Helper()
	key := []byte(`"signature": "`)
	i := bytes.Index(signed, key)
	if i < 0 {
		t.Fatalf("no signature in %s", signed)
	}
	out := bytes.Clone(signed)
	p := i + len(key) + 10
	if out[p] == 'A' {
		out[p] = 'B'
	} else {
		out[p] = 'A'
	}
	return out
}

// hostileCase is one hostile request and the errno it must get.
type hostileCase struct {
	name string
	// write says the request would change storage if it were accepted;
	// on a read-only mount it must get EROFS.
	write bool
	want  syscall.Errno
	op    func(t *testing.T, fx *hostileFixture) error
}

const (
	oCreate = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	hex64   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func mkdirOp(rel string) func(*testing.T, *hostileFixture) error {
	return func(_ *testing.T, fx *hostileFixture) error { return syscall.Mkdir(fx.m.path(rel), 0o755) }
}

func createOp(rel string, content []byte) func(*testing.T, *hostileFixture) error {
	return func(_ *testing.T, fx *hostileFixture) error { return writeClose(fx.m.path(rel), oCreate, content) }
}

func openOp(rel func(fx *hostileFixture) string, flags int) func(*testing.T, *hostileFixture) error {
	return func(_ *testing.T, fx *hostileFixture) error {
		fd, err := syscall.Open(fx.m.path(rel(fx)), flags|syscall.O_CLOEXEC, 0o644)
		if err == nil {
			syscall.Close(fd)
		}
		return err
	}
}

func (fx *hostileFixture) layerPath() string    { return "app/_layers/" + fx.layer }
func (fx *hostileFixture) revisionPath() string { return "app/_manifests/" + fx.mfd }
func (fx *hostileFixture) uploadPath() string   { return "app/_uploads/" + fx.upload }

func layerRel(fx *hostileFixture) string    { return fx.layerPath() }
func revisionRel(fx *hostileFixture) string { return fx.revisionPath() }
func uploadRel(fx *hostileFixture) string   { return fx.uploadPath() }

// manifestOp pushes the manifest mk builds to app/_manifests/<name>.
func manifestOp(name string, mk func(t *testing.T, fx *hostileFixture) []byte) func(*testing.T, *hostileFixture) error {
	return func(t *testing.T, fx *hostileFixture) error {
		return writeClose(fx.m.path("app/_manifests", name), oCreate, mk(t, fx))
	}
}

// ociManifest is an OCI image manifest over the given config and layers.
func ociManifest(config string, layers ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":10},"layers":[`, config)
	for i, l := range layers {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":10}`, l)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// manyMissingLayers is the number of missing layers of the largest
// rejected manifest.
const manyMissingLayers = 10000

func hostileCases() []hostileCase {
	long := strings.Repeat("a", 256)
	return []hostileCase{
		// Repository names.
		{"MkdirUpperCase", true, syscall.EINVAL, mkdirOp("Upper")},
		{"MkdirDoubleDotInside", true, syscall.EINVAL, mkdirOp("a..b")},
		{"MkdirThreeDots", true, syscall.EINVAL, mkdirOp("...")},
		{"MkdirLeadingDot", true, syscall.EINVAL, mkdirOp(".hidden")},
		{"MkdirLeadingDash", true, syscall.EINVAL, mkdirOp("-x")},
		{"MkdirReservedName", true, syscall.EINVAL, mkdirOp("_x")},
		{"MkdirSpace", true, syscall.EINVAL, mkdirOp("a b")},
		{"MkdirColon", true, syscall.EINVAL, mkdirOp("a:b")},
		{"MkdirNonUTF8", true, syscall.EINVAL, mkdirOp("\xff\xfe")},
		// The kernel resolves "." and ".." to directories that exist before
		// regfs (or the read-only check) sees anything.
		{"MkdirDotDot", false, syscall.EEXIST, mkdirOp("app/..")},
		{"MkdirDot", false, syscall.EEXIST, mkdirOp("app/.")},
		{"MkdirComponentTooLong", true, syscall.EINVAL, mkdirOp(long)}, // FUSE passes names up to 1024 bytes
		{"MkdirNameOver255", true, syscall.EINVAL, mkdirOp("app/" + strings.Repeat("b", 255))},
		{"MkdirInLayers", true, syscall.EPERM, mkdirOp("app/_layers/x")},
		{"MkdirInManifests", true, syscall.EPERM, mkdirOp("app/_manifests/x")},
		{"CreateFileInNamespace", true, syscall.EPERM, createOp("app/file", []byte("x"))},
		{"CreateFileAtRoot", true, syscall.EPERM, createOp("file", []byte("x"))},
		{"CreateInLayers", true, syscall.EPERM, createOp("app/_layers/sha256:"+hex64, []byte("x"))},

		// Upload names.
		{"UploadNotDigest", true, syscall.EINVAL, createOp("app/_uploads/layer.tgz", []byte("x"))},
		{"UploadShortDigest", true, syscall.EINVAL, createOp("app/_uploads/sha256:abc", []byte("x"))},
		{"UploadLongDigest", true, syscall.EINVAL, createOp("app/_uploads/sha256:"+hex64+"0", []byte("x"))},
		{"UploadSHA512", true, syscall.EINVAL, createOp("app/_uploads/sha512:"+hex64+hex64, []byte("x"))},
		{"UploadMD5", true, syscall.EINVAL, createOp("app/_uploads/md5:0123456789abcdef0123456789abcdef", []byte("x"))},
		{"UploadUpperHex", true, syscall.EINVAL, createOp("app/_uploads/sha256:"+strings.ToUpper(hex64), []byte("x"))},
		{"UploadNoAlgorithm", true, syscall.EINVAL, createOp("app/_uploads/"+hex64, []byte("x"))},
		{"UploadDotDotDigest", true, syscall.EINVAL, createOp("app/_uploads/sha256:..", []byte("x"))},
		{"UploadUUIDName", true, syscall.EINVAL, createOp("app/_uploads/0b7e6a9c-3f1d-4c2e-9a55-6d3c1f2e8b40", []byte("x"))},

		// Writes at the wrong offset, truncation and reads of an upload.
		{"UploadWriteInTheMiddle", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return pwrite(fx.m.path(fx.uploadPath()), []byte("x"), 10)
		}},
		{"UploadWritePastTheEnd", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return pwrite(fx.m.path(fx.uploadPath()), []byte("x"), fx.uploadSize+100)
		}},
		{"UploadTruncateToMiddle", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Truncate(fx.m.path(fx.uploadPath()), 10)
		}},
		{"UploadRead", false, syscall.EACCES, openOp(uploadRel, os.O_RDONLY)},

		// Layers and revisions are immutable.
		{"LayerOpenRDWR", true, syscall.EPERM, openOp(layerRel, os.O_RDWR)},
		{"LayerOpenTrunc", true, syscall.EPERM, openOp(layerRel, os.O_WRONLY|os.O_TRUNC)},
		{"LayerOpenAppend", true, syscall.EPERM, openOp(layerRel, os.O_WRONLY|os.O_APPEND)},
		{"LayerTruncate", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Truncate(fx.m.path(fx.layerPath()), 0)
		}},
		{"RevisionOpenRDWR", true, syscall.EPERM, openOp(revisionRel, os.O_RDWR)},
		{"RevisionOpenTrunc", true, syscall.EPERM, openOp(revisionRel, os.O_WRONLY|os.O_TRUNC)},
		{"RevisionTruncate", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Truncate(fx.m.path(fx.revisionPath()), 1)
		}},
		{"TagOpenTruncNoWrite", true, 0, openOp(func(*hostileFixture) string { return "app/_manifests/v1" }, os.O_WRONLY|os.O_TRUNC)},
		{"ControlFileWrite", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return writeClose(fx.m.path(".regfs/stats"), os.O_WRONLY|os.O_TRUNC, []byte("{}"))
		}},
		{"ControlFileRemove", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Unlink(fx.m.path(".regfs/errors"))
		}},

		// Operations the tree has no meaning for.
		{"RenameLayer", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Rename(fx.m.path(fx.layerPath()), fx.m.path("app/_layers/sha256:"+hex64))
		}},
		{"RenameRepository", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Rename(fx.m.path("other"), fx.m.path("renamed"))
		}},
		// mv of a tag re-tags (TestHabits/MvRetags); there and back
		// leaves storage as it was.
		{"RenameTag", true, 0, func(t *testing.T, fx *hostileFixture) error {
			if err := syscall.Rename(fx.m.path("app/_manifests/v1"), fx.m.path("app/_manifests/v9")); err != nil {
				return err
			}
			return syscall.Rename(fx.m.path("app/_manifests/v9"), fx.m.path("app/_manifests/v1"))
		}},
		{"RenameUploadToLayer", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Rename(fx.m.path(fx.uploadPath()), fx.m.path("app/_layers", fx.upload))
		}},
		{"ChmodLayer", true, 0, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Chmod(fx.m.path(fx.layerPath()), 0o777)
		}},
		{"ChmodRepository", true, 0, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Chmod(fx.m.path("app"), 0o700)
		}},
		{"ChownLayer", true, 0, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Chown(fx.m.path(fx.layerPath()), 1, 1)
		}},
		{"SetxattrLayer", true, syscall.EOPNOTSUPP, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Setxattr(fx.m.path(fx.layerPath()), "user.evil", []byte("1"), 0)
		}},
		{"SetxattrRepository", true, syscall.EOPNOTSUPP, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Setxattr(fx.m.path("app"), "user.evil", []byte("1"), 0)
		}},
		{"SymlinkInRepository", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Symlink("/etc/passwd", fx.m.path("app/evil"))
		}},
		{"SymlinkAsTag", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Symlink("../../../../../etc/passwd", fx.m.path("app/_manifests/evil"))
		}},
		{"SymlinkAsLayer", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Symlink("/etc/passwd", fx.m.path("app/_layers/sha256:"+hex64))
		}},
		{"RmdirLayers", true, syscall.ENOTEMPTY, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Rmdir(fx.m.path("app/_layers"))
		}},
		{"RmdirNonEmptyRepository", true, syscall.ENOTEMPTY, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Rmdir(fx.m.path("app"))
		}},

		// Hard links across kinds and repositories.
		{"LinkLayerAsRevision", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.layerPath()), fx.m.path("app/_manifests", fx.layer))
		}},
		{"LinkLayerAsTag", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.layerPath()), fx.m.path("app/_manifests/evil"))
		}},
		{"LinkRevisionAsLayer", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.revisionPath()), fx.m.path("app/_layers", fx.mfd))
		}},
		{"LinkTagAsLayer", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path("app/_manifests/v1"), fx.m.path("other/_layers", fx.mfd))
		}},
		{"LinkLayerUnderAnotherName", true, syscall.EINVAL, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.layerPath()), fx.m.path("other/_layers/sha256:"+hex64))
		}},
		{"LinkRevisionAcrossRepositories", true, syscall.EXDEV, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.revisionPath()), fx.m.path("other/_manifests/stolen"))
		}},
		{"LinkLayerIntoUploads", true, syscall.EPERM, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.layerPath()), fx.m.path("other/_uploads", fx.layer))
		}},
		{"LinkFromOutside", true, syscall.EXDEV, func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(writeFile(t, fx.layerBytes), fx.m.path("other/_layers", fx.layer))
		}},

		// Manifest and tag names.
		{"ManifestShortDigestName", true, syscall.EINVAL, createOp("app/_manifests/sha256:abc", []byte("{}"))},
		{"ManifestSHA512Name", true, syscall.EINVAL, createOp("app/_manifests/sha512:"+hex64+hex64, []byte("{}"))},
		{"TagLeadingDot", true, syscall.EINVAL, createOp("app/_manifests/.v1", []byte("{}"))},
		{"TagTooLong", true, syscall.EINVAL, createOp("app/_manifests/"+strings.Repeat("t", 129), []byte("{}"))},

		// Manifest contents.
		{"ManifestMalformed", true, syscall.EBADMSG, manifestOp("bad", func(*testing.T, *hostileFixture) []byte { return []byte("{bad json") })},
		{"ManifestTruncatedJSON", true, syscall.EBADMSG, manifestOp("bad", func(*testing.T, *hostileFixture) []byte { return []byte(`{"schemaVersion":2,`) })},
		{"ManifestEmptyObject", true, syscall.EBADMSG, manifestOp("bad", func(*testing.T, *hostileFixture) []byte { return []byte(`{}`) })},
		{"ManifestUnknownMediaType", true, syscall.EBADMSG, manifestOp("bad", func(_ *testing.T, fx *hostileFixture) []byte {
			return bytes.Replace(ociManifest(fx.config, fx.layer), []byte("vnd.oci.image.manifest.v1+json"), []byte("vnd.evil.manifest+json"), 1)
		})},
		{"ManifestOversized", true, syscall.EFBIG, manifestOp("big", func(_ *testing.T, fx *hostileFixture) []byte {
			m := ociManifest(fx.config, fx.layer)
			return append(m[:len(m)-1], append(bytes.Repeat([]byte(" "), 4<<20), '}')...)
		})},
		{"ManifestTenThousandMissingLayers", true, syscall.EBADMSG, manifestOp("many", func(_ *testing.T, fx *hostileFixture) []byte {
			layers := make([]string, manyMissingLayers)
			for i := range layers {
				layers[i] = sha([]byte(fmt.Sprintf("missing layer %d", i)))
			}
			return ociManifest(fx.config, layers...)
		})},
		{"ManifestForeignBlob", true, syscall.EBADMSG, manifestOp("foreign", func(_ *testing.T, fx *hostileFixture) []byte {
			return ociManifest(fx.config, fx.layer, fx.otherLayer)
		})},
		{"ManifestDigestEscapesRoot", true, syscall.EBADMSG, manifestOp("escape", func(_ *testing.T, fx *hostileFixture) []byte {
			return ociManifest(fx.config, "sha256:../../../../../../etc/passwd")
		})},
		{"ManifestDigestWrongLength", true, syscall.EBADMSG, manifestOp("short", func(_ *testing.T, fx *hostileFixture) []byte {
			return ociManifest(fx.config, "sha256:abc")
		})},
		{"ManifestDigestSHA512", true, syscall.EBADMSG, manifestOp("sha512", func(_ *testing.T, fx *hostileFixture) []byte {
			return ociManifest(fx.config, "sha512:"+hex64+hex64)
		})},
		{"ManifestByWrongDigest", true, syscall.EBADMSG, func(t *testing.T, fx *hostileFixture) error {
			return writeClose(fx.m.path("app/_manifests/sha256:"+hex64), oCreate, ociManifest(fx.config, fx.layer))
		}},
		{"ManifestIndexMissingChild", true, syscall.EBADMSG, manifestOp("index", func(_ *testing.T, fx *hostileFixture) []byte {
			return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":10}]}`, "sha256:"+hex64))
		})},
		{"Schema1TamperedSignature", true, syscall.EBADMSG, manifestOp("s1", func(t *testing.T, fx *hostileFixture) []byte {
			return tamperSignature(t, fx.schema1(t, "app", "s1"))
		})},
		{"Schema1Unsigned", true, syscall.EBADMSG, manifestOp("s1", func(t *testing.T, fx *hostileFixture) []byte {
			signed := fx.schema1(t, "app", "s1")
			i := bytes.Index(signed, []byte(`,`+"\n"+`   "signatures"`))
			if i < 0 {
				t.Fatalf("no signatures in %s", signed)
			}
			return append(bytes.Clone(signed[:i]), "\n}"...)
		})},
		{"Schema1OtherRepository", true, syscall.EBADMSG, manifestOp("s1", func(t *testing.T, fx *hostileFixture) []byte {
			return fx.schema1(t, "other", "s1")
		})},
		{"Schema1EmptyNameComponent", true, syscall.EBADMSG, manifestOp("s1", func(t *testing.T, fx *hostileFixture) []byte {
			return fx.schema1(t, "app//evil", "s1")
		})},
		{"Schema1HugeName", true, syscall.EBADMSG, manifestOp("s1", func(t *testing.T, fx *hostileFixture) []byte {
			return fx.schema1(t, strings.Repeat("n", 3<<20), "s1")
		})},
		{"Schema1WrongTag", true, syscall.EBADMSG, manifestOp("s1", func(t *testing.T, fx *hostileFixture) []byte {
			return fx.schema1(t, "app", "other-tag")
		})},
	}
}

// TestHostileInputs sends every hostile request through the real mount
// (real binary, filesystem driver) and checks the errno it gets and that
// the storage tree is byte for byte what it was.
func TestHostileInputs(t *testing.T) {
	m := startMount(t, "filesystem", mountOpts{})
	fx := newHostileFixture(t, m)
	cases := hostileCases()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := treeHash(t, m.Root)
			err := c.op(t, fx)
			if got := errnoOf(err); got != c.want {
				t.Errorf("%s: err = %v (errno %d), want %v (errno %d)", c.name, err, got, c.want, c.want)
			}
			if d := treeDiff(before, treeHash(t, m.Root)); d != "" {
				t.Errorf("%s changed storage:\n%s", c.name, d)
			}
		})
	}
	t.Logf("%d hostile requests", len(cases))
	checkAlive(t, m, fx)

	// The rejection of a manifest with 10,000 missing layers names them,
	// but .regfs/errors and the daemon's log stay bounded.
	errs := readFile(t, m.path(".regfs/errors"))
	if len(errs) > 256<<10 {
		t.Errorf(".regfs/errors is %d bytes after the hostile requests: not bounded", len(errs))
	}
	if !bytes.Contains(errs, []byte("app/_manifests/many")) || !bytes.Contains(errs, []byte(sha([]byte("missing layer 0")))) {
		t.Errorf(".regfs/errors does not name the rejected manifest and its first missing layer")
	}
	log := stoppedLog(t, m)
	for _, line := range strings.Split(log, "\n") {
		if len(line) > 64<<10 {
			t.Errorf("daemon log line of %d bytes: %.200s...", len(line), line)
		}
	}
}

// TestReadOnlyRefusesEverything runs every hostile write and every normal
// write on a --read-only mount: each gets EROFS and storage is unchanged.
func TestReadOnlyRefusesEverything(t *testing.T) {
	rw := startMount(t, "filesystem", mountOpts{})
	fx := newHostileFixture(t, rw)
	rw.stop()
	m := startMount(t, "filesystem", mountOpts{Root: rw.Root, Extra: []string{"--read-only"}})
	fx.m = m
	before := treeHash(t, m.Root)
	type op struct {
		name string
		run  func(t *testing.T, fx *hostileFixture) error
	}
	var ops []op
	for _, c := range hostileCases() {
		if c.write {
			ops = append(ops, op{"hostile/" + c.name, c.op})
		}
	}
	newBlob := []byte("a new layer")
	normal := []op{
		{"Upload", createOp("app/_uploads/"+sha(newBlob), newBlob)},
		{"UploadAppend", func(t *testing.T, fx *hostileFixture) error {
			return writeClose(fx.m.path(fx.uploadPath()), os.O_WRONLY|os.O_APPEND, []byte("more"))
		}},
		{"UploadCancel", func(t *testing.T, fx *hostileFixture) error { return syscall.Unlink(fx.m.path(fx.uploadPath())) }},
		{"UploadTruncateToZero", func(t *testing.T, fx *hostileFixture) error { return syscall.Truncate(fx.m.path(fx.uploadPath()), 0) }},
		{"ManifestPush", func(t *testing.T, fx *hostileFixture) error {
			return writeClose(fx.m.path("app/_manifests/v2"), oCreate, fx.mf)
		}},
		{"ManifestPushByDigest", func(t *testing.T, fx *hostileFixture) error {
			return writeClose(fx.m.path("app/_manifests", fx.mfd), oCreate, fx.mf)
		}},
		{"ManifestOverwriteTag", func(t *testing.T, fx *hostileFixture) error {
			return writeClose(fx.m.path("app/_manifests/v1"), oCreate, fx.mf)
		}},
		{"Tag", func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.revisionPath()), fx.m.path("app/_manifests/v3"))
		}},
		{"Untag", func(t *testing.T, fx *hostileFixture) error { return syscall.Unlink(fx.m.path("app/_manifests/v1")) }},
		{"DeleteRevision", func(t *testing.T, fx *hostileFixture) error { return syscall.Unlink(fx.m.path(fx.revisionPath())) }},
		{"MountLayer", func(t *testing.T, fx *hostileFixture) error {
			return syscall.Link(fx.m.path(fx.layerPath()), fx.m.path("other/_layers", fx.layer))
		}},
		{"UnlinkLayer", func(t *testing.T, fx *hostileFixture) error { return syscall.Unlink(fx.m.path(fx.layerPath())) }},
		{"Mkdir", mkdirOp("team")},
		{"MkdirNested", mkdirOp("app/sub")},
		{"RmdirRepository", func(t *testing.T, fx *hostileFixture) error { return syscall.Rmdir(fx.m.path("other")) }},
		{"Touch", func(t *testing.T, fx *hostileFixture) error {
			return syscall.UtimesNano(fx.m.path(fx.layerPath()), []syscall.Timespec{{Sec: 1}, {Sec: 1}})
		}},
	}
	for _, o := range normal {
		ops = append(ops, op{"normal/" + o.name, o.run})
	}
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			if err := o.run(t, fx); errnoOf(err) != syscall.EROFS {
				t.Errorf("%s on a read-only mount: %v, want EROFS", o.name, err)
			}
		})
	}
	if d := treeDiff(before, treeHash(t, m.Root)); d != "" {
		t.Errorf("storage changed under --read-only:\n%s", d)
	}
	t.Logf("%d writes refused on the read-only mount", len(ops))
	checkAlive(t, m, fx)
	stoppedLog(t, m)
}

// checkAlive checks that the daemon still serves the fixture.
func checkAlive(t *testing.T, m *mount, fx *hostileFixture) {
	t.Helper()
	if got := readFile(t, m.path("app/_manifests/v1")); !bytes.Equal(got, fx.mf) {
		t.Errorf("the tag reads differently after the hostile requests")
	}
	if got := readFile(t, m.path(fx.layerPath())); !bytes.Equal(got, fx.layerBytes) {
		t.Errorf("the layer reads differently after the hostile requests")
	}
}

// stoppedLog stops the daemon (so that its output is complete and no
// longer written) and returns its log; stop fails the test if the log
// reports a data race (the binary is built with -race) or a panic.
func stoppedLog(t *testing.T, m *mount) string {
	t.Helper()
	m.stop()
	return m.logText()
}

// retryEINTR runs a plain syscall again while it fails with EINTR, as Go's
// os package does for its calls (see writeClose for why they happen).
func retryEINTR(call func() error) error {
	for {
		if err := call(); err != syscall.EINTR {
			return err
		}
	}
}

// writeClose opens p with flags, writes b (if any) and closes it, with
// plain syscalls so the errno is exactly what the mount answered; it
// returns the first error.
//
// Open and write are retried on EINTR, as Go's os package does: the test
// process's goroutines get signals (the runtime's preemption), the kernel
// forwards them to regfs as FUSE interrupts, and regfs answers an
// interrupted request with EINTR.
func writeClose(p string, flags int, b []byte) error {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = syscall.Open(p, flags|syscall.O_CLOEXEC, 0o644)
		return err
	})
	if err != nil {
		return err
	}
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			syscall.Close(fd)
			return err
		}
		b = b[n:]
	}
	return syscall.Close(fd)
}

// pwrite writes b at off in the existing file p.
func pwrite(p string, b []byte, off int64) error {
	fd, err := syscall.Open(p, os.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, werr := syscall.Pwrite(fd, b, off)
	cerr := syscall.Close(fd)
	if werr != nil {
		return werr
	}
	return cerr
}

// errnoOf returns the errno in err: 0 for nil, EIO standing for any error
// that carries none (which the tests then report).
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// treeHash describes every file, directory and symlink below root: its
// type, mode and, for files, the sha256 of its content.
func treeHash(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			out[rel] = "dir " + info.Mode().String()
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "symlink " + target
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("file %s %d %s", info.Mode(), len(b), hex.EncodeToString(s[:]))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("hashing %s: %v", root, err)
	}
	return out
}

// treeDiff lists what differs between two treeHash results, "" if nothing.
func treeDiff(before, after map[string]string) string {
	var lines []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			lines = append(lines, "removed "+p)
		} else if a != b {
			lines = append(lines, fmt.Sprintf("changed %s: %s -> %s", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			lines = append(lines, "added "+p+" ("+a+")")
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
