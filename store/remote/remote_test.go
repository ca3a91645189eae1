package remote

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

// staticKeychain gives every registry the same credentials.
type staticKeychain struct{ auth authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }

// newTestStore serves h on 127.0.0.1 and returns a store over it.
func newTestStore(t *testing.T, h http.Handler, o Options) store.Store {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	o.URL = srv.URL
	if o.RetryDelay == 0 {
		o.RetryDelay = time.Millisecond
	}
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	st, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func ociError(w http.ResponseWriter, status int, codes ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf(`{"code":%q,"message":"%s happened","detail":"sha256:%064d"}`, c, strings.ToLower(c), 1))
	}
	fmt.Fprintf(w, `{"errors":[%s]}`, strings.Join(parts, ","))
}

// TestErrors: the registry's answers become the store's errors, which fs
// maps to errnos: 404 the sentinel of what is missing, 401/403 EACCES, 429
// and 5xx retried then a storage failure, a manifest's error codes one
// problem each of a verification error.
func TestErrors(t *testing.T) {
	var busy, down atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(r.URL.Path, "/v2/app/blobs/"):
			ociError(w, http.StatusNotFound, "BLOB_UNKNOWN")
		case strings.HasPrefix(r.URL.Path, "/v2/denied/"):
			ociError(w, http.StatusForbidden, "DENIED")
		case r.URL.Path == "/v2/busy/tags/list":
			if busy.Add(1) < 3 {
				ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS")
				return
			}
			fmt.Fprint(w, `{"name":"busy","tags":["b","a"]}`)
		case r.URL.Path == "/v2/down/tags/list":
			down.Add(1)
			ociError(w, http.StatusServiceUnavailable, "UNAVAILABLE")
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v2/app/manifests/"):
			ociError(w, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID")
		default:
			ociError(w, http.StatusNotFound, "NAME_UNKNOWN")
		}
	})
	st := newTestStore(t, mux, Options{Attempts: 4})
	ctx := context.Background()
	repo := func(name string) store.Repository {
		r, err := st.Repository(name)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	d := digest.FromString("x")
	if _, err := repo("app").Layers().Stat(ctx, d); !errors.Is(err, store.ErrBlobUnknown) {
		t.Errorf("HEAD 404: %v, want ErrBlobUnknown", err)
	}
	if _, err := repo("app").Tags().Get(ctx, "v1"); !errors.Is(err, store.ErrTagUnknown) {
		t.Errorf("tag 404: %v, want ErrTagUnknown", err)
	}
	_, err := repo("denied").Tags().List(ctx)
	var se *store.StorageError
	if !errors.Is(err, syscall.EACCES) || !errors.As(err, &se) {
		t.Errorf("403: %v, want a StorageError caused by EACCES", err)
	}
	tags, err := repo("busy").Tags().List(ctx)
	if err != nil || strings.Join(tags, ",") != "a,b" || busy.Load() != 3 {
		t.Errorf("429 twice then 200: %v, %v after %d requests", tags, err, busy.Load())
	}
	_, err = repo("down").Tags().List(ctx)
	if !errors.As(err, &se) || se.Kind != nil || errors.Is(err, syscall.EACCES) || down.Load() != 4 {
		t.Errorf("503 always: %v (kind %v) after %d requests, want a StorageError after 4", err, se, down.Load())
	}
	_, err = repo("app").Manifests().Put(ctx, []byte(`{"schemaVersion":2}`), "v1", "")
	var v *store.ManifestVerificationError
	var blob *store.ManifestBlobUnknownError
	if !errors.As(err, &v) || len(v.Errs) != 3 || !errors.As(err, &blob) || !strings.Contains(err.Error(), "manifest_invalid happened") {
		t.Errorf("PUT 400 with three codes: %v, want a verification error with each", err)
	}
}

// TestStallTimesOut: a registry that stops sending, before its headers or
// in the middle of a body, fails the call with a timeout
// (context.DeadlineExceeded: ETIMEDOUT) instead of hanging, and the bytes
// read before are the registry's.
func TestStallTimesOut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	data := []byte(strings.Repeat("regfs", 1000))
	d := digest.FromBytes(data)
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case r.Method == http.MethodHead:
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		case strings.HasPrefix(r.URL.Path, "/v2/stall/tags/list"):
			<-release
		default: // a blob: half of it, then nothing
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.WriteHeader(http.StatusOK)
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	st := newTestStore(t, mux, Options{Timeout: 300 * time.Millisecond, Attempts: 2})
	ctx := context.Background()
	r, _ := st.Repository("stall")
	if _, err := r.Tags().List(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no headers: %v, want a timeout", err)
	}
	br, err := r.Layers().Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	buf := make([]byte, len(data))
	n, err := br.ReadAt(buf, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled body: %d bytes, %v, want a timeout", n, err)
	}
	if n > 0 && string(buf[:n]) != string(data[:n]) {
		t.Errorf("stalled body: the %d bytes read are not the registry's", n)
	}
}

// TestSecretsNotInErrors: a registry refusing Basic credentials gives
// EACCES, and neither the password nor its encoding is in the error.
func TestSecretsNotInErrors(t *testing.T) {
	const user, pass = "alice", "s3cret-Passw0rd"
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED")
	})
	st := newTestStore(t, mux, Options{Keychain: staticKeychain{authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})}})
	r, _ := st.Repository("app")
	_, err := r.Tags().List(context.Background())
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("401: %v, want EACCES", err)
	}
	enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	if err != nil && (strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), enc)) {
		t.Errorf("the error shows the credentials: %v", err)
	}
	_, err = r.Layers().Open(context.Background(), digest.FromString("x"))
	if err != nil && (strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), enc)) {
		t.Errorf("the error shows the credentials: %v", err)
	}
	_ = io.EOF
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
