package s3

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		msg := "versitygw is not installed (scripts/versitygw.sh install), and REGFS_S3_ENDPOINT is not set"
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "\nFAIL: the S3 driver tests cannot run in CI: %s\n\n", msg)
			return 1
		}
		fmt.Fprintf(os.Stderr, "\n*** S3 DRIVER TESTS SKIPPED: %s ***\n\n", msg)
		skipReason = msg
		return m.Run()
	}
	srv, err := startVersitygw(bin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting versitygw: %v\n", err)
		return 1
	}
	defer srv.stop()
	testParams = Params{
		Endpoint:    srv.endpoint,
		Bucket:      "regfs-test",
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(srv.accessKey, srv.secretKey, ""),
	}
	if err := createBucket(testParams); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: creating the test bucket: %v\n%s", err, srv.log())
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "versitygw log:\n%s", srv.log())
	}
	return code
}

// versitygw is a running versitygw with a posix backend in a temporary
// directory.
type versitygw struct {
	cmd                  *exec.Cmd
	dir                  string
	endpoint             string
	accessKey, secretKey string
	exited               chan struct{} // closed when the process is gone
}

// startVersitygw starts versitygw on a free port of 127.0.0.1 and waits
// until its health endpoint answers, or the process exits, or 30 s pass.
func startVersitygw(bin string) (_ *versitygw, err error) {
	dir, err := os.MkdirTemp("", "regfs-versitygw-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, "root"), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	v := &versitygw{
		dir:       dir,
		endpoint:  "http://" + net.JoinHostPort("127.0.0.1", port),
		accessKey: "regfs-test",
		secretKey: rand.Text(),
		exited:    make(chan struct{}),
	}
	v.cmd = exec.Command(bin,
		"--port", "127.0.0.1:"+port,
		"--health", "/health",
		"--quiet",
		"posix", filepath.Join(dir, "root"))
	v.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+v.accessKey, "ROOT_SECRET_KEY="+v.secretKey)
	v.cmd.Stdout, v.cmd.Stderr = logFile, logFile
	if err := v.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		v.cmd.Wait()
		close(v.exited)
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-v.exited:
			return nil, fmt.Errorf("versitygw exited (%v):\n%s", v.cmd.ProcessState, v.log())
		default:
		}
		resp, err := http.Get(v.endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return v, nil
			}
		}
		if time.Now().After(deadline) {
			v.stop()
			return nil, fmt.Errorf("versitygw not healthy after 30s (last error %v):\n%s", err, v.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process (SIGTERM, then SIGKILL after 10 s) and removes its
// directory.
func (v *versitygw) stop() {
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.exited:
	case <-time.After(10 * time.Second):
		v.cmd.Process.Kill()
		<-v.exited
	}
	os.RemoveAll(v.dir)
}

func (v *versitygw) log() string {
	b, _ := os.ReadFile(filepath.Join(v.dir, "log"))
	return string(b)
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

func createBucket(p Params) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := newClient(ctx, p)
	if err != nil {
		return err
	}
	_, err = client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(p.Bucket)})
	return err
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
