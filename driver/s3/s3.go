// Package s3 is a storage driver that keeps objects in an S3 bucket, or any
// S3-compatible server (versitygw, MinIO, Ceph RGW), through aws-sdk-go-v2.
//
// # Keys
//
// The driver path "/a/b" is the key "<root>/a/b", where <root> is
// Params.RootDirectory (no leading or trailing slash; empty for the top of
// the bucket). Directories are common prefixes: one exists while an object is
// below it. regfs never makes a key that is both an object and the prefix of
// another key ("a" and "a/b"), and the driver relies on that without checking
// it (which would cost a request per parent on every write): Stat asks for
// the object first, Delete of "/a" removes the keys below "a/" or else the
// key "a", never "ab". Keys below the root whose components are not valid
// driver path components (written by some other tool) are left out of List
// and Walk.
//
// # Reads
//
// Reader is one GET from the offset to the end of the object, or of the
// range driver.WithReadLength names: the block cache above asks for one
// block per GET and keeps several in flight for a sequential reader, so the
// driver does no read-ahead of its own. The HTTP client keeps up to
// maxIdleConns connections to the server open between requests, more than
// the cache's GETs in flight, so that each GET reuses one.
//
// # Writes
//
// The state of a writer lives in the bucket, not in the process, so that an
// upload survives a restart of regfs: Close and Commit make the bytes written
// so far the object itself (PutObject when they fit in one part, otherwise by
// completing a multipart upload). A writer reopened with append starts a new
// multipart upload whose first parts are server-side copies of the existing
// object (UploadPartCopy), or re-sends its bytes when it is smaller than the
// 5 MiB minimum part. A writer sends its full parts in the background, four
// at a time at most, while Write takes the next bytes. See writer.go for
// the part sizes and the bounds on memory. A process that dies
// between two Closes leaves an incomplete multipart upload, invisible but
// billed on AWS: give the bucket an AbortIncompleteMultipartUpload lifecycle
// rule.
//
// # Failures
//
// Every request runs under its own deadline (Params.Timeout, longer for
// requests that move many bytes) and is retried with backoff by the SDK's
// standard retryer on throttling and 5xx answers (Params.MaxAttempts). A
// missing key is driver.PathNotFoundError (a missing bucket is not: New
// checks the bucket); any other failure is a *driver.Error naming the S3
// operation, the path and the s3://bucket/key URL.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
)

// Name is the driver's name in errors and logs.
const Name = "s3"

// Defaults for the zero values of Params.
const (
	DefaultTimeout     = time.Minute
	DefaultMaxAttempts = 5
	// defaultRegion is used when neither Params nor the AWS configuration
	// names one, which is common with a local S3-compatible server.
	defaultRegion = "us-east-1"
)

// maxIdleConns is how many connections to the server the HTTP client keeps
// open between requests (the SDK's default is 10): more than the block
// cache's GETs in flight (cmd/regfs reads 8 blocks ahead of each sequential
// reader on S3) plus a writer's, so that a GET reuses a connection instead
// of opening one.
const maxIdleConns = 64

// openConns is how many requests New checks the bucket with at once: as
// many as a layer's lookup makes at once (the link's HEAD and the data's
// first bytes), so that the first lookup after a mount finds as many
// connections open and dials none.
const openConns = 2

// minThroughput is the slowest transfer rate a request that moves bytes is
// allowed before its deadline: such a request gets Params.Timeout plus one
// second per MiB, so a 256 MiB part is not cut off by a one-minute timeout.
const minThroughput = 1 << 20 // bytes per second

// Params configures the driver. Only Bucket is required.
type Params struct {
	// Bucket holds the objects. It must exist.
	Bucket string
	// Region of the bucket. Empty: the AWS configuration (AWS_REGION, shared
	// config), else us-east-1.
	Region string
	// Endpoint is the server's URL, e.g. "http://127.0.0.1:7070" for a local
	// versitygw. Empty: AWS itself (or AWS_ENDPOINT_URL).
	Endpoint string
	// RootDirectory is the key prefix inside the bucket under which the
	// driver keeps everything, e.g. "regfs" or "team/registry". Empty: the
	// whole bucket.
	RootDirectory string
	// Credentials signs the requests. Nil: the SDK's default chain (the
	// standard AWS_* environment variables, then the shared config and
	// credentials files, then the instance role).
	Credentials aws.CredentialsProvider
	// VirtualHostedStyle addresses the bucket as a host name
	// (bucket.s3.amazonaws.com) instead of in the path. Path style, the
	// default, is what third-party servers support.
	VirtualHostedStyle bool
	// Timeout is the deadline of one request (DefaultTimeout if zero); a
	// request that moves bytes gets one more second per MiB. For a Reader it
	// is the longest wait for the response or for the next bytes of the body.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one request, retries included
	// (DefaultMaxAttempts if zero).
	MaxAttempts int
	// HTTPClient, if not nil, sends the requests (for tests and proxies).
	HTTPClient *http.Client
}

