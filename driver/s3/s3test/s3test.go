// Package s3test runs a real S3-compatible server for tests: versitygw with
// its posix backend in a temporary directory, on a free port of 127.0.0.1.
//
// Tests of the S3 driver and the integration tests that mount regfs on S3
// share it, so that both exercise the same server the same way. It does not
// import the S3 driver (the driver's own tests import it), and talks to the
// server with the AWS SDK alone.
//
// When versitygw is not installed, Start fails the test under CI (see
// internal/testenv),
// where it must run, and skips it elsewhere with a message that says how to
// install it (scripts/versitygw.sh install).
package s3test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/regfs/regfs/internal/testenv"
)

// Region is the region the server answers for and the clients sign with.
const Region = "us-east-1"

// Timing of start and stop.
const (
	// startTimeout bounds the wait for the health endpoint after the
	// process started.
	startTimeout = 30 * time.Second
	// stopTimeout is how long the process has to exit after SIGTERM
	// before it is killed.
	stopTimeout = 10 * time.Second
)

// ErrNotInstalled is returned by Launch when the versitygw binary is not on
// PATH.
var ErrNotInstalled = errors.New("versitygw is not installed (scripts/versitygw.sh install)")

// Server is a running versitygw. Its fields are read-only.
type Server struct {
	// Endpoint is the server's URL, http://127.0.0.1:PORT.
	Endpoint string
	// Region is the region to sign requests with (Region).
	Region string
	// AccessKey and SecretKey are the root user's credentials.
	AccessKey, SecretKey string
	// Bucket is a bucket that Start created; empty after Launch.
	Bucket string

	dir      string // temporary directory: root/ (the buckets) and log
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process is gone
	stopOnce sync.Once
	stopErr  error
}

// InCI reports whether the tests run in CI, where a missing server is a
// failure rather than a reason to skip: testenv.InCI, the rule every
// package's tests share.
func InCI() bool { return testenv.InCI() }

// SkipOrFail ends tb because no S3 server can run: it fails under CI and
// skips loudly elsewhere.
func SkipOrFail(tb testing.TB, err error) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("FAIL: S3 tests cannot run in CI: %v", err)
	}
	tb.Skipf("*** S3 TESTS SKIPPED: %v ***", err)
}

// Start launches a server for tb, creates the bucket Server.Bucket, and
// stops the server (removing its data) when tb ends. A missing versitygw
// fails tb under CI and skips it elsewhere.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := Launch()
	if errors.Is(err, ErrNotInstalled) {
		SkipOrFail(tb, err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.Bucket = "regfs-test"
	if err := s.CreateBucket(ctx, s.Bucket); err != nil {
		tb.Fatalf("creating bucket %s: %v\n%s", s.Bucket, err, s.Log())
	}
	return s
}

// Launch starts versitygw on a free port of 127.0.0.1, serving a new
// temporary directory, and returns once its health endpoint answers. It
// fails if the process exits first or is not healthy within 30 s; the
// error then carries the server's log. The caller must call Stop.
func Launch() (_ *Server, err error) {
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		return nil, ErrNotInstalled
	}
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
	s := &Server{
		Endpoint:  "http://" + net.JoinHostPort("127.0.0.1", port),
		Region:    Region,
		AccessKey: "regfs-test",
		SecretKey: rand.Text(),
		dir:       dir,
		exited:    make(chan struct{}),
	}
	s.cmd = exec.Command(bin,
		"--port", "127.0.0.1:"+port,
		"--health", "/health",
		"--region", Region,
		"--quiet",
		// Keep connections open between requests, as AWS S3 does;
		// versitygw closes each after one answer by default, which would
		// make every request of the clients under test dial anew.
		"--keep-alive",
		"posix", filepath.Join(dir, "root"))
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// If the test binary dies without running its cleanups (a -timeout
	// panic, a signal), the kernel stops the server too.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitHealthy(); err != nil {
		log := s.Log()
		s.Stop()
		return nil, fmt.Errorf("%w\nversitygw log:\n%s", err, log)
	}
	return s, nil
}

// waitHealthy polls the health endpoint until it answers 200, the process
// exits, or startTimeout passes.
func (s *Server) waitHealthy() error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("versitygw exited before it was healthy (%v)", s.cmd.ProcessState)
		default:
		}
		resp, err := client.Get(s.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /health: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw not healthy after %v: %v", startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the server's process (SIGTERM, SIGKILL after 10 s) and removes
// its directory, buckets included. Calling it again does nothing.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(stopTimeout):
				s.cmd.Process.Kill()
				<-s.exited
			}
		}
		s.stopErr = os.RemoveAll(s.dir)
	})
	return s.stopErr
}

// Log returns what the server printed so far ("" after Stop).
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	return string(b)
}

// Credentials returns a provider of the root user's keys.
func (s *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, "")
}

// Env returns the standard AWS environment variables that make an AWS
// client (regfs mount --driver s3) sign for this server, to append to a
// child process's environment.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
	}
}

// Client returns an SDK client for the server (path-style addressing, as a
// third-party server needs).
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		Credentials:  s.Credentials(),
		UsePathStyle: true,
		// As the regfs driver does: flexible checksums only where the API
		// requires them, which every S3-compatible server supports.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// CreateBucket creates the bucket name.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	return err
}

// NewBucket creates a bucket with a unique name for tb and removes it, with
// everything in it, when tb ends.
func (s *Server) NewBucket(tb testing.TB) string {
	tb.Helper()
	name := "t-" + strings.ToLower(rand.Text())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.CreateBucket(ctx, name); err != nil {
		tb.Fatalf("creating bucket %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.RemoveBucket(ctx, name); err != nil {
			tb.Errorf("removing bucket %s: %v", name, err)
		}
	})
	return name
}

// Keys returns the keys of every object in bucket under prefix, in the
// order the server lists them (lexical).
func (s *Server) Keys(ctx context.Context, bucket, prefix string) ([]string, error) {
	var keys []string
	pages := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

// RemoveBucket aborts the bucket's multipart uploads, deletes its objects
// and then the bucket.
func (s *Server) RemoveBucket(ctx context.Context, bucket string) error {
	c := s.Client()
	ups, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		return err
	}
	for _, u := range ups.Uploads {
		if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: u.Key, UploadId: u.UploadId}); err != nil {
			return err
		}
	}
	keys, err := s.Keys(ctx, bucket, "")
	if err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		objs := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			objs[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &bucket, Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)}})
		if err != nil {
			return err
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("deleting %s: %s: %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
		}
		keys = keys[n:]
	}
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
	return err
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
