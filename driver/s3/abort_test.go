package s3

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
)

// failing passes requests to the server, except that it answers the
// operations fail names with 403 AccessDenied (an error the SDK does not
// retry) once the first skip of them went through.
type failing struct {
	mu   sync.Mutex
	fail map[string]int // operation -> how many still go through
}

func (f *failing) RoundTrip(req *http.Request) (*http.Response, error) {
	op := opOf(req)
	f.mu.Lock()
	n, ok := f.fail[op]
	if ok && n > 0 {
		f.fail[op] = n - 1
	}
	f.mu.Unlock()
	if !ok || n > 0 {
		return http.DefaultTransport.RoundTrip(req)
	}
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>failed by the test</Message></Error>`
	return &http.Response{
		StatusCode: http.StatusForbidden, Status: "403 Forbidden", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/xml"}},
		Body:   io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		Request: req,
	}, nil
}

// failingDriver is smallParts with requests through f: 5 MiB parts,
// copies of at most 10 MiB.
func failingDriver(t *testing.T, f *failing) (driver.StorageDriver, *impl) {
	d := newTestDriver(t, func(d *impl) {
		d.writePartMin, d.writePartMax = 5<<20, 5<<20
		d.maxCopySize = 10 << 20
	})
	p := testParams
	p.HTTPClient = &http.Client{Transport: f}
	client, err := newClient(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	d.client = client
	return base.New(d), d
}

// multipartUploads counts the incomplete multipart uploads under d's root.
func multipartUploads(t *testing.T, d *impl) int {
	t.Helper()
	ups, err := d.client.ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: &d.prefix})
	if err != nil {
		t.Fatal(err)
	}
	return len(ups.Uploads)
}

// TestWriterAbortsOnFailure: a writer whose multipart upload fails part
// way (a part, the completion, or the server-side copy of the object it
// appends to) leaves no incomplete multipart upload in the bucket once
// closed: ListMultipartUploads is empty (newTestDriver's cleanup checks it
// too).
func TestWriterAbortsOnFailure(t *testing.T) {
	cases := []struct {
		name   string
		fail   map[string]int
		append bool // append to an object of 11 MiB (copied server side)
	}{
		{"SecondPart", map[string]int{"UploadPart": 1}, false},
		{"Complete", map[string]int{"CompleteMultipartUpload": 0}, false},
		{"Copy", map[string]int{"UploadPartCopy": 0}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &failing{fail: map[string]int{}}
			d, raw := failingDriver(t, f)
			ctx := t.Context()
			if c.append {
				if err := d.PutContent(ctx, "/obj", randomBytes(11<<20, 1)); err != nil {
					t.Fatal(err)
				}
				defer d.Delete(ctx, "/obj")
			}
			f.mu.Lock()
			f.fail = c.fail
			f.mu.Unlock()
			w, err := d.Writer(ctx, "/obj", c.append)
			if err != nil {
				t.Fatal(err)
			}
			data := randomBytes(12<<20, 2) // three parts
			var werr error
			for rest := data; len(rest) > 0 && werr == nil; {
				n := min(len(rest), 1<<20)
				_, werr = w.Write(rest[:n])
				rest = rest[n:]
			}
			cerr := w.Close()
			if werr == nil && cerr == nil {
				t.Fatal("the writer succeeded with a failing server")
			}
			t.Logf("write: %v; close: %v", werr, cerr)
			if n := multipartUploads(t, raw); n != 0 {
				t.Errorf("%d incomplete multipart uploads after the failed writer was closed", n)
			}
			if !c.append {
				if _, err := d.Stat(ctx, "/obj"); !driver.IsNotFound(err) {
					t.Errorf("Stat after the failed writer = %v, want not found", err)
				}
			}
		})
	}
}