// New returns a driver for the bucket, wrapped in the base checks. It checks
// that the bucket is reachable (HeadBucket), so that a wrong bucket, endpoint
// or credentials fail at mount time rather than on the first read.
func New(ctx context.Context, p Params) (driver.StorageDriver, error) {
	d, err := newImpl(ctx, p)
	if err != nil {
		return nil, err
	}
	return base.New(d), nil
}

// impl is the unchecked driver that base.New wraps.
type impl struct {
	client  *s3.Client
	bucket  string
	prefix  string // RootDirectory + "/", or "" for the whole bucket
	timeout time.Duration

	// The S3 limits, fields so that tests can exercise multipart code with
	// small objects. Never changed after newImpl.
	minPartSize int64 // smallest part but the last (5 MiB)
	maxCopySize int64 // largest CopyObject and UploadPartCopy (5 GiB)
	// A writer's part sizes, see partSize.
	writePartMin, writePartMax int64
	// sends holds a token per part being sent in the background, by all
	// the writers (driverPartsInFlight).
	sends chan struct{}
}

func newImpl(ctx context.Context, p Params) (*impl, error) {
	fail := func(err error) error {
		return &driver.Error{Driver: Name, Op: "New", Path: p.Bucket + "/" + p.RootDirectory, Err: err}
	}
	if p.Bucket == "" {
		return nil, fail(errors.New("no bucket given"))
	}
	root := strings.Trim(p.RootDirectory, "/")
	if root != "" && !driver.ValidPath("/"+root) {
		return nil, fail(fmt.Errorf("invalid root directory %q", p.RootDirectory))
	}
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	client, err := newClient(ctx, p)
	if err != nil {
		return nil, fail(err)
	}
	d := &impl{
		client:       client,
		bucket:       p.Bucket,
		timeout:      p.Timeout,
		minPartSize:  5 << 20,
		maxCopySize:  5 << 30,
		writePartMin: minWritePart,
		writePartMax: maxWritePart,
		sends:        make(chan struct{}, driverPartsInFlight),
	}
	if root != "" {
		d.prefix = root + "/"
	}
	if err := d.checkBucket(ctx, openConns); err != nil {
		return nil, fail(fmt.Errorf("bucket %q: %w", p.Bucket, err))
	}
	return d, nil
}

// checkBucket checks that the bucket is reachable with n HeadBuckets at
// once, each holding its connection until all have one (or connWait has
// passed), so that the client keeps n connections open afterwards: the
// first requests made at once (a layer's lookup makes two) then dial none.
func (d *impl) checkBucket(ctx context.Context, n int) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	var got atomic.Int32
	all := make(chan struct{})
	var allOnce sync.Once
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		if got.Add(1) >= int32(n) {
			allOnce.Do(func() { close(all) })
		}
		t := time.NewTimer(connWait)
		defer t.Stop()
		select {
		case <-all:
		case <-t.C:
		case <-ctx.Done():
		}
	}})
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := d.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &d.bucket})
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// connWait bounds how long checkBucket's requests wait for each other's
// connections.
const connWait = time.Second

// newClient returns the SDK client that p describes.
func newClient(ctx context.Context, p Params) (*s3.Client, error) {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = p.MaxAttempts })
		}),
	}
	if p.Region != "" {
		opts = append(opts, config.WithRegion(p.Region))
	}
	if p.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(p.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if p.Endpoint != "" {
			o.BaseEndpoint = aws.String(p.Endpoint)
		}
		o.UsePathStyle = !p.VirtualHostedStyle
		if p.HTTPClient != nil {
			o.HTTPClient = p.HTTPClient
		} else {
			o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
				t.MaxIdleConns = maxIdleConns
				t.MaxIdleConnsPerHost = maxIdleConns
			})
		}
		// Third-party servers do not all support the flexible checksums
		// the SDK sends by default; only send and check them where the API
		// requires it (DeleteObjects).
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

func (d *impl) Name() string { return Name }

// key returns the object key of a driver path other than "/".
func (d *impl) key(path string) string { return d.prefix + path[1:] }

