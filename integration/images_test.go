package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/regfs/regfs/internal/testsupport"
)

// Images are built offline and by hand in Go (no Docker engine, no network):
// every byte is known to the test, so what the registry or the mount serves
// can be compared with what was built. They are written as an OCI image
// layout that skopeo reads (oci:DIR:tag) and converts to the docker kinds.

// Docker media types, which image-spec does not define.
const (
	mtDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerConfig       = "application/vnd.docker.container.image.v1+json"
	mtDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mtSchema1Signed      = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// blob is content and its descriptor.
type blob struct {
	Desc v1.Descriptor
	Data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{
		Desc: v1.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))},
		Data: data,
	}
}

// testImage is one single-platform image in OCI form.
type testImage struct {
	Platform v1.Platform
	Config   blob
	Layers   []blob // gzip-compressed tars
	Manifest blob   // OCI image manifest
}

// layerSpec describes one layer: a single file of Size seeded random bytes.
type layerSpec struct {
	Seed uint64
	Size int
}

// newTestImage builds an image whose layers each hold one file of random
// bytes (seeded, so equal specs give byte-identical layers shared across
// images). Random content does not compress, so a layer's blob is about as
// large as its file.
func newTestImage(t *testing.T, platform v1.Platform, layers ...layerSpec) testImage {
	t.Helper()
	img := testImage{Platform: platform}
	cfg := v1.Image{
		Created:  ptr(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)),
		Platform: platform,
		Config:   v1.ImageConfig{Cmd: []string{"/bin/true"}},
		RootFS:   v1.RootFS{Type: "layers"},
	}
	for i, ls := range layers {
		tarball, gz := makeLayer(t, fmt.Sprintf("layer%d-%d", i, ls.Seed), ls)
		img.Layers = append(img.Layers, newBlob(v1.MediaTypeImageLayerGzip, gz))
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(tarball))
		cfg.History = append(cfg.History, v1.History{
			Created:   cfg.Created,
			CreatedBy: fmt.Sprintf("regfs-integration layer %d", i),
		})
	}
	img.Config = newBlob(v1.MediaTypeImageConfig, mustJSON(t, cfg))
	img.Manifest = newBlob(v1.MediaTypeImageManifest, mustJSON(t, v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    img.Config.Desc,
		Layers:    descs(img.Layers),
	}))
	return img
}

