package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"
)

// Tests of regfs mount --registry (issue 18): the store over a running
// registry's HTTP API, Debian's docker-registry on 127.0.0.1.

// startRegistryMount mounts the registry at url with --registry; extra
// flags and env are added. stateDir "" makes a fresh one.
func startRegistryMount(t *testing.T, url, stateDir string, env []string, extra ...string) *mount {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	m := &mount{t: t, Driver: "registry", Dir: t.TempDir(), bin: regfsBin, env: env}
	m.args = append([]string{"mount", "--registry", url, "--state-dir", stateDir, "--dir-cache-time", "1s"}, extra...)
	m.args = append(m.args, m.Dir)
	m.start()
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("regfs %s log:\n%s", m.Dir, m.logText())
		}
	})
	return m
}

// waitLog waits until the daemon's log, which reaches the test through a
// pipe, has a line containing s; false if it has none within 10 s.
func waitLog(m *mount, s string) bool {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(m.logText(), s) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// pushFixtures pushes every manifest kind with skopeo, as
// testRegistryWritesRegfsReads does, and returns the repositories.
func pushFixtures(t *testing.T, r *registry) []string {
	t.Helper()
	amd := newTestImage(t, platformAMD64, layerSpec{1, 4096}, layerSpec{2, 9 << 20}, layerSpec{3, 10})
	arm := newTestImage(t, platformARM64, layerSpec{1, 4096}, layerSpec{4, 200 << 10})
	l := newOCILayout(t)
	l.addImage("amd", amd)
	l.addIndex("multi", amd, arm)
	src := func(tag string) string { return "oci:" + l.Dir + ":" + tag }
	skopeoCopy(t, "--format", "oci", src("amd"), r.ref("interop/oci", "v1"))
	skopeoCopy(t, "--format", "oci", src("amd"), r.ref("interop/oci", "latest"))
	skopeoCopy(t, "--format", "v2s2", src("amd"), r.ref("interop/docker", "v1"))
	skopeoCopy(t, "--format", "v2s1", src("amd"), r.ref("interop/schema1", "v1"))
	skopeoCopy(t, "--multi-arch", "all", "--format", "oci", src("multi"), r.ref("interop/deep/index", "v1"))
	skopeoCopy(t, "--multi-arch", "all", "--format", "v2s2", src("multi"), r.ref("list", "v1"))
	return r.catalog()
}

// TestRemoteReads: fixtures skopeo pushed into a registry read through
// --registry byte for byte: repositories (nested too), tags, revisions
// (index children included), manifests of every kind, layers.
func TestRemoteReads(t *testing.T) {
	requireTools(t, registryBin, "skopeo", "sha256sum")
	r := startRegistry(t, t.TempDir())
	repos := pushFixtures(t, r)
	m := startRegistryMount(t, "http://"+r.Addr, "", nil)

	top := listDir(t, m.Dir)
	for _, name := range []string{"interop", "list"} {
		if !slices.Contains(top, name) {
			t.Errorf("mount root lists %v, missing %q", top, name)
		}
	}
	if got := listDir(t, m.path("interop", "deep")); !slices.Contains(got, "index") {
		t.Errorf("%s lists %v, missing the repository index", m.path("interop", "deep"), got)
	}
	for _, repo := range repos {
		t.Run(strings.ReplaceAll(repo, "/", "_"), func(t *testing.T) {
			checkRepoMatches(t, r, m, repo)
		})
	}
	// A ranged read in the middle of the 9 MiB layer (several 4 MiB
	// blocks, each one ranged GET) gives the registry's bytes.
	for _, name := range listDir(t, m.path("interop/oci", "_layers")) {
		_, want := r.getBlob("interop/oci", digest.Digest(name))
		if len(want) < 8<<20 {
			continue
		}
		f, err := os.Open(m.path("interop/oci", "_layers", name))
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5<<20)
		n, err := f.ReadAt(got, 3<<20)
		f.Close()
		if err != nil || !bytes.Equal(got[:n], want[3<<20:8<<20]) {
			t.Errorf("pread of 5 MiB at 3 MiB of %s: %d bytes, %v; not the registry's", name, n, err)
		}
	}
	// .regfs/stats counts the requests by method and endpoint.
	var stats struct {
		DriverCalls map[string]int64 `json:"driver_calls"`
	}
	if err := json.Unmarshal(catFile(t, m.path(".regfs/stats")), &stats); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"GET catalog", "GET tags", "GET manifests", "GET blobs", "HEAD blobs"} {
		if stats.DriverCalls[k] == 0 {
			t.Errorf(".regfs/stats driver_calls has no %q: %v", k, stats.DriverCalls)
		}
	}
	// A missing name is ENOENT, not EIO.
	for _, p := range []string{
		m.path("interop/oci", "_manifests", "nosuchtag"),
		m.path("interop/oci", "_layers", digest.FromString("missing").String()),
		m.path("interop/oci", "_manifests", digest.FromString("missing").String()),
		m.path("nosuchrepo"),
	} {
		if _, err := os.Stat(p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
	}
}

