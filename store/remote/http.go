package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/regfs/regfs/store"
)

// client speaks the distribution API to one registry. Authentication is
// go-containerregistry's: a transport per set of scopes (the bearer token
// flow asks for a token per scope; Basic ignores them), made on first use
// and kept.
type client struct {
	base     *url.URL // scheme://host[:port], no path
	reg      name.Registry
	inner    http.RoundTripper
	keychain authn.Keychain
	timeout  time.Duration
	attempts int
	delay    time.Duration

	mu         sync.Mutex
	transports map[string]http.RoundTripper // by joined scopes; guarded by mu
	// shared, once set, serves every scope: the registry answered the
	// ping without a bearer challenge (anonymous or Basic), where scopes
	// play no part. Guarded by mu.
	shared http.RoundTripper
	calls  map[string]int64 // requests by method and endpoint; guarded by mu
}

// endpoint names the kind of API path p is, for the counters.
func endpoint(p string) string {
	switch {
	case p == "/v2/" || p == "/v2":
		return "ping"
	case strings.HasPrefix(p, "/v2/_catalog"):
		return "catalog"
	case strings.Contains(p, "/blobs/uploads/"):
		return "uploads"
	case strings.Contains(p, "/blobs/"):
		return "blobs"
	case strings.Contains(p, "/manifests/"):
		return "manifests"
	case strings.HasSuffix(p, "/tags/list"):
		return "tags"
	}
	return "other"
}

// count records one request.
func (c *client) count(method, path string) {
	c.mu.Lock()
	c.calls[method+" "+endpoint(path)]++
	c.mu.Unlock()
}

