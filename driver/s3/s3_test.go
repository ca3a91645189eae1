package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
	"github.com/regfs/regfs/driver/testsuite"
)

func TestSuite(t *testing.T) {
	requireServer(t)
	testsuite.RunWith(t, func(t *testing.T) driver.StorageDriver {
		return base.New(newTestDriver(t, nil))
	}, testsuite.Options{EmptyDirsListed: "versitygw's posix backend lists the directories of an object being written " +
		"before the object is there (TestServerListsEmptyDirs); S3 lists only keys"})
}

// recorder counts the requests a driver sends, by kind, so that tests can
// see which S3 operations a driver call used.
type recorder struct {
	mu    sync.Mutex
	calls []string // guarded by mu
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	op := opOf(req)
	r.mu.Lock()
	r.calls = append(r.calls, op)
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// opOf names the S3 operation of a request.
func opOf(req *http.Request) string {
	q := req.URL.Query()
	op := req.Method
	switch {
	case req.Header.Get("X-Amz-Copy-Source") != "" && q.Has("partNumber"):
		op = "UploadPartCopy"
	case req.Header.Get("X-Amz-Copy-Source") != "":
		op = "CopyObject"
	case req.Method == http.MethodPost && q.Has("uploads"):
		op = "CreateMultipartUpload"
	case req.Method == http.MethodPost && q.Has("uploadId"):
		op = "CompleteMultipartUpload"
	case req.Method == http.MethodDelete && q.Has("uploadId"):
		op = "AbortMultipartUpload"
	case req.Method == http.MethodPut && q.Has("partNumber"):
		op = "UploadPart"
	case req.Method == http.MethodPut:
		op = "PutObject"
	}
	return op
}

// take returns the calls so far and forgets them.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func count(calls []string, op string) int {
	n := 0
	for _, c := range calls {
		if c == op {
			n++
		}
	}
	return n
}

// smallParts makes a driver whose writers use 5 MiB parts (the S3 minimum)
// and whose copies are at most 10 MiB, so that the multipart code runs with
// objects of a few MiB; rec sees its requests.
func smallParts(t *testing.T) (driver.StorageDriver, *recorder) {
	rec := &recorder{}
	d := newTestDriver(t, func(d *impl) {
		d.writePartMin, d.writePartMax = 5<<20, 5<<20
		d.maxCopySize = 10 << 20
	})
	// Same bucket and root, requests through the recorder.
	p := testParams
	p.HTTPClient = &http.Client{Transport: rec}
	client, err := newClient(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	d.client = client
	return base.New(d), rec
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	rand.NewChaCha8(s).Read(b)
	return b
}

// write writes data through w in chunks of an odd size.
func write(t *testing.T, w driver.FileWriter, data []byte) {
	t.Helper()
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1<<20+7)
		if m, err := w.Write(rest[:n]); err != nil || m != n {
			t.Fatalf("Write = %d, %v; want %d", m, err, n)
		}
		rest = rest[n:]
	}
}

func wantContent(t *testing.T, d driver.StorageDriver, path string, want []byte) {
	t.Helper()
	got, err := d.GetContent(t.Context(), path)
	if err != nil {
		t.Fatalf("GetContent(%s): %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GetContent(%s): %d bytes differ from the %d expected", path, len(got), len(want))
	}
}