// pushThroughMount copies an image's blobs into repo's _uploads/ and
// checks that each is a layer after its close.
func pushThroughMount(t *testing.T, m *mount, repo string, img testImage) {
	t.Helper()
	for _, b := range img.blobs() {
		src := writeFile(t, b.Data)
		sh(t, "cp "+shellQuote(src)+" "+shellQuote(m.path(repo, "_uploads", b.Desc.Digest.String())))
		if got := statSize(t, m.path(repo, "_layers", b.Desc.Digest.String())); got != b.Desc.Size {
			t.Fatalf("%s/_layers/%s after the upload: %d bytes, want %d", repo, b.Desc.Digest, got, b.Desc.Size)
		}
	}
}

// TestRemoteWrites: pushes through --registry land in the registry as a
// client's would, and skopeo pulls them byte for byte; ln, rm and their
// refusals map onto the API.
func TestRemoteWrites(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	r := startRegistry(t, t.TempDir())
	m := startRegistryMount(t, "http://"+r.Addr, "", nil)

	// A 20 MiB layer: a 16 MiB PATCH, the rest with the final PUT.
	img := newTestImage(t, platformAMD64, layerSpec{7, 20 << 20}, layerSpec{8, 1000})
	sh(t, "mkdir -p "+shellQuote(m.path("team/app")))
	pushThroughMount(t, m, "team/app", img)
	docker := img.dockerManifest(t)
	sh(t, "cp "+shellQuote(writeFile(t, docker.Data))+" "+shellQuote(m.path("team/app/_manifests/v1")))
	sh(t, "cp "+shellQuote(writeFile(t, img.Manifest.Data))+" "+shellQuote(m.path("team/app/_manifests", img.Manifest.Desc.Digest.String())))
	sh(t, "ln "+shellQuote(m.path("team/app/_manifests", img.Manifest.Desc.Digest.String()))+" "+shellQuote(m.path("team/app/_manifests/oci")))

	if got := r.mustGetManifest("team/app", "v1"); !bytes.Equal(got.Body, docker.Data) {
		t.Errorf("registry serves team/app:v1 as %s, want the pushed %s", got.Digest, docker.Desc.Digest)
	}
	if got := r.mustGetManifest("team/app", "oci"); !bytes.Equal(got.Body, img.Manifest.Data) {
		t.Errorf("registry serves team/app:oci as %s, want the OCI manifest pushed by digest and tagged with ln", got.Digest)
	}
	// skopeo pulls what was pushed, byte for byte.
	dir := t.TempDir()
	skopeoCopy(t, r.ref("team/app", "oci"), "oci:"+dir+":pulled")
	for _, b := range img.blobs() {
		if got := layoutBlob(t, dir, b.Desc.Digest); !bytes.Equal(got, b.Data) {
			t.Errorf("skopeo pulled blob %s with other bytes", b.Desc.Digest)
		}
	}
	if got := catFile(t, m.path("team/app/_manifests/oci")); !bytes.Equal(got, img.Manifest.Data) {
		t.Errorf("team/app/_manifests/oci reads %d bytes, not the OCI manifest", len(got))
	}

	// Cross-repository ln: a mount at the registry, nothing copied by regfs.
	layer := img.Layers[0].Desc.Digest.String()
	sh(t, "mkdir -p "+shellQuote(m.path("other"))+" && ln "+shellQuote(m.path("team/app/_layers", layer))+" "+shellQuote(m.path("other/_layers/")))
	if status, size := r.headBlob("other", digest.Digest(layer)); status != 200 || size != img.Layers[0].Desc.Size {
		t.Errorf("registry HEAD other/blobs/%s after ln: %d, %d bytes", layer, status, size)
	}
	if got := listDir(t, m.path("other/_layers")); !slices.Contains(got, layer) {
		t.Errorf("other/_layers lists %v after ln, missing %s", got, layer)
	}
	// rm of a layer: DELETE of the blob in that repository only.
	sh(t, "rm "+shellQuote(m.path("other/_layers", layer)))
	if status, _ := r.headBlob("other", digest.Digest(layer)); status != 404 {
		t.Errorf("registry HEAD other/blobs/%s after rm: %d, want 404", layer, status)
	}
	if status, _ := r.headBlob("team/app", digest.Digest(layer)); status != 200 {
		t.Errorf("registry HEAD team/app/blobs/%s after rm in other: %d, want 200", layer, status)
	}

	// rm of a tag: distribution 2.8 has no DELETE by tag: ENOTSUP, the
	// reason in the log, the tag still there.
	if err := os.Remove(m.path("team/app/_manifests/oci")); !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("rm of a tag on distribution 2.8: %v, want ENOTSUP", err)
	}
	if !waitLog(m, "does not delete tags") {
		t.Errorf("the log does not say why rm of a tag failed:\n%s", m.logText())
	}
	if tags := r.tags("team/app"); !slices.Contains(tags, "oci") {
		t.Errorf("registry lists %v after the refused rm, missing oci", tags)
	}
	// rm of a revision: DELETE by digest, its tag goes with it.
	sh(t, "rm "+shellQuote(m.path("team/app/_manifests", docker.Desc.Digest.String())))
	if got := r.getManifest("team/app", docker.Desc.Digest.String()); got.Status != 404 {
		t.Errorf("registry GET of the removed revision: %d, want 404", got.Status)
	}
	if tags := r.tags("team/app"); slices.Contains(tags, "v1") {
		t.Errorf("registry still lists tag v1 of the removed revision: %v", tags)
	}

	// A wrong digest: the close fails with EBADMSG, the upload stays.
	wrong := digest.FromString("something else").String()
	if out, err := shErr(t, "cp "+shellQuote(writeFile(t, []byte("not it")))+" "+shellQuote(m.path("team/app/_uploads", wrong))); err == nil ||
		!strings.Contains(out, "Bad message") {
		t.Errorf("cp of the wrong bytes to _uploads/%s: %v %s, want EBADMSG", wrong, err, out)
	}
	if got := listDir(t, m.path("team/app/_uploads")); !slices.Contains(got, wrong) {
		t.Errorf("_uploads lists %v after the mismatch, missing the upload", got)
	}
	sh(t, "rm "+shellQuote(m.path("team/app/_uploads", wrong)))
	if got := listDir(t, m.path("team/app/_uploads")); len(got) != 0 {
		t.Errorf("_uploads lists %v after rm", got)
	}

	// A manifest whose layer the registry does not have: EBADMSG, and the
	// registry's reason in .regfs/errors.
	orphan := newTestImage(t, platformAMD64, layerSpec{99, 100})
	if out, err := shErr(t, "cp "+shellQuote(writeFile(t, orphan.Manifest.Data))+" "+shellQuote(m.path("team/app/_manifests/orphan"))); err == nil ||
		!strings.Contains(out, "Bad message") {
		t.Errorf("cp of a manifest with missing blobs: %v %s, want EBADMSG", err, out)
	}
	if errs := catFile(t, m.path(".regfs/errors")); !bytes.Contains(errs, []byte("MANIFEST_BLOB_UNKNOWN")) {
		t.Errorf(".regfs/errors does not give the registry's reason:\n%s", errs)
	}
}

