package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/internal/testenv"
)

// registryBin is Debian's docker/distribution registry (2.8.2), the peer
// regfs must interoperate with on the same storage root.
const registryBin = "docker-registry"

// manifestAccept lists every manifest kind, so the registry never converts a
// stored manifest (it rewrites schema2 as schema1 for clients that do not
// accept schema2) and always serves what is stored.
var manifestAccept = []string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"application/vnd.docker.distribution.manifest.v1+json",
}

// requireTools stops the test when a peer tool is missing: CI installs them
// (.ci/run), so there the test fails; elsewhere it skips with a message that
// says what to install.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.SkipOrFail(t, "INTEROP TESTS NOT RUN: %s not installed (Debian packages docker-registry and skopeo; .ci/run installs them)", strings.Join(missing, ", "))
}

// registry is one running docker-registry process serving a storage root.
type registry struct {
	t    *testing.T
	Root string // storage.filesystem.rootdirectory
	Addr string // host:port on 127.0.0.1
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
	http *http.Client
}

// registryConfig is the registry's configuration for one test: its own file,
// so the system's /etc/docker/registry/config.yml never matters. No blob
// descriptor cache unless registryOptions asks for one (the registry must see
// what regfs changed at once: Debian's default config turns on
// "blobdescriptor: inmemory", which keeps answering for a blob after regfs
// unlinked it, see TestCotenancyRegistryCache), deletes enabled, no upload
// purging (scenario 4 relies on an abandoned upload staying), schema1
// accepted.
const registryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:%s
%s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: regfs-integration-fixed-secret
compatibility:
  schema1:
    enabled: true