// newClient checks the URL and builds the TLS settings.
func newClient(o Options) (*client, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("registry URL %q: want http://HOST[:PORT] or https://HOST[:PORT]", o.URL)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("registry URL %q: only scheme and host (credentials come from the docker config or a credential helper)", redactURL(u))
	}
	var nameOpts []name.Option
	if u.Scheme == "http" {
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("registry URL %q: %v", o.URL, err)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("registry CA: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry CA %s: no PEM certificate in it", o.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	if o.Insecure {
		tlsConf.InsecureSkipVerify = true
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	inner := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	attempts := o.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	delay := o.RetryDelay
	if delay == 0 {
		delay = DefaultRetryDelay
	}
	return &client{
		base:       &url.URL{Scheme: u.Scheme, Host: u.Host},
		reg:        reg,
		inner:      inner,
		keychain:   kc,
		timeout:    timeout,
		attempts:   attempts,
		delay:      max(delay, 0),
		transports: map[string]http.RoundTripper{},
		calls:      map[string]int64{},
	}, nil
}

// Scopes of the bearer token flow.
func pullScope(repo string) string     { return "repository:" + repo + ":pull" }
func pushScope(repo string) string     { return "repository:" + repo + ":pull,push" }
func deleteScope(repo string) string   { return "repository:" + repo + ":delete" }
func catalogScope() string             { return "registry:catalog:*" }
func repoScopes(repo string) []string  { return []string{pushScope(repo)} }
func pullScopes(repo string) []string  { return []string{pullScope(repo)} }
func writeScopes(repo string) []string { return []string{pushScope(repo), deleteScope(repo)} }

// transport returns the authenticated transport for scopes, making it on
// first use (which pings the registry and, for a bearer registry, fetches a
// token). A registry without a bearer challenge gets one transport for
// every scope: without it each repository's first request cost a ping and
// a reading of the credentials.
func (c *client) transport(ctx context.Context, scopes []string) (http.RoundTripper, error) {
	key := strings.Join(scopes, " ")
	c.mu.Lock()
	t := c.transports[key]
	if c.shared != nil {
		t = c.shared
	}
	c.mu.Unlock()
	if t != nil {
		return t, nil
	}
	auth, err := authn.Resolve(ctx, c.keychain, c.reg)
	if err != nil {
		return nil, &store.StorageError{Op: "auth", Path: "/v2/", Err: fmt.Errorf("reading credentials: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.pingTLS(ctx); err != nil {
		return nil, err
	}
	ping := &pingSeen{RoundTripper: c.inner}
	t, err = transport.NewWithContext(ctx, c.reg, auth, ping, scopes)
	if err != nil {
		return nil, authError(err)
	}
	c.mu.Lock()
	c.transports[key] = t
	if ping.answered() && !ping.bearer() {
		c.shared = t
	}
	c.mu.Unlock()
	return t, nil
}

// pingSeen passes requests on and notes the registry's answers to the
// handshake's ping (GET /v2/): whether one came, and whether one asked for
// a bearer token.
type pingSeen struct {
	http.RoundTripper
	mu        sync.Mutex
	seen      bool // guarded by mu
	hasBearer bool // guarded by mu
}

func (p *pingSeen) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.RoundTripper.RoundTrip(req)
	if err == nil && (req.URL.Path == "/v2/" || req.URL.Path == "/v2") {
		p.mu.Lock()
		p.seen = true
		for _, h := range resp.Header.Values("WWW-Authenticate") {
			if len(h) >= 6 && strings.EqualFold(h[:6], "bearer") {
				p.hasBearer = true
			}
		}
		p.mu.Unlock()
	}
	return resp, err
}

func (p *pingSeen) answered() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

func (p *pingSeen) bearer() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hasBearer
}

// pingTLS checks that an https registry answers over TLS. Without it a
// registry on a loopback or private address whose certificate is refused
// would be pinged again over plain http by go-containerregistry (which
// treats such addresses as maybe insecure), and the error would be that
// attempt's, not the certificate's; after it, the https ping succeeds and
// no request is ever sent in the clear.
func (c *client) pingTLS(ctx context.Context) error {
	if c.base.Scheme != "https" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := c.inner.RoundTrip(req)
	if err != nil {
		return &store.StorageError{Op: "GET", Path: "/v2/", Err: redactErr(err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return nil
}

// authError turns a failed handshake into a store error: a refusal of the
// credentials is a denial (EACCES); anything else (no answer) a failed call.
func authError(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		he := &HTTPError{Method: "GET", Path: "/v2/ (authentication)", Status: te.StatusCode}
		for _, d := range te.Errors {
			he.Codes = append(he.Codes, OCIError{Code: string(d.Code), Message: d.Message})
		}
		return he.storageError()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("registry did not answer the authentication handshake: %w", context.DeadlineExceeded)
	}
	return &store.StorageError{Op: "auth", Path: "/v2/", Err: redactErr(err)}
}

// request is one API call.
type request struct {
	method string
	path   string // /v2/...; or a full URL (a Location the registry gave)
	query  url.Values
	header http.Header
	body   []byte // replayed on retries
	// bodyFn, when set, makes a fresh body per attempt instead (a
	// stream); with it the call is tried once.
	bodyFn func() (io.Reader, int64, error)
	scopes []string
	// want lists the statuses that are success; others are errors.
	want []int
	// stream leaves the body open for the caller (GET of a blob); the
	// timeout then applies to each read instead of the whole call.
	stream bool
}

// url resolves the request's path against the registry.
func (c *client) url(r *request) (*url.URL, error) {
	u, err := c.base.Parse(r.path)
	if err != nil {
		return nil, fmt.Errorf("bad URL from the registry: %v", err)
	}
	if len(r.query) > 0 {
		q := u.Query()
		for k, vs := range r.query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	return u, nil
}

// do runs r, retrying transport failures, 429 and 5xx with exponential
// backoff (idempotent calls and those with a replayable body), and returns
// the response for a wanted status. Any other status is an *HTTPError,
// whose body (the OCI error list) has been read. The response body of a
// success is read whole unless r.stream.
func (c *client) do(ctx context.Context, r *request) (*http.Response, []byte, error) {
	t, err := c.transport(ctx, r.scopes)
	if err != nil {
		return nil, nil, err
	}
	u, err := c.url(r)
	if err != nil {
		return nil, nil, err
	}
	attempts := c.attempts
	if r.bodyFn != nil {
		attempts = 1
	}
	delay := c.delay
	var lastErr error
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, nil, c.callError(r, u, ctx.Err())
			}
			delay *= 2
		}
		resp, body, err := c.once(ctx, t, r, u)
		if err == nil {
			return resp, body, nil
		}
		lastErr = err
		if !retryable(ctx, err) {
			break
		}
	}
	return nil, nil, lastErr
}

// once is one attempt of do.
func (c *client) once(ctx context.Context, t http.RoundTripper, r *request, u *url.URL) (*http.Response, []byte, error) {
	var body io.Reader
	var length int64
	if r.bodyFn != nil {
		b, n, err := r.bodyFn()
		if err != nil {
			return nil, nil, err
		}
		body, length = b, n
	} else if r.body != nil {
		body, length = bytes.NewReader(r.body), int64(len(r.body))
	}
	rctx, cancel := context.WithCancel(ctx)
	// A stalled registry: no progress for the timeout ends the call.
	watch := newIdleTimer(c.timeout, cancel)
	req, err := http.NewRequestWithContext(rctx, r.method, u.String(), body)
	if err != nil {
		watch.stop()
		cancel()
		return nil, nil, err
	}
	if body != nil {
		req.ContentLength = length
		if length == 0 {
			req.Body = http.NoBody
		}
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	c.count(r.method, u.Path)
	resp, err := t.RoundTrip(req)
	if err != nil {
		watch.stop()
		cancel()
		if watch.fired() {
			err = fmt.Errorf("no answer within %v: %w", c.timeout, context.DeadlineExceeded)
		}
		return nil, nil, c.callError(r, u, err)
	}
	ok := false
	for _, s := range r.want {
		ok = ok || resp.StatusCode == s
	}
	if ok && r.stream {
		watch.reset()
		resp.Body = &watchedBody{rc: resp.Body, watch: watch, cancel: cancel, timeout: c.timeout}
		return resp, nil, nil
	}
	defer cancel()
	defer watch.stop()
	data, rerr := io.ReadAll(&watchedBody{rc: resp.Body, watch: watch, cancel: cancel, timeout: c.timeout})
	resp.Body.Close()
	if !ok {
		return nil, nil, newHTTPError(r.method, u, resp, data).storageError()
	}
	if rerr != nil {
		return nil, nil, c.callError(r, u, rerr)
	}
	return resp, data, nil
}

// callError wraps a failure without a status (a transport error, a
// timeout) with the call it failed, naming the path only: a query or a
// Location may carry a signed URL.
func (c *client) callError(r *request, u *url.URL, err error) error {
	return &store.StorageError{Op: r.method, Path: u.Path, Err: redactErr(err)}
}

// retryable tells whether a failed attempt is worth another: a transport
// error, 429, 5xx; never once ctx is done.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status == http.StatusTooManyRequests || he.Status >= 500
	}
	// A registry that stalled for the whole timeout is not asked again:
	// the caller gets ETIMEDOUT after one timeout, not several.
	var se *store.StorageError
	return errors.As(err, &se) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// idleTimer cancels a call that makes no progress for its timeout.
type idleTimer struct {
	t       *time.Timer
	d       time.Duration
	mu      sync.Mutex
	didFire bool // guarded by mu
}

func newIdleTimer(d time.Duration, cancel func()) *idleTimer {
	it := &idleTimer{d: d}
	it.t = time.AfterFunc(d, func() {
		it.mu.Lock()
		it.didFire = true
		it.mu.Unlock()
		cancel()
	})
	return it
}

func (it *idleTimer) reset() { it.t.Reset(it.d) }
func (it *idleTimer) stop()  { it.t.Stop() }
func (it *idleTimer) fired() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.didFire
}

// watchedBody restarts the idle timer on every read that returns bytes, and
// reports a read the timer ended as a timeout.
type watchedBody struct {
	rc      io.ReadCloser
	watch   *idleTimer
	cancel  func()
	timeout time.Duration
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.rc.Read(p)
	if n > 0 {
		w.watch.reset()
	}
	if err != nil && err != io.EOF && w.watch.fired() {
		err = fmt.Errorf("registry stalled for %v: %w", w.timeout, context.DeadlineExceeded)
	}
	return n, err
}

// drainOnClose is how much of an unread body Close reads away, so that
// the connection serves the next request: a block load reads exactly its
// bytes and never sees the EOF, and closing a body before its EOF closes
// the connection.
const drainOnClose = 64 << 10

func (w *watchedBody) Close() error {
	_, _ = io.Copy(io.Discard, io.LimitReader(w.rc, drainOnClose))
	w.watch.stop()
	err := w.rc.Close()
	w.cancel()
	return err
}

// redactURL prints u without its query and user information.
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}

// redactErr drops the URL (and its query, which may be signed) from a
// *url.Error, keeping what went wrong.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// contentRange is the Content-Range of a PATCH of n bytes at off.
func contentRange(off, n int64) string {
	return strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+n-1, 10)
}