// TestRemoteUploadResumes: an upload killed with regfs (kill -9) resumes
// from the state directory at the offset the registry's session has, and
// completes byte for byte.
func TestRemoteUploadResumes(t *testing.T) {
	requireTools(t, registryBin)
	r := startRegistry(t, t.TempDir())
	state := t.TempDir()
	m := startRegistryMount(t, "http://"+r.Addr, state, nil)
	data := make([]byte, 40<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	d := digest.FromBytes(data).String()
	src := writeFile(t, data)
	up := m.path("app", "_uploads", d)
	sh(t, "mkdir -p "+shellQuote(m.path("app")))
	// 20 MiB, fsync'd (one 16 MiB chunk and the rest sent), then regfs
	// is killed with the file still open.
	f, err := os.OpenFile(up, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:20<<20]); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	m.kill()
	f.Close() // ENOTCONN: the mount is gone
	m.start()
	size := statSize(t, up)
	if size != 20<<20 {
		t.Fatalf("after kill -9 the upload has %d bytes, want the 20 MiB fsync made durable at the registry", size)
	}
	sh(t, fmt.Sprintf("tail -c +%d %s >> %s", size+1, shellQuote(src), shellQuote(up)))
	if status, n := r.headBlob("app", digest.Digest(d)); status != 200 || n != int64(len(data)) {
		t.Fatalf("registry HEAD of the resumed blob: %d, %d bytes", status, n)
	}
	if _, got := r.getBlob("app", digest.Digest(d)); !bytes.Equal(got, data) {
		t.Errorf("registry serves the resumed blob with other bytes")
	}
	if ents, _ := filepath.Glob(filepath.Join(state, "*", "uploads", "*.json")); len(ents) != 0 {
		t.Errorf("state directory keeps %v after the commit", ents)
	}
}

