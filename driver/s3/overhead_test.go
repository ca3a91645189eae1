package s3

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// answerHead answers every request with an empty 200, as a HEAD of a
// 10-byte object, without a server.
type answerHead struct{}

func (answerHead) Do(r *http.Request) (*http.Response, error) {
	h := http.Header{}
	h.Set("Content-Length", "10")
	h.Set("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT")
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

// BenchmarkClientCallOverhead measures what the driver's SDK client costs
// per request before and after the wire: a HeadObject (as a layer's lookup
// makes for the link) answered at once by an HTTP client that sends
// nothing. See "Fifth session" in docs/benchmarks.md (S5).
func BenchmarkClientCallOverhead(b *testing.B) {
	p := Params{Bucket: "b", Region: "us-east-1", Endpoint: "http://127.0.0.1:1",
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")}
	c, err := newClient(context.Background(), p)
	if err != nil {
		b.Fatal(err)
	}
	c = s3.New(c.Options(), func(o *s3.Options) { o.HTTPClient = answerHead{} })
	in := &s3.HeadObjectInput{Bucket: aws.String("b"), Key: aws.String("docker/registry/v2/repositories/app/_layers/sha256/ab/link")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.HeadObject(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}