`

// registryOptions tunes startRegistryWith.
type registryOptions struct {
	// BlobDescriptorCache turns on the registry's in-memory blob
	// descriptor cache, as Debian's /etc/docker/registry/config.yml does.
	BlobDescriptorCache bool
	// Storage replaces the filesystem driver's block of the storage
	// section (YAML indented by two spaces), e.g. an s3 block.
	Storage string
}

// blobDescriptorCache is the configuration text that turns the cache on.
const blobDescriptorCache = `
  cache:
    blobdescriptor: inmemory`

// startRegistry runs docker-registry on root at a free 127.0.0.1 port and
// waits until GET /v2/ answers 200. Cleanup stops it by pid.
func startRegistry(t *testing.T, root string) *registry {
	t.Helper()
	return startRegistryWith(t, root, registryOptions{})
}

// startRegistryWith is startRegistry with options.
func startRegistryWith(t *testing.T, root string, o registryOptions) *registry {
	t.Helper()
	requireTools(t, registryBin)
	var lastErr error
	// A free port can be taken between our probe and the registry's bind:
	// try a few ports before giving up.
	for attempt := 0; attempt < 3; attempt++ {
		r, err := tryStartRegistry(t, root, o)
		if err == nil {
			return r
		}
		lastErr = err
	}
	t.Fatalf("starting %s: %v", registryBin, lastErr)
	return nil
}

func tryStartRegistry(t *testing.T, root string, o registryOptions) (*registry, error) {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cache := ""
	if o.BlobDescriptorCache {
		cache = blobDescriptorCache
	}
	conf := filepath.Join(t.TempDir(), "config.yml")
	storage := "  filesystem:\n    rootdirectory: " + root
	if o.Storage != "" {
		storage = o.Storage
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, registryConfig, cache, storage, addr), 0o644); err != nil {
		return nil, err
	}
	r := &registry{
		t:    t,
		Root: root,
		Addr: addr,
		log:  &syncBuffer{},
		done: make(chan error, 1),
		http: &http.Client{Timeout: 30 * time.Second},
	}
	r.cmd = exec.Command(registryBin, "serve", conf)
	if o.Storage != "" {
		// distribution 2.8's s3 driver (aws-sdk-go v1) panics at start
		// when AWS_CA_BUNDLE is set ("unable to load custom CA bundle,
		// HTTPClient's transport unsupported type"); the test servers
		// speak plain HTTP and need no CA.
		r.cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "AWS_CA_BUNDLE=") })
	}
	r.cmd.Stdout = r.log
	r.cmd.Stderr = r.log
	// The registry dies with the test binary, even if the binary is killed
	// before its cleanups run.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.done <- r.cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-r.done:
			r.done <- err
			r.cmd = nil
			return nil, fmt.Errorf("registry exited before serving: %v\n%s", err, r.log)
		default:
		}
		resp, err := r.http.Get(r.url("/v2/"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("registry on %s not ready within 20s (last: %v)\n%s", addr, err, r.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(r.stop)
	return r, nil
}

// freeAddr returns a 127.0.0.1 address with a port nobody listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// stop sends SIGTERM to the registry's pid and SIGKILL if it lingers.
func (r *registry) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	defer func() { r.cmd = nil }()
	select {
	case err := <-r.done:
		r.done <- err
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// syncBuffer is the registry's log: written by exec's copying goroutine
// while the test may read it for a failure message.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// url returns the registry's URL for path.
func (r *registry) url(path string) string {
	return "http://" + r.Addr + path
}

// ref returns the docker transport reference skopeo uses for repo:tag.
func (r *registry) ref(repo, tag string) string {
	return "docker://" + r.Addr + "/" + repo + ":" + tag
}

// response is what a registry request answered.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends one request and reads the whole answer.
func (r *registry) do(method, path string, header http.Header, body []byte) response {
	r.t.Helper()
	return r.doURL(method, r.url(path), header, body)
}

func (r *registry) doURL(method, url string, header http.Header, body []byte) response {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := r.http.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v\nregistry log:\n%s", method, url, err, r.log)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// errorCodes returns the distribution error codes ("MANIFEST_UNKNOWN", ...)
// of an error answer.
func (resp response) errorCodes() []string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(resp.Body, &e); err != nil {
		return nil
	}
	var codes []string
	for _, x := range e.Errors {
		codes = append(codes, x.Code)
	}
	return codes
}

// servedManifest is a manifest as the registry serves it.
type servedManifest struct {
	Status      int
	Body        []byte
	ContentType string
	Digest      digest.Digest // Docker-Content-Digest
}

// getManifest fetches repo's manifest by tag or digest, accepting every kind.
func (r *registry) getManifest(repo, ref string) servedManifest {
	r.t.Helper()
	resp := r.do(http.MethodGet, "/v2/"+repo+"/manifests/"+ref,
		http.Header{"Accept": manifestAccept}, nil)
	return servedManifest{
		Status:      resp.Status,
		Body:        resp.Body,
		ContentType: resp.Header.Get("Content-Type"),
		Digest:      digest.Digest(resp.Header.Get("Docker-Content-Digest")),
	}
}

// mustGetManifest is getManifest that fails the test unless it answers 200.
func (r *registry) mustGetManifest(repo, ref string) servedManifest {
	r.t.Helper()
	m := r.getManifest(repo, ref)
	if m.Status != http.StatusOK {
		r.t.Fatalf("GET manifest %s@%s: status %d: %s", repo, ref, m.Status, m.Body)
	}
	return m
}

// deleteManifest sends DELETE for repo's manifest by digest and returns the status.
func (r *registry) deleteManifest(repo string, dgst digest.Digest) int {
	r.t.Helper()
	return r.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+dgst.String(), nil, nil).Status
}

// deleteBlob sends DELETE for repo's blob (unlinks it from the repository)
// and returns the status.
func (r *registry) deleteBlob(repo string, dgst digest.Digest) int {
	r.t.Helper()
	return r.do(http.MethodDelete, "/v2/"+repo+"/blobs/"+dgst.String(), nil, nil).Status
}

// headBlob returns the status and Content-Length of HEAD on repo's blob.
func (r *registry) headBlob(repo string, dgst digest.Digest) (int, int64) {
	r.t.Helper()
	resp := r.do(http.MethodHead, "/v2/"+repo+"/blobs/"+dgst.String(), nil, nil)
	n, _ := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	return resp.Status, n
}

// getBlob returns the status and body of GET on repo's blob.
func (r *registry) getBlob(repo string, dgst digest.Digest) (int, []byte) {
	r.t.Helper()
	resp := r.do(http.MethodGet, "/v2/"+repo+"/blobs/"+dgst.String(), nil, nil)
	return resp.Status, resp.Body
}

// catalog returns every repository the registry lists.
func (r *registry) catalog() []string {
	r.t.Helper()
	resp := r.do(http.MethodGet, "/v2/_catalog?n=1000", nil, nil)
	if resp.Status != http.StatusOK {
		r.t.Fatalf("GET /v2/_catalog: %d: %s", resp.Status, resp.Body)
	}
	var c struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal(resp.Body, &c); err != nil {
		r.t.Fatal(err)
	}
	return c.Repositories
}

// tags returns repo's tags as the registry lists them (nil when the
// repository has none or is unknown).
func (r *registry) tags(repo string) []string {
	r.t.Helper()
	resp := r.do(http.MethodGet, "/v2/"+repo+"/tags/list?n=1000", nil, nil)
	if resp.Status == http.StatusNotFound {
		return nil
	}
	if resp.Status != http.StatusOK {
		r.t.Fatalf("GET tags of %s: %d: %s", repo, resp.Status, resp.Body)
	}
	var l struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(resp.Body, &l); err != nil {
		r.t.Fatal(err)
	}
	return l.Tags
}

// upload is a blob upload started through the registry's HTTP API.
type upload struct {
	UUID     string
	Location string // absolute URL with the registry's _state token
}

// startUpload opens a chunked upload in repo (POST, no digest), the way a
// client that streams a layer begins.
func (r *registry) startUpload(repo string) upload {
	r.t.Helper()
	resp := r.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if resp.Status != http.StatusAccepted {
		r.t.Fatalf("POST upload in %s: %d: %s", repo, resp.Status, resp.Body)
	}
	return r.uploadFrom(resp)
}

// patch appends one chunk to u (PATCH, never the closing PUT) and returns
// the upload with its new state token.
func (r *registry) patch(u upload, chunk []byte) upload {
	r.t.Helper()
	resp := r.doURL(http.MethodPatch, u.Location,
		http.Header{"Content-Type": {"application/octet-stream"}}, chunk)
	if resp.Status != http.StatusAccepted {
		r.t.Fatalf("PATCH upload %s: %d: %s", u.UUID, resp.Status, resp.Body)
	}
	return r.uploadFrom(resp)
}

// uploadStatus asks the registry for u's status (GET on its location).
func (r *registry) uploadStatus(u upload) response {
	r.t.Helper()
	return r.doURL(http.MethodGet, u.Location, nil, nil)
}

func (r *registry) uploadFrom(resp response) upload {
	r.t.Helper()
	u := upload{UUID: resp.Header.Get("Docker-Upload-UUID"), Location: resp.Header.Get("Location")}
	if u.UUID == "" || u.Location == "" {
		r.t.Fatalf("upload answer without UUID or Location: %v", resp.Header)
	}
	if strings.HasPrefix(u.Location, "/") {
		u.Location = r.url(u.Location)
	}
	return u
}

// revisions lists the manifest revisions of repo from the registry's own
// storage (the registry has no API for it): the oracle for what
// _manifests/sha256:* must list.
func (r *registry) revisions(repo string) []digest.Digest {
	r.t.Helper()
	dir := filepath.Join(r.Root, "docker/registry/v2/repositories", repo, "_manifests/revisions/sha256")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	var ds []digest.Digest
	for _, e := range ents {
		// A DELETE removes the link and leaves its directory behind.
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "link")); err != nil {
			continue
		}
		ds = append(ds, digest.NewDigestFromEncoded(digest.SHA256, e.Name()))
	}
	return ds
}

// TestRegistryHarness checks the harness against the registry alone, so a
// failing interop scenario points at regfs: the schema1 manifests built here
// are accepted by the registry under the digest the tests expect, and the
// upload and delete helpers see what the registry does.
func TestRegistryHarness(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	r := startRegistry(t, t.TempDir())
	img := newTestImage(t, platformAMD64, layerSpec{50, 1000}, layerSpec{51, 2000})
	l := newOCILayout(t)
	l.addImage("v1", img)
	skopeoCopy(t, "oci:"+l.Dir+":v1", r.ref("h/app", "v1"))
	if s := r.mustGetManifest("h/app", "v1"); !bytes.Equal(s.Body, img.Manifest.Data) || s.Digest != img.Manifest.Desc.Digest {
		t.Fatalf("skopeo did not push the OCI manifest as built: %s %s", s.Digest, s.Body)
	}

	key, err := libtrust.GenerateECP256PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, canonical := img.schema1Manifest(t, key, "h/app", "old")
	resp := r.do(http.MethodPut, "/v2/h/app/manifests/old",
		http.Header{"Content-Type": {mtSchema1Signed}}, signed)
	if resp.Status != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != canonical.String() {
		t.Fatalf("registry PUT of the built schema1: %d %s %s, want 201 %s", resp.Status, resp.Header.Get("Docker-Content-Digest"), resp.Body, canonical)
	}
	want, _, err := schema1Payload(signed)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := schema1Payload(r.mustGetManifest("h/app", "old").Body); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("registry serves the schema1 with another payload (%v)", err)
	}
	if status := r.deleteManifest("h/app", canonical); status != http.StatusAccepted {
		t.Fatalf("DELETE: %d", status)
	}
	if s := r.getManifest("h/app", "old"); s.Status != http.StatusNotFound {
		t.Fatalf("tag of a deleted manifest answers %d", s.Status)
	}

	u := r.patch(r.startUpload("h/app"), []byte("partial"))
	if s := r.uploadStatus(u); s.Status != http.StatusNoContent || s.Header.Get("Range") != "0-6" {
		t.Fatalf("upload status %d Range %q", s.Status, s.Header.Get("Range"))
	}
	data, err := os.ReadFile(filepath.Join(r.Root, "docker/registry/v2/repositories/h/app/_uploads", u.UUID, "data"))
	if err != nil || string(data) != "partial" {
		t.Fatalf("upload data on disk %q (%v)", data, err)
	}
	if resp := r.doURL(http.MethodDelete, u.Location, nil, nil); resp.Status != http.StatusNoContent {
		t.Fatalf("DELETE upload: %d %s", resp.Status, resp.Body)
	}
	if s := r.uploadStatus(u); s.Status != http.StatusNotFound || !slices.Contains(s.errorCodes(), "BLOB_UPLOAD_UNKNOWN") {
		t.Fatalf("cancelled upload status %d %s", s.Status, s.Body)
	}
	for _, b := range img.blobs() {
		if status, size := r.headBlob("h/app", b.Desc.Digest); status != http.StatusOK || size != b.Desc.Size {
			t.Fatalf("HEAD blob %s: %d size %d", b.Desc.Digest, status, size)
		}
		if status, body := r.getBlob("h/app", b.Desc.Digest); status != http.StatusOK || !bytes.Equal(body, b.Data) {
			t.Fatalf("GET blob %s: %d", b.Desc.Digest, status)
		}
	}
}