// faultProxy forwards TCP connections to a registry; Stall stops it
// forwarding anything (new and open connections alike), Drop closes
// every connection after it has sent 1 MiB to the client.
type faultProxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32 // proxyPass, proxyStall or proxyDrop
	closed chan struct{}
}

const (
	proxyPass = iota
	proxyStall
	proxyDrop
)

func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, closed: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { close(p.closed); ln.Close() })
	return p
}

func (p *faultProxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	go func() { p.pipe(s, c, false); done <- struct{}{} }()
	go func() { p.pipe(c, s, true); done <- struct{}{} }()
	<-done
}

// pipe copies src to dst, holding each chunk while the proxy stalls.
func (p *faultProxy) pipe(dst, src net.Conn, toClient bool) {
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := src.Read(buf)
		for p.mode.Load() == proxyStall {
			select {
			case <-p.closed:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
		}
		if err != nil || (toClient && p.mode.Load() == proxyDrop && sent > 1<<20) {
			dst.Close()
			src.Close()
			return
		}
	}
}

// TestRemoteFaults: a registry that stalls gives EIO or ETIMEDOUT within
// --registry-timeout, never a hang; one that drops connections mid-body
// gives the right bytes or an error, never wrong bytes.
func TestRemoteFaults(t *testing.T) {
	requireTools(t, registryBin)
	r := startRegistry(t, t.TempDir())
	p := startFaultProxy(t, r.Addr)
	m := startRegistryMount(t, "http://"+p.ln.Addr().String(), "", nil, "--registry-timeout", "2s", "--cache-size", "64M")
	layers := map[string][]byte{}
	sh(t, "mkdir -p "+shellQuote(m.path("app")))
	for i := range 3 {
		data := make([]byte, 12<<20)
		for j := range data {
			data[j] = byte(j*(i+3) + j>>12)
		}
		d := digest.FromBytes(data).String()
		layers[d] = data
		sh(t, "cp "+shellQuote(writeFile(t, data))+" "+shellQuote(m.path("app/_uploads", d)))
	}
	var names []string
	for d := range layers {
		names = append(names, d)
	}
	slices.Sort(names)

	p.mode.Store(proxyStall)
	_, err := os.ReadFile(m.path("app/_layers", names[0]))
	if e := errnoOf(err); e != syscall.EIO && e != syscall.ETIMEDOUT {
		t.Errorf("cat of a layer through a stalled registry: %v, want EIO or ETIMEDOUT", err)
	}
	if _, err := os.ReadDir(m.path("app/_manifests")); err == nil {
		t.Errorf("ls of _manifests through a stalled registry succeeded")
	}

	p.mode.Store(proxyDrop)
	for _, d := range names[1:] {
		got, err := os.ReadFile(m.path("app/_layers", d))
		if err == nil && !bytes.Equal(got, layers[d]) {
			t.Errorf("cat of %s while the registry drops connections: wrong bytes", d)
		}
		if err != nil {
			if e := errnoOf(err); e != syscall.EIO && e != syscall.ETIMEDOUT {
				t.Errorf("cat of %s while the registry drops connections: %v, want the bytes, EIO or ETIMEDOUT", d, err)
			}
		}
	}
	p.mode.Store(proxyPass)
	if got := catFile(t, m.path("app/_layers", names[0])); !bytes.Equal(got, layers[names[0]]) {
		t.Errorf("cat after the registry recovered: wrong bytes")
	}
}