// dirPrefix returns the key prefix of the children of the directory at path.
func (d *impl) dirPrefix(path string) string {
	if path == "/" {
		return d.prefix
	}
	return d.key(path) + "/"
}

// callCtx returns the context of one request that moves n bytes.
func (d *impl) callCtx(ctx context.Context, n int64) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.timeout+time.Duration(n/minThroughput)*time.Second)
}

// fail turns the error of a request about path into the driver's errors.
func (d *impl) fail(op, path string, err error) error {
	if isNotFound(err) {
		return driver.PathNotFoundError{Path: path, Driver: Name}
	}
	return d.opErr(op, path, err)
}

// opErr wraps the failure of request op about path, with the bucket and key
// in the message so that a log line locates it without the configuration.
func (d *impl) opErr(op, path string, err error) error {
	return &driver.Error{Driver: Name, Op: op, Path: path, Err: fmt.Errorf("%s: %w", d.url(path), err)}
}

// url names the object or directory at path, as s3://bucket/key.
func (d *impl) url(path string) string {
	if path == "/" {
		return "s3://" + d.bucket + "/" + d.prefix
	}
	return "s3://" + d.bucket + "/" + d.key(path)
}

// isNotFound reports whether err says the key does not exist. A missing
// bucket (NoSuchBucket) is not a missing key: it is a configuration error
// and must not look like an empty directory.
func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	return false
}

// isInvalidRange reports whether err is the answer to a range that starts at
// or beyond the end of the object.
func isInvalidRange(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange"
}

// head returns the size, modification time and ETag of the object at path.
func (d *impl) head(ctx context.Context, path string) (*s3.HeadObjectOutput, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	out, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(path))})
	if err != nil {
		return nil, d.fail("HeadObject", path, err)
	}
	return out, nil
}

func (d *impl) GetContent(ctx context.Context, path string) ([]byte, error) {
	r, err := d.getWith(ctx, path, 0, 0, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readAll(r, make([]byte, 0, max(0, aws.ToInt64(r.out.ContentLength))))
}

func (d *impl) PutContent(ctx context.Context, path string, content []byte) error {
	return d.put(ctx, path, content)
}

// put stores content as the object at path in one request.
func (d *impl) put(ctx context.Context, path string, content []byte) error {
	ctx, cancel := d.callCtx(ctx, int64(len(content)))
	defer cancel()
	_, err := d.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &d.bucket,
		Key:           aws.String(d.key(path)),
		Body:          bytes.NewReader(content),
		ContentLength: aws.Int64(int64(len(content))),
	})
	if err != nil {
		return d.opErr("PutObject", path, err)
	}
	return nil
}

func (d *impl) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	if path == "/" {
		return driver.FileInfo{Path: path, IsDir: true}, nil
	}
	out, err := d.head(ctx, path)
	if err == nil {
		return driver.FileInfo{
			Path:    path,
			Size:    aws.ToInt64(out.ContentLength),
			ModTime: aws.ToTime(out.LastModified),
		}, nil
	}
	if !driver.IsNotFound(err) {
		return driver.FileInfo{}, err
	}
	isDir, err := d.hasChildren(ctx, path)
	if err != nil {
		return driver.FileInfo{}, err
	}
	if !isDir {
		return driver.FileInfo{}, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	return driver.FileInfo{Path: path, IsDir: true}, nil
}

// hasChildren reports whether any key starts with the directory prefix of
// path, which is what makes it a directory.
func (d *impl) hasChildren(ctx context.Context, path string) (bool, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	out, err := d.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket:  &d.bucket,
		Prefix:  aws.String(d.dirPrefix(path)),
		MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return false, d.opErr("ListObjectsV2", path, err)
	}
	return len(out.Contents) > 0, nil
}

// reportSize tells the caller of Reader the object's size, if it asked
// (driver.WithSizeReport): the total of the answer's Content-Range, or for
// an answer without a range (the whole object) its length.
func reportSize(ctx context.Context, out *s3.GetObjectOutput) {
	if out.ContentRange == nil {
		if out.ContentLength != nil {
			driver.ReportSize(ctx, *out.ContentLength)
		}
		return
	}
	if n, ok := rangeTotal(*out.ContentRange); ok {
		driver.ReportSize(ctx, n)
	}
}

// rangeTotal returns the object size a Content-Range header names
// ("bytes 0-99/1234"), and false when it names none ("bytes 0-99/*").
func rangeTotal(contentRange string) (int64, bool) {
	_, total, ok := strings.Cut(contentRange, "/")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(total, 10, 64)
	return n, err == nil && n >= 0
}