// makeLayer returns a tar holding one file of seeded random bytes, and its
// gzip compression (deterministic: no timestamps in the gzip header).
func makeLayer(t *testing.T, name string, ls layerSpec) (tarball, gz []byte) {
	t.Helper()
	var seed [32]byte
	seed[0], seed[1] = byte(ls.Seed), byte(ls.Seed>>8)
	content := make([]byte, ls.Size)
	_, _ = rand.NewChaCha8(seed).Read(content)
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gb bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gb, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(tb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return tb.Bytes(), gb.Bytes()
}

// blobs returns the config and layers, the blobs a manifest references.
func (img testImage) blobs() []blob {
	return append([]blob{img.Config}, img.Layers...)
}

// dockerManifest returns the same image as a docker schema2 manifest over
// the same blob bytes, with docker media types.
func (img testImage) dockerManifest(t *testing.T) blob {
	t.Helper()
	type desc struct {
		MediaType string        `json:"mediaType"`
		Size      int64         `json:"size"`
		Digest    digest.Digest `json:"digest"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: mtDockerManifest,
		Config: desc{mtDockerConfig, img.Config.Desc.Size, img.Config.Desc.Digest}}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, desc{mtDockerLayer, l.Desc.Size, l.Desc.Digest})
	}
	return newBlob(mtDockerManifest, mustJSON(t, m))
}

// schema1Manifest returns the image as a docker schema1 manifest for
// repo:tag, signed with key (libtrust JWS, as docker 1.x clients pushed
// them), and its canonical digest (over the unsigned payload, as the
// registry computes it).
func (img testImage) schema1Manifest(t *testing.T, key libtrust.PrivateKey, repo, tag string) ([]byte, digest.Digest) {
	t.Helper()
	type fsLayer struct {
		BlobSum digest.Digest `json:"blobSum"`
	}
	type history struct {
		V1Compatibility string `json:"v1Compatibility"`
	}
	m := struct {
		SchemaVersion int       `json:"schemaVersion"`
		Name          string    `json:"name"`
		Tag           string    `json:"tag"`
		Architecture  string    `json:"architecture"`
		FSLayers      []fsLayer `json:"fsLayers"`
		History       []history `json:"history"`
	}{SchemaVersion: 1, Name: repo, Tag: tag, Architecture: img.Platform.Architecture}
	// schema1 lists layers newest first; each history entry is a v1 image
	// whose parent is the entry below it.
	parent := ""
	var hs []history
	for i, l := range img.Layers {
		id := sha256.Sum256([]byte(parent + l.Desc.Digest.String()))
		v1c := map[string]any{
			"id":               hex.EncodeToString(id[:]),
			"created":          "2024-01-02T03:04:05Z",
			"container_config": map[string]any{"Cmd": []string{fmt.Sprintf("regfs-integration layer %d", i)}},
		}
		if parent != "" {
			v1c["parent"] = parent
		}
		if i == len(img.Layers)-1 {
			v1c["architecture"] = img.Platform.Architecture
			v1c["os"] = img.Platform.OS
			v1c["config"] = map[string]any{"Cmd": []string{"/bin/true"}}
		}
		parent = hex.EncodeToString(id[:])
		hs = append([]history{{string(mustJSON(t, v1c))}}, hs...)
		m.FSLayers = append([]fsLayer{{l.Desc.Digest}}, m.FSLayers...)
	}
	m.History = hs
	payload, err := json.MarshalIndent(m, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	return testsupport.SignSchema1(t, payload, key), digest.FromBytes(payload)
}

// schema1Payload verifies a signed schema1 manifest's JWS signatures and
// returns its payload (the canonical bytes the digest is computed over) and
// the IDs of the keys that signed it.
func schema1Payload(b []byte) ([]byte, []string, error) {
	return testsupport.VerifySchema1(b)
}

// newIndex returns an OCI index over imgs, each with its platform.
func newIndex(t *testing.T, imgs ...testImage) blob {
	t.Helper()
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex}
	for _, img := range imgs {
		d := img.Manifest.Desc
		d.Platform = ptr(img.Platform)
		idx.Manifests = append(idx.Manifests, d)
	}
	return newBlob(v1.MediaTypeImageIndex, mustJSON(t, idx))
}

// ociLayout is an OCI image layout directory being written.
type ociLayout struct {
	t     *testing.T
	Dir   string
	index v1.Index
}

// newOCILayout creates an empty OCI image layout in a new temp dir.
func newOCILayout(t *testing.T) *ociLayout {
	t.Helper()
	l := &ociLayout{t: t, Dir: t.TempDir(),
		index: v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex}}
	l.writeJSON(v1.ImageLayoutFile, v1.ImageLayout{Version: v1.ImageLayoutVersion})
	l.writeJSON("index.json", l.index)
	return l
}

func (l *ociLayout) writeJSON(name string, v any) {
	l.t.Helper()
	if err := os.WriteFile(filepath.Join(l.Dir, name), mustJSON(l.t, v), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// putBlob writes b into blobs/sha256/.
func (l *ociLayout) putBlob(b blob) {
	l.t.Helper()
	dir := filepath.Join(l.Dir, "blobs", b.Desc.Digest.Algorithm().String())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, b.Desc.Digest.Encoded()), b.Data, 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// tag adds an index.json entry naming top as tag.
func (l *ociLayout) tag(tag string, top blob) {
	l.t.Helper()
	d := top.Desc
	d.Annotations = map[string]string{v1.AnnotationRefName: tag}
	l.index.Manifests = append(l.index.Manifests, d)
	l.writeJSON("index.json", l.index)
}

// addImage writes img's blobs and manifest and tags it.
func (l *ociLayout) addImage(tag string, img testImage) {
	l.t.Helper()
	for _, b := range img.blobs() {
		l.putBlob(b)
	}
	l.putBlob(img.Manifest)
	l.tag(tag, img.Manifest)
}

// addIndex writes every image, an index over them, and tags the index.
func (l *ociLayout) addIndex(tag string, imgs ...testImage) blob {
	l.t.Helper()
	for _, img := range imgs {
		for _, b := range img.blobs() {
			l.putBlob(b)
		}
		l.putBlob(img.Manifest)
	}
	idx := newIndex(l.t, imgs...)
	l.putBlob(idx)
	l.tag(tag, idx)
	return idx
}

// readLayout returns the descriptor tagged tag in the OCI layout at dir.
func readLayout(t *testing.T, dir, tag string) v1.Descriptor {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	for _, d := range idx.Manifests {
		if d.Annotations[v1.AnnotationRefName] == tag {
			return d
		}
	}
	t.Fatalf("OCI layout %s has no tag %q: %s", dir, tag, b)
	return v1.Descriptor{}
}

// layoutBlob reads a blob of the OCI layout at dir and checks that it hashes
// to its name.
func layoutBlob(t *testing.T, dir string, d digest.Digest) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(b); got != d {
		t.Fatalf("layout blob %s hashes to %s", d, got)
	}
	return b
}

// skopeo runs `skopeo copy` with args and plain HTTP to the test registry;
// --insecure-policy so the machine's /etc/containers/policy.json does not
// matter.
func skopeoCopy(t *testing.T, args ...string) {
	t.Helper()
	requireTools(t, "skopeo")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	all := append([]string{"--insecure-policy", "copy", "--quiet",
		"--src-tls-verify=false", "--dest-tls-verify=false"}, args...)
	cmd := exec.CommandContext(ctx, "skopeo", all...)
	// skopeo keeps per-user state (auth, blob info cache) under HOME and
	// XDG dirs: a temp home keeps runs apart and leaves nothing behind.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_RUNTIME_DIR="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %v: %v\n%s", all, err, out)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func descs(bs []blob) []v1.Descriptor {
	var ds []v1.Descriptor
	for _, b := range bs {
		ds = append(ds, b.Desc)
	}
	return ds
}

func ptr[T any](v T) *T { return &v }