// TestWriterMultipart writes an object of several parts, then appends to it
// with writers that each start from what is in the bucket (as after a
// restart): large objects are copied server side, small ones re-sent.
func TestWriterMultipart(t *testing.T) {
	d, rec := smallParts(t)
	ctx := t.Context()
	path := "/upload/data"
	first := randomBytes(12<<20+5, 1) // parts of 5, 5 and 2 MiB

	w, err := d.Writer(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, first)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	calls := rec.take()
	if count(calls, "UploadPart") != 3 || count(calls, "CompleteMultipartUpload") != 1 || count(calls, "PutObject") != 0 {
		t.Errorf("writing 12 MiB in 5 MiB parts sent %q", calls)
	}
	wantContent(t, d, path, first)

	// Appending to 12 MiB: copied in two parts (at most 10 MiB each), then
	// the new bytes.
	second := randomBytes(3<<20, 2)
	rec.take()
	w, err = d.Writer(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != int64(len(first)) {
		t.Errorf("append Size() = %d, want %d", w.Size(), len(first))
	}
	write(t, w, second)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	calls = rec.take()
	if count(calls, "UploadPartCopy") != 2 || count(calls, "UploadPart") != 1 || slices.Contains(calls, "GET") {
		t.Errorf("appending 3 MiB to 12 MiB sent %q; want 2 copies, 1 upload, no GET", calls)
	}
	want := slices.Concat(first, second)
	wantContent(t, d, path, want)

	// An append writer that writes nothing changes nothing, and copies
	// nothing.
	rec.take()
	w, err = d.Writer(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if calls := rec.take(); slices.ContainsFunc(calls, func(c string) bool { return c != "HEAD" }) {
		t.Errorf("an empty append sent %q, want one HEAD", calls)
	}
	wantContent(t, d, path, want)

	if err := d.Delete(ctx, "/upload"); err != nil {
		t.Fatal(err)
	}
}

func TestWriterAppendSmall(t *testing.T) {
	d, rec := smallParts(t)
	ctx := t.Context()
	path := "/small"
	first := randomBytes(1<<20, 3)
	if err := d.PutContent(ctx, path, first); err != nil {
		t.Fatal(err)
	}
	rec.take()

	// Below the 5 MiB minimum part, the existing bytes start the buffer;
	// with 6 MiB more the object becomes a multipart upload.
	second := randomBytes(6<<20, 4)
	w, err := d.Writer(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, second)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	calls := rec.take()
	if count(calls, "UploadPartCopy") != 0 || count(calls, "UploadPart") != 2 || count(calls, "GET") != 1 {
		t.Errorf("appending 6 MiB to 1 MiB sent %q; want a GET and 2 parts", calls)
	}
	wantContent(t, d, path, slices.Concat(first, second))
	if err := d.Delete(ctx, path); err != nil {
		t.Fatal(err)
	}
}

// TestWriterCancelMultipart: cancelling a writer with parts sent aborts the
// upload (newTestDriver's cleanup fails the test if an upload is left) and
// deletes the earlier bytes.
func TestWriterCancelMultipart(t *testing.T) {
	d, rec := smallParts(t)
	ctx := t.Context()
	path := "/obj"
	w, err := d.Writer(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, randomBytes(7<<20, 5))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = d.Writer(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, randomBytes(11<<20, 6))
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if calls := rec.take(); count(calls, "AbortMultipartUpload") != 1 {
		t.Errorf("Cancel sent %q, want an abort", calls)
	}
	if _, err := d.Stat(ctx, path); !driver.IsNotFound(err) {
		t.Errorf("Stat after Cancel = %v, want not found", err)
	}
}

// TestMoveMultipartCopy: above the CopyObject limit, Move copies in parts.
func TestMoveMultipartCopy(t *testing.T) {
	d, rec := smallParts(t)
	ctx := t.Context()
	data := randomBytes(11<<20, 7)
	if err := d.PutContent(ctx, "/src", data); err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, "/small", []byte("small")); err != nil {
		t.Fatal(err)
	}
	rec.take()
	if err := d.Move(ctx, "/src", "/a/dst"); err != nil {
		t.Fatal(err)
	}
	if err := d.Move(ctx, "/small", "/a/small"); err != nil {
		t.Fatal(err)
	}
	calls := rec.take()
	if count(calls, "UploadPartCopy") != 2 || count(calls, "CopyObject") != 1 {
		t.Errorf("moving 11 MiB and 5 bytes sent %q; want 2 part copies and one CopyObject", calls)
	}
	wantContent(t, d, "/a/dst", data)
	wantContent(t, d, "/a/small", []byte("small"))
	for _, p := range []string{"/src", "/small"} {
		if _, err := d.Stat(ctx, p); !driver.IsNotFound(err) {
			t.Errorf("Stat(%s) after Move = %v, want not found", p, err)
		}
	}
	// A directory cannot be moved; nothing changes.
	err := d.Move(ctx, "/a", "/b")
	var de *driver.Error
	if !errors.As(err, &de) || !errors.Is(err, errMoveDir) {
		t.Errorf("Move of a directory = %v, want %v", err, errMoveDir)
	}
	if err := d.Delete(ctx, "/a"); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteBatches deletes more keys than one DeleteObjects takes.
func TestDeleteBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("puts 1001 objects")
	}
	d, rec := smallParts(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range deleteBatch + 1 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p := "/dir/" + strings.Repeat("x", i%3+1) + "/" + string(rune('a'+i%26)) + "-" + strconv.Itoa(i)
			if err := d.PutContent(ctx, p, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := d.PutContent(ctx, "/dir-kept", []byte("x")); err != nil {
		t.Fatal(err)
	}
	rec.take()
	if err := d.Delete(ctx, "/dir"); err != nil {
		t.Fatal(err)
	}
	if calls := rec.take(); count(calls, "POST") != 2 {
		t.Errorf("deleting 1001 keys sent %d DeleteObjects (POST ?delete), want 2", count(calls, "POST"))
	}
	if _, err := d.Stat(ctx, "/dir"); !driver.IsNotFound(err) {
		t.Errorf("Stat after Delete = %v", err)
	}
	wantContent(t, d, "/dir-kept", []byte("x"))
	if err := d.Delete(ctx, "/dir-kept"); err != nil {
		t.Fatal(err)
	}
}

// TestNewErrors: a bucket that does not exist fails New, not a later call
// with a "not found" that would look like an empty registry.
func TestNewErrors(t *testing.T) {
	requireServer(t)
	p := testParams
	p.Bucket = "regfs-no-such-bucket"
	_, err := New(t.Context(), p)
	var de *driver.Error
	if !errors.As(err, &de) || de.Op != "New" || driver.IsNotFound(err) {
		t.Errorf("New with a missing bucket = %v, want a *driver.Error from New", err)
	}
	p = testParams
	p.RootDirectory = "a//b"
	if _, err := New(t.Context(), p); err == nil {
		t.Error("New accepted root directory a//b")
	}
	if _, err := New(t.Context(), Params{}); err == nil {
		t.Error("New accepted no bucket")
	}
}

func TestPartSizes(t *testing.T) {
	d := &impl{writePartMin: minWritePart, writePartMax: maxWritePart}
	const tib = 1 << 40
	var size int64
	parts := 0
	for ; parts < maxParts; parts++ {
		ps := d.partSize(size)
		if ps < 5<<20 || ps > 5<<30 || ps%(1<<20) != 0 {
			t.Fatalf("part %d after %d bytes is %d bytes", parts+1, size, ps)
		}
		if size < 5000<<20 && ps != minWritePart {
			t.Fatalf("part after %d bytes is %d, want %d", size, ps, minWritePart)
		}
		size += ps
		if size >= tib && size-ps < tib {
			t.Logf("1 TiB takes %d parts", parts+1)
			if parts+1 > 6000 {
				t.Errorf("1 TiB takes %d parts, want at most 6000", parts+1)
			}
		}
	}
	t.Logf("%d parts hold %.2f TiB", maxParts, float64(size)/tib)
	if size < 2*tib {
		t.Errorf("%d parts hold only %d bytes, want 2 TiB", maxParts, size)
	}
}

func TestTreeCompare(t *testing.T) {
	want := []string{"/a", "/a/x", "/a/y/z", "/a-b", "/a.b", "/ab", "/b"}
	got := slices.Clone(want)
	rand.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
	slices.SortFunc(got, treeCompare)
	if !slices.Equal(got, want) {
		t.Errorf("sorted %q, want %q", got, want)
	}
}

// stallServer is an HTTP server that accepts HEAD (so New succeeds), and
// for GET sends the headers and a few bytes of the body, then stalls until
// the client gives up; with fail set it answers 503 SlowDown instead.
func stallServer(t *testing.T, fail bool) (*httptest.Server, *atomic.Int32) {
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		gets.Add(1)
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<Error><Code>SlowDown</Code><Message>slow down</Message></Error>`)
			return
		}
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("0123456789"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv, &gets
}

func fakeParams(srv *httptest.Server, timeout time.Duration) Params {
	return Params{
		Bucket:      "b",
		Endpoint:    srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("a", "s", ""),
		Timeout:     timeout,
		MaxAttempts: 3,
	}
}

// TestReaderStall: a body that stops coming fails the read after the
// timeout, instead of hanging a FUSE read forever.
func TestReaderStall(t *testing.T) {
	srv, _ := stallServer(t, false)
	d, err := New(t.Context(), fakeParams(srv, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.Reader(t.Context(), "/obj", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	buf, err := io.ReadAll(r)
	var de *driver.Error
	if string(buf) != "0123456789" || !errors.As(err, &de) || de.Op != "Read" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ReadAll = %q, %v; want the 10 bytes sent and a Read deadline error", buf, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the stalled read took %v to fail", took)
	}
}

// TestRetries: a throttled request is retried MaxAttempts times, then
// fails with a *driver.Error naming the operation and path, not "not found".
func TestRetries(t *testing.T) {
	srv, gets := stallServer(t, true)
	d, err := New(t.Context(), fakeParams(srv, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.GetContent(t.Context(), "/obj")
	var de *driver.Error
	if !errors.As(err, &de) || de.Op != "GetObject" || de.Path != "/obj" || driver.IsNotFound(err) {
		t.Errorf("GetContent from a throttling server = %v, want *driver.Error{Op: GetObject, Path: /obj}", err)
	}
	if n := gets.Load(); n != 3 {
		t.Errorf("server saw %d attempts, want 3", n)
	}
}

// TestRawKeys: keys are the paths under the root prefix, unchanged, so
// that a bucket written by distribution's S3 driver mounts as is.
func TestRawKeys(t *testing.T) {
	im := newTestDriver(t, nil)
	d := base.New(im)
	ctx := t.Context()
	if err := d.PutContent(ctx, "/docker/registry/v2/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	out, err := im.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &im.bucket, Key: aws.String(im.prefix + "docker/registry/v2/x")})
	if err != nil || aws.ToInt64(out.ContentLength) != 1 {
		t.Errorf("HeadObject of the raw key = %v", err)
	}
	if err := d.Delete(ctx, "/docker"); err != nil {
		t.Fatal(err)
	}
}