// testCA is a certificate authority made by a test, and the key and
// certificate it issued for 127.0.0.1, as PEM files.
type testCA struct {
	CA, Cert, Key string
	pool          *x509.CertPool
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regfs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(crand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ca := testCA{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"), pool: x509.NewCertPool()}
	ca.pool.AddCert(caCert)
	for path, block := range map[string]*pem.Block{
		ca.CA:   {Type: "CERTIFICATE", Bytes: caDER},
		ca.Cert: {Type: "CERTIFICATE", Bytes: der},
		ca.Key:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca
}

// authRegistryConfig is a registry with TLS or token auth: storage, http
// (with its tls block) and auth sections filled in.
const authRegistryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: regfs-integration-fixed-secret%s
auth:
%s
`

// startAuthRegistry runs docker-registry with the given http tls block
// and auth section, and waits until /v2/ answers (200 or 401).
func startAuthRegistry(t *testing.T, tlsBlock, auth string, client *http.Client, scheme string) *registry {
	t.Helper()
	requireTools(t, registryBin)
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "config.yml")
	root := t.TempDir()
	if err := os.WriteFile(conf, fmt.Appendf(nil, authRegistryConfig, root, addr, tlsBlock, auth), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &registry{t: t, Root: root, Addr: addr, log: &syncBuffer{}, done: make(chan error, 1), http: client}
	r.cmd = exec.Command(registryBin, "serve", conf)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(r.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(scheme + "://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return r
			}
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("registry exited: %v\n%s", err, r.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry on %s not ready: %v\n%s", addr, err, r.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dockerConfigEnv writes a docker config.json giving user:pass for host and
// returns the environment that makes regfs read it (and no other).
func dockerConfigEnv(t *testing.T, host, user, pass string) []string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.MkdirAll(filepath.Join(dir, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".docker", "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, ".docker"), "REGISTRY_AUTH_FILE=", "XDG_RUNTIME_DIR=" + dir}
}

// checkAuthRoundTrip pushes an image through an authenticated mount, reads
// it back, and checks that a mount with the wrong password gets EACCES and
// that no password is in any log.
func checkAuthRoundTrip(t *testing.T, url, host, user, pass string, extra ...string) {
	t.Helper()
	m := startRegistryMount(t, url, "", dockerConfigEnv(t, host, user, pass), extra...)
	img := newTestImage(t, platformAMD64, layerSpec{21, 5 << 20}, layerSpec{22, 100})
	sh(t, "mkdir -p "+shellQuote(m.path("secure/app")))
	pushThroughMount(t, m, "secure/app", img)
	sh(t, "cp "+shellQuote(writeFile(t, img.Manifest.Data))+" "+shellQuote(m.path("secure/app/_manifests/v1")))
	if got := listDir(t, m.path("secure")); !slices.Contains(got, "app") {
		t.Errorf("ls secure lists %v, want app (from the catalog)", got)
	}
	if got := catFile(t, m.path("secure/app/_manifests/v1")); !bytes.Equal(got, img.Manifest.Data) {
		t.Errorf("secure/app/_manifests/v1 reads other bytes")
	}
	for _, b := range img.Layers {
		if got := catFile(t, m.path("secure/app/_layers", b.Desc.Digest.String())); !bytes.Equal(got, b.Data) {
			t.Errorf("layer %s reads other bytes", b.Desc.Digest)
		}
	}

	if stats := catFile(t, m.path(".regfs/stats")); bytes.Contains(stats, []byte(pass)) {
		t.Errorf(".regfs/stats shows the password:\n%s", stats)
	}
	bad := startRegistryMount(t, url, "", dockerConfigEnv(t, host, user, "wrong-"+pass), extra...)
	if _, err := os.ReadDir(bad.path("secure/app/_manifests")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("ls with the wrong password: %v, want EACCES", err)
	}
	bad.stop()
	m.stop()
	enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	for _, log := range []string{m.logText(), bad.logText()} {
		if strings.Contains(log, pass) || strings.Contains(log, enc) {
			t.Errorf("the daemon's log shows the credentials:\n%s", log)
		}
	}
}

// TestRemoteBasicAuthTLS: htpasswd Basic auth over TLS with a CA made by
// the test (--registry-ca); the credentials come from a docker
// config.json.
func TestRemoteBasicAuthTLS(t *testing.T) {
	requireTools(t, registryBin, "perl")
	ca := newTestCA(t)
	const user, pass = "regfs", "Tr0ub4dor-3"
	hash := strings.TrimSpace(sh(t, `perl -e 'print crypt($ARGV[0], "\$2b\$05\$".$ARGV[1])' `+pass+` abcdefghijklmnopqrstuu`))
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	r := startAuthRegistry(t, fmt.Sprintf("\n  tls:\n    certificate: %s\n    key: %s", ca.Cert, ca.Key),
		fmt.Sprintf("  htpasswd:\n    realm: regfs-test\n    path: %s", htpasswd), client, "https")
	checkAuthRoundTrip(t, "https://"+r.Addr, r.Addr, user, pass, "--registry-ca", ca.CA)

	// Without the CA the certificate is refused (EIO, the reason in the
	// log); --registry-insecure skips the check.
	m := startRegistryMount(t, "https://"+r.Addr, "", dockerConfigEnv(t, r.Addr, user, pass))
	if _, err := os.ReadDir(m.path("secure/app/_manifests")); err == nil {
		t.Errorf("ls through a registry whose certificate is not trusted succeeded")
	}
	m.stop()
	if !waitLog(m, "certificate") {
		t.Errorf("the log does not say the certificate was refused:\n%s", m.logText())
	}
	m = startRegistryMount(t, "https://"+r.Addr, "", dockerConfigEnv(t, r.Addr, user, pass), "--registry-insecure")
	if got := listDir(t, m.path("secure/app/_manifests")); !slices.Contains(got, "v1") {
		t.Errorf("--registry-insecure: _manifests lists %v", got)
	}
}

// tokenIssuer is a small token server of the registry's token auth: it
// checks Basic credentials and issues ES256 JWTs granting every scope
// asked for, signed with a key whose certificate is the registry's
// rootcertbundle. It counts the tokens it issued.
type tokenIssuer struct {
	srv        *httptest.Server
	key        *ecdsa.PrivateKey
	kid        string
	bundle     string
	user, pass string
	issued     atomic.Int32
}

const (
	tokenService = "regfs-test-registry"
	tokenIssuerN = "regfs-test-issuer"
)

func newTokenIssuer(t *testing.T, user, pass string) *tokenIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "regfs token issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := libtrust.FromCryptoPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ti := &tokenIssuer{key: key, kid: pub.KeyID(), bundle: filepath.Join(t.TempDir(), "token-ca.pem"), user: user, pass: pass}
	if err := os.WriteFile(ti.bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ti.srv = httptest.NewServer(http.HandlerFunc(ti.serve))
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *tokenIssuer) serve(w http.ResponseWriter, r *http.Request) {
	u, p, ok := r.BasicAuth()
	if !ok || u != ti.user || p != ti.pass {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`)
		return
	}
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	grants := []access{}
	for _, scope := range r.URL.Query()["scope"] {
		for _, one := range strings.Fields(scope) {
			parts := strings.Split(one, ":")
			if len(parts) < 3 {
				continue
			}
			grants = append(grants, access{Type: parts[0], Name: strings.Join(parts[1:len(parts)-1], ":"), Actions: strings.Split(parts[len(parts)-1], ",")})
		}
	}
	now := time.Now()
	claims := map[string]any{"iss": tokenIssuerN, "sub": u, "aud": tokenService, "exp": now.Add(5 * time.Minute).Unix(),
		"nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(), "jti": fmt.Sprint(now.UnixNano()), "access": grants}
	header := map[string]any{"typ": "JWT", "alg": "ES256", "kid": ti.kid}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	sum := sha256.Sum256([]byte(input))
	rr, ss, err := ecdsa.Sign(crand.Reader, ti.key, sum[:])
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	token := input + "." + base64.RawURLEncoding.EncodeToString(sig)
	ti.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token":%q,"access_token":%q,"expires_in":300,"issued_at":%q}`, token, token, now.UTC().Format(time.RFC3339))
}

// TestRemoteTokenAuth: the registry's token auth (realm, service, issuer,
// rootcertbundle) with a token issuer written here: regfs runs the bearer
// flow with the docker config's credentials, pushes and reads, and the
// wrong password is EACCES.
func TestRemoteTokenAuth(t *testing.T) {
	requireTools(t, registryBin)
	const user, pass = "regfs", "c0rrect-h0rse"
	ti := newTokenIssuer(t, user, pass)
	client := &http.Client{Timeout: 10 * time.Second}
	// The realm is named by host name: go-containerregistry refuses a
	// realm at a private or loopback IP literal other than the
	// registry's own host:port (a guard against SSRF).
	realm := strings.Replace(ti.srv.URL, "127.0.0.1", "localhost", 1) + "/token"
	r := startAuthRegistry(t, "", fmt.Sprintf("  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s",
		realm, tokenService, tokenIssuerN, ti.bundle), client, "http")
	checkAuthRoundTrip(t, "http://"+r.Addr, r.Addr, user, pass)
	if ti.issued.Load() == 0 {
		t.Errorf("the token issuer issued no token: the mount did not use the bearer flow")
	}
}
