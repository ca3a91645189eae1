package s3

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver/s3/s3test"
)

// The S3 server the tests run against: a versitygw started by TestMain, or
// the one REGFS_S3_ENDPOINT names (with REGFS_S3_BUCKET, REGFS_S3_REGION and
// the standard AWS credentials variables).
var (
	testParams Params
	// skipReason, if set, skips every test that needs the server.
	skipReason string
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	if ep := os.Getenv("REGFS_S3_ENDPOINT"); ep != "" {
		testParams = Params{
			Endpoint: ep,
			Bucket:   os.Getenv("REGFS_S3_BUCKET"),
			Region:   os.Getenv("REGFS_S3_REGION"),
		}
		if testParams.Bucket == "" {
			fmt.Fprintln(os.Stderr, "REGFS_S3_ENDPOINT is set but REGFS_S3_BUCKET is not")
			return 1
		}
		return m.Run()
	}
	srv, err := s3test.Launch()
	if errors.Is(err, s3test.ErrNotInstalled) {
		msg := err.Error() + ", and REGFS_S3_ENDPOINT is not set"
		if s3test.InCI() {
			fmt.Fprintf(os.Stderr, "\nFAIL: the S3 driver tests cannot run in CI: %s\n\n", msg)
			return 1
		}
		fmt.Fprintf(os.Stderr, "\n*** S3 DRIVER TESTS SKIPPED: %s ***\n\n", msg)
		skipReason = msg
		return m.Run()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting versitygw: %v\n", err)
		return 1
	}
	defer srv.Stop()
	testParams = Params{
		Endpoint:    srv.Endpoint,
		Bucket:      "regfs-test",
		Region:      srv.Region,
		Credentials: srv.Credentials(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.CreateBucket(ctx, testParams.Bucket); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: creating the test bucket: %v\n%s", err, srv.Log())
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "versitygw log:\n%s", srv.Log())
	}
	return code
}

// requireServer skips tb when no server is available (see TestMain).
func requireServer(tb testing.TB) {
	tb.Helper()
	if skipReason != "" {
		tb.Skip("S3 tests skipped: " + skipReason)
	}
}

// newTestDriver returns a driver under its own root prefix, and checks when
// the test ends that nothing is left under it: no object, and no multipart
// upload (which the driver's own listings cannot see). Anything left is then
// removed so that one failure does not cascade.
func newTestDriver(tb testing.TB, tweak func(*impl)) *impl {
	tb.Helper()
	requireServer(tb)
	p := testParams
	p.RootDirectory = "t-" + strings.ToLower(rand.Text())
	d, err := newImpl(context.Background(), p)
	if err != nil {
		tb.Fatal(err)
	}
	if tweak != nil {
		tweak(d)
	}
	tb.Cleanup(func() { checkEmpty(tb, d) })
	return d
}

func checkEmpty(tb testing.TB, d *impl) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var keys []string
	pages := s3.NewListObjectsV2Paginator(d.client, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &d.prefix})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			tb.Errorf("listing %s: %v", d.prefix, err)
			return
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	if len(keys) > 0 {
		tb.Errorf("%d keys left under %s: %q", len(keys), d.prefix, keys)
		for _, k := range keys {
			d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: aws.String(k)})
		}
	}
	ups, err := d.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: &d.prefix})
	if err != nil {
		tb.Errorf("listing multipart uploads under %s: %v", d.prefix, err)
		return
	}
	if len(ups.Uploads) > 0 {
		tb.Errorf("%d multipart uploads left under %s", len(ups.Uploads), d.prefix)
		for _, u := range ups.Uploads {
			d.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: u.Key, UploadId: u.UploadId})
		}
	}
}
