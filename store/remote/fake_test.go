package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

// fakeRegistry is a small distribution API in memory, recording what it
// was asked: enough to check the requests regfs makes where Debian's
// registry cannot show them (chunk boundaries, a refused mount, a
// disabled catalog, the credentials sent).
type fakeRegistry struct {
	mu        sync.Mutex
	blobs     map[string][]byte        // repo@digest -> bytes
	manifests map[string][]byte        // repo@ref -> bytes (tags and digests)
	tags      map[string][]string      // repo -> tags
	uploads   map[string]*bytes.Buffer // id -> bytes
	log       []string                 // "METHOD path [Content-Range]"
	calls     map[string]int           // "METHOD endpoint" -> count
	noCatalog bool                     // _catalog answers 404
	noMount   bool                     // POST ?mount= opens an upload instead
	minChunk  int                      // OCI-Chunk-Min-Length, 0 for none
	auth      map[string]bool          // Authorization headers seen
	repos     map[string]bool          // repositories with something
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{blobs: map[string][]byte{}, manifests: map[string][]byte{}, tags: map[string][]string{},
		uploads: map[string]*bytes.Buffer{}, calls: map[string]int{}, auth: map[string]bool{}, repos: map[string]bool{}}
}

func (f *fakeRegistry) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key]
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.Path
	f.log = append(f.log, strings.TrimSpace(r.Method+" "+p+" "+r.Header.Get("Content-Range")))
	f.calls[r.Method+" "+endpoint(p)]++
	if a := r.Header.Get("Authorization"); a != "" {
		f.auth[a] = true
	}
	if p == "/v2/" {
		return
	}
	if p == "/v2/_catalog" {
		if f.noCatalog {
			ociError(w, http.StatusNotFound, "UNSUPPORTED")
			return
		}
		var names []string
		for n := range f.repos {
			names = append(names, n)
		}
		json.NewEncoder(w).Encode(map[string]any{"repositories": names})
		return
	}
	if strings.HasPrefix(p, "/upload/") {
		id := strings.TrimPrefix(p, "/upload/")
		buf := f.uploads[id]
		if buf == nil {
			ociError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
			return
		}
		body, _ := io.ReadAll(r.Body)
		switch r.Method {
		case http.MethodPatch:
			if f.minChunk > 0 && len(body) < f.minChunk {
				ociError(w, http.StatusRequestedRangeNotSatisfiable, "SIZE_INVALID")
				return
			}
			buf.Write(body)
			w.Header().Set("Location", p+"?"+r.URL.RawQuery)
			w.Header().Set("Range", fmt.Sprintf("0-%d", max(buf.Len()-1, 0)))
			w.WriteHeader(http.StatusAccepted)
		case http.MethodGet:
			w.Header().Set("Range", fmt.Sprintf("0-%d", max(buf.Len()-1, 0)))
			w.WriteHeader(http.StatusNoContent)
		case http.MethodDelete:
			delete(f.uploads, id)
			w.WriteHeader(http.StatusNoContent)
		case http.MethodPut:
			buf.Write(body)
			d := r.URL.Query().Get("digest")
			if digest.FromBytes(buf.Bytes()).String() != d {
				ociError(w, http.StatusBadRequest, "DIGEST_INVALID")
				return
			}
			repo := r.URL.Query().Get("repo")
			f.blobs[repo+"@"+d] = buf.Bytes()
			delete(f.uploads, id)
			w.WriteHeader(http.StatusCreated)
		}
		return
	}
	rest := strings.TrimPrefix(p, "/v2/")
	switch {
	case strings.HasSuffix(rest, "/blobs/uploads/"):
		repo := strings.TrimSuffix(rest, "/blobs/uploads/")
		if m := r.URL.Query().Get("mount"); m != "" && !f.noMount {
			if b, ok := f.blobs[r.URL.Query().Get("from")+"@"+m]; ok {
				f.blobs[repo+"@"+m] = b
				f.repos[repo] = true
				w.WriteHeader(http.StatusCreated)
				return
			}
		}
		id := strconv.Itoa(len(f.log))
		f.uploads[id] = &bytes.Buffer{}
		f.repos[repo] = true
		w.Header().Set("Location", "/upload/"+id+"?repo="+repo)
		if f.minChunk > 0 {
			w.Header().Set("OCI-Chunk-Min-Length", strconv.Itoa(f.minChunk))
		}
		w.WriteHeader(http.StatusAccepted)
	case strings.Contains(rest, "/blobs/"):
		i := strings.Index(rest, "/blobs/")
		b, ok := f.blobs[rest[:i]+"@"+rest[i+len("/blobs/"):]]
		if !ok {
			ociError(w, http.StatusNotFound, "BLOB_UNKNOWN")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	case strings.HasSuffix(rest, "/tags/list"):
		repo := strings.TrimSuffix(rest, "/tags/list")
		if !f.repos[repo] {
			ociError(w, http.StatusNotFound, "NAME_UNKNOWN")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": f.tags[repo]})
	case strings.Contains(rest, "/manifests/"):
		i := strings.Index(rest, "/manifests/")
		b, ok := f.manifests[rest[:i]+"@"+rest[i+len("/manifests/"):]]
		if !ok {
			ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
			return
		}
		w.Header().Set("Content-Type", store.MediaTypeOCIManifest)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(b).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	default:
		ociError(w, http.StatusNotFound, "NAME_UNKNOWN")
	}
}

// tag stores a manifest referencing blobs in repo under tag.
func (f *fakeRegistry) tag(repo, tag string, blobs ...[]byte) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var layers []string
	for _, b := range blobs {
		d := digest.FromBytes(b)
		f.blobs[repo+"@"+d.String()] = b
		layers = append(layers, fmt.Sprintf(`{"mediaType":"application/octet-stream","digest":%q,"size":%d}`, d, len(b)))
	}
	m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"layers":[%s]}`, store.MediaTypeOCIManifest, strings.Join(layers, ",")))
	d := digest.FromBytes(m)
	f.manifests[repo+"@"+tag] = m
	f.manifests[repo+"@"+d.String()] = m
	f.tags[repo] = append(f.tags[repo], tag)
	f.repos[repo] = true
	return d
}

// TestChunkedUpload: an upload is PATCHed in chunks of the chunk size with
// Content-Range (at least the registry's OCI-Chunk-Min-Length), the rest
// goes with the PUT ?digest=, and Cancel DELETEs the session.
func TestChunkedUpload(t *testing.T) {
	f := newFakeRegistry()
	f.minChunk = 3 << 20
	st := newTestStore(t, f, Options{ChunkSize: 1 << 20})
	ctx := context.Background()
	r, _ := st.Repository("app")
	data := bytes.Repeat([]byte("0123456789abcdef"), (7<<20)/16)
	up, err := r.Uploads().Create(ctx, digest.FromBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 100 << 10 {
		if _, err := up.Write(data[off:min(off+100<<10, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var patches []string
	for _, l := range f.log {
		if strings.HasPrefix(l, "PATCH") || strings.HasPrefix(l, "PUT") {
			patches = append(patches, l)
		}
	}
	want := []string{"PATCH /upload/2 0-3145727", "PATCH /upload/2 3145728-6291455", "PUT /upload/2 6291456-7340031"}
	if strings.Join(patches, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(patches, "\n"), strings.Join(want, "\n"))
	}
	if !bytes.Equal(f.blobs["app@"+digest.FromBytes(data).String()], data) {
		t.Error("the registry holds other bytes")
	}

	up, err = r.Uploads().Create(ctx, digest.FromString("other"))
	if err != nil {
		t.Fatal(err)
	}
	up.Write([]byte("abc"))
	up.Close()
	if n := len(f.uploads); n != 1 {
		t.Fatalf("%d sessions open, want 1", n)
	}
	if err := r.Uploads().Cancel(ctx, up.ID()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.uploads); n != 0 || !strings.HasPrefix(f.log[len(f.log)-1], "DELETE /upload/") {
		t.Errorf("after Cancel: %d sessions open, last request %q", n, f.log[len(f.log)-1])
	}
	if ups, _ := r.Uploads().List(ctx); len(ups) != 0 {
		t.Errorf("uploads after Cancel: %v", ups)
	}
}

// TestLinkCopiesWhereMountRefused: ln across repositories asks for a
// cross-repository mount; a registry that opens an upload instead (202)
// gets the blob copied through it.
func TestLinkCopiesWhereMountRefused(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		f := newFakeRegistry()
		f.noMount = refuse
		blob := []byte("a layer")
		f.tag("src", "v1", blob)
		st := newTestStore(t, f, Options{})
		ctx := context.Background()
		src, _ := st.Repository("src")
		dst, _ := st.Repository("dst")
		d := digest.FromBytes(blob)
		if _, err := src.Layers().Stat(ctx, d); err != nil {
			t.Fatal(err)
		}
		if err := dst.Layers().Link(ctx, d); err != nil {
			t.Fatalf("refuse %v: %v", refuse, err)
		}
		if !bytes.Equal(f.blobs["dst@"+d.String()], blob) {
			t.Errorf("refuse %v: dst does not hold the blob", refuse)
		}
		if refuse && f.count("PUT other") != 1 { // the fake's sessions are at /upload/
			t.Errorf("refused mount: %d PUTs of an upload, want the copy's one", f.count("PUT other"))
		}
	}
}

// TestCatalog: the catalog is asked once per CatalogTTL; without one, a
// repository appears when looked up by name and is listed after.
func TestCatalog(t *testing.T) {
	f := newFakeRegistry()
	f.tag("team/app", "v1", []byte("x"))
	st := newTestStore(t, f, Options{CatalogTTL: time.Hour})
	ctx := context.Background()
	for range 3 {
		if c, err := st.Children(ctx, ""); err != nil || strings.Join(c, ",") != "team" {
			t.Fatalf("Children: %v, %v", c, err)
		}
	}
	if n := f.count("GET catalog"); n != 1 {
		t.Errorf("%d catalog requests for 3 listings, want 1", n)
	}
	if ok, err := st.IsRepository(ctx, "team"); ok || err != nil {
		t.Errorf("a namespace is a repository: %v, %v", ok, err)
	}

	f = newFakeRegistry()
	f.noCatalog = true
	f.tag("hidden/app", "v1", []byte("x"))
	st = newTestStore(t, f, Options{})
	if c, err := st.Children(ctx, ""); err != nil || len(c) != 0 {
		t.Fatalf("Children without a catalog: %v, %v", c, err)
	}
	if ok, err := st.IsRepository(ctx, "hidden/app"); !ok || err != nil {
		t.Fatalf("IsRepository by name without a catalog: %v, %v", ok, err)
	}
	if c, _ := st.Children(ctx, "hidden"); strings.Join(c, ",") != "app" {
		t.Errorf("after the lookup, Children(hidden) = %v", c)
	}
	// Listing the repository: one tags/list and one GET of the tag's
	// manifest give the tags, the revisions and the layers.
	before := f.count("GET tags") + f.count("GET manifests") + f.count("HEAD manifests")
	r, _ := st.Repository("hidden/app")
	tags, _ := r.Tags().List(ctx)
	revs, _ := r.Manifests().List(ctx)
	layers, _ := r.Layers().List(ctx)
	if len(tags) != 1 || len(revs) != 1 || len(layers) != 1 {
		t.Errorf("tags %v, revisions %v, layers %v", tags, revs, layers)
	}
	if n := f.count("GET tags") + f.count("GET manifests") + f.count("HEAD manifests") - before; n > 2 {
		t.Errorf("%d requests to list a repository of one tag, want at most 2", n)
	}
}

// TestKeychain: credentials come from $REGISTRY_AUTH_FILE when there is no
// docker config, and from a credential helper a docker config names.
func TestKeychain(t *testing.T) {
	const user, pass = "carol", "h3lper-secret"
	basic := "Basic " + base64Std(user+":"+pass)
	check := func(t *testing.T, f *fakeRegistry) {
		t.Helper()
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.auth[basic] {
			t.Errorf("the registry was not sent the credentials; it saw %v", f.auth)
		}
	}
	challenge := func(f *fakeRegistry) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != basic {
				w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
				ociError(w, http.StatusUnauthorized, "UNAUTHORIZED")
				f.mu.Lock()
				if a := r.Header.Get("Authorization"); a != "" {
					f.auth[a] = true
				}
				f.mu.Unlock()
				return
			}
			f.ServeHTTP(w, r)
		})
	}

	t.Run("REGISTRY_AUTH_FILE", func(t *testing.T) {
		home := t.TempDir()
		t.Setenv("HOME", home)
		t.Setenv("DOCKER_CONFIG", "")
		t.Setenv("XDG_RUNTIME_DIR", home)
		t.Setenv("XDG_CONFIG_HOME", home)
		f := newFakeRegistry()
		f.tag("app", "v1", []byte("x"))
		st := newTestStore(t, challenge(f), Options{Keychain: authn.DefaultKeychain})
		host := strings.TrimPrefix(st.(*remoteStore).c.base.Host, "")
		authFile := filepath.Join(home, "auth.json")
		os.WriteFile(authFile, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64Std(user+":"+pass))), 0o600)
		t.Setenv("REGISTRY_AUTH_FILE", authFile)
		r, _ := st.Repository("app")
		if tags, err := r.Tags().List(context.Background()); err != nil || len(tags) != 1 {
			t.Fatalf("tags with $REGISTRY_AUTH_FILE: %v, %v", tags, err)
		}
		check(t, f)
	})
	t.Run("credential helper", func(t *testing.T) {
		home := t.TempDir()
		bin := filepath.Join(home, "bin")
		os.MkdirAll(bin, 0o755)
		helper := fmt.Sprintf("#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' \"$server\"\n", user, pass)
		if err := os.WriteFile(filepath.Join(bin, "docker-credential-regfstest"), []byte(helper), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
		t.Setenv("HOME", home)
		t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
		t.Setenv("REGISTRY_AUTH_FILE", "")
		f := newFakeRegistry()
		f.tag("app", "v1", []byte("x"))
		st := newTestStore(t, challenge(f), Options{Keychain: authn.DefaultKeychain})
		host := st.(*remoteStore).c.base.Host
		os.MkdirAll(filepath.Join(home, ".docker"), 0o700)
		os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(fmt.Sprintf(`{"credHelpers":{%q:"regfstest"}}`, host)), 0o600)
		r, _ := st.Repository("app")
		if tags, err := r.Tags().List(context.Background()); err != nil || len(tags) != 1 {
			t.Fatalf("tags with a credential helper: %v, %v", tags, err)
		}
		check(t, f)
	})
}

// TestResumeAtRegistryOffset: after a crash an upload resumes at the
// offset the registry's session has when regfs holds a hash state for it:
// ahead of the saved offset (regfs died between the registry taking a
// chunk and saving that it did) or behind it (the registry lost a chunk it
// had taken: the smaller is trusted). The blob then commits whole.
func TestResumeAtRegistryOffset(t *testing.T) {
	data := bytes.Repeat([]byte("resumable upload "), (4<<20)/17+1)[:4<<20]
	d := digest.FromBytes(data)
	for _, c := range []struct {
		name string
		// damage changes the state file or the registry's session after
		// three chunks (3 MiB) were acknowledged, and returns the offset
		// the upload must resume at.
		damage func(t *testing.T, f *fakeRegistry, st *uploadState) int64
	}{
		{"registry ahead", func(t *testing.T, f *fakeRegistry, st *uploadState) int64 {
			st.Pending, st.PendingHash = st.Offset, st.Hash
			st.Offset, st.Hash = 2<<20, st.Earlier[2<<20]
			return 3 << 20
		}},
		{"registry behind", func(t *testing.T, f *fakeRegistry, st *uploadState) int64 {
			for _, b := range f.uploads {
				b.Truncate(2 << 20)
			}
			return 2 << 20
		}},
		{"registry at zero", func(t *testing.T, f *fakeRegistry, st *uploadState) int64 {
			for _, b := range f.uploads {
				b.Reset()
			}
			return 0
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeRegistry()
			stateDir := t.TempDir()
			st := newTestStore(t, f, Options{ChunkSize: 1 << 20, StateDir: stateDir})
			ctx := context.Background()
			r, _ := st.Repository("app")
			up, err := r.Uploads().Create(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			up.Write(data[:3<<20])
			if err := up.Close(); err != nil {
				t.Fatal(err)
			}
			s := st.(*remoteStore)
			saved, err := s.state.load(up.ID())
			if err != nil || saved.Offset != 3<<20 {
				t.Fatalf("saved state %+v, %v: want 3 MiB acknowledged", saved, err)
			}
			f.mu.Lock()
			want := c.damage(t, f, saved)
			f.mu.Unlock()
			if err := s.state.save(saved); err != nil {
				t.Fatal(err)
			}
			up, err = r.Uploads().Resume(ctx, up.ID())
			if err != nil {
				t.Fatal(err)
			}
			if up.Size() != want {
				t.Fatalf("resumed at %d, want %d", up.Size(), want)
			}
			up.Write(data[want:])
			if _, err := up.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.blobs["app@"+d.String()], data) {
				t.Error("the registry holds other bytes")
			}
		})
	}
}

// TestCommitShortThenAppend: a commit before every byte is written is a
// digest mismatch that sends nothing final; the rest appended after it
// commits the blob. The digest is of every byte written, those still
// buffered or waiting for the hasher included.
func TestCommitShortThenAppend(t *testing.T) {
	f := newFakeRegistry()
	st := newTestStore(t, f, Options{ChunkSize: 1 << 20})
	ctx := context.Background()
	r, _ := st.Repository("app")
	data := bytes.Repeat([]byte("append after a mismatch "), (5<<20)/24)
	d := digest.FromBytes(data)
	up, err := r.Uploads().Create(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	half := len(data)/2 + 12345 // a full chunk queued and part of one buffered
	for off := 0; off < half; off += 128 << 10 {
		up.Write(data[off:min(off+128<<10, half)])
	}
	var mismatch *store.DigestMismatchError
	if _, err := up.Commit(ctx); !errors.As(err, &mismatch) || mismatch.Actual != digest.FromBytes(data[:half]) {
		t.Fatalf("commit of half the bytes: %v, want a mismatch naming their digest", err)
	}
	if n := f.count("PUT other"); n != 0 {
		t.Fatalf("%d final PUTs after a mismatch", n)
	}
	up.Write(data[half:])
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.blobs["app@"+d.String()], data) {
		t.Error("the registry holds other bytes")
	}
}

// TestUploadRepositoryListed: a repository whose only content is an
// upload in progress is listed, also by a store started later over the
// same state directory, and is not once the upload is cancelled.
func TestUploadRepositoryListed(t *testing.T) {
	f := newFakeRegistry()
	f.noCatalog = true
	dir := t.TempDir()
	ctx := context.Background()
	st := newTestStore(t, f, Options{StateDir: dir})
	r, _ := st.Repository("new/app")
	up, err := r.Uploads().Create(ctx, digest.FromString("x"))
	if err != nil {
		t.Fatal(err)
	}
	up.Close()
	// The state directory is the registry URL's: the same server.
	later, err := New(Options{URL: st.(*remoteStore).c.base.String(), StateDir: dir, RetryDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if c, err := later.Children(ctx, ""); err != nil || strings.Join(c, ",") != "new" {
			t.Fatalf("Children with an upload in new/app: %v, %v", c, err)
		}
	}
	r, _ = later.Repository("new/app")
	if err := r.Uploads().Cancel(ctx, up.ID()); err != nil {
		t.Fatal(err)
	}
	if c, err := later.Children(ctx, ""); err != nil || len(c) != 0 {
		t.Errorf("Children after the upload was cancelled: %v, %v", c, err)
	}
}

// TestOnePingPerRegistry: a registry without a bearer challenge is pinged
// when the store first calls it, not again for each repository.
func TestOnePingPerRegistry(t *testing.T) {
	f := newFakeRegistry()
	for i := range 5 {
		f.tag(fmt.Sprintf("r%d/app", i), "v1", []byte("x"))
	}
	st := newTestStore(t, f, Options{})
	ctx := context.Background()
	for i := range 5 {
		r, _ := st.Repository(fmt.Sprintf("r%d/app", i))
		if tags, err := r.Tags().List(ctx); err != nil || len(tags) != 1 {
			t.Fatalf("r%d: tags %v, %v", i, tags, err)
		}
		if _, err := r.Uploads().Create(ctx, digest.FromString("y")); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count("GET ping"); n > 2 {
		t.Errorf("%d pings for 5 repositories, want the first call's", n)
	}
}
