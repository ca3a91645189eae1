package s3

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver"
)

func (d *impl) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	n, _ := driver.ReadLength(ctx)
	r, err := d.getWith(ctx, path, offset, n, nil)
	if err == nil {
		reportSize(ctx, r.out)
		return r, nil
	}
	if (offset == 0 && n == 0) || !isInvalidRange(err) {
		return nil, err
	}
	// The range starts at or beyond the end: at the end is a reader at EOF,
	// beyond it is an error. Only the size tells the two apart.
	out, herr := d.head(ctx, path)
	if herr != nil {
		return nil, herr
	}
	if aws.ToInt64(out.ContentLength) == offset {
		driver.ReportSize(ctx, offset)
		return io.NopCloser(eofReader{}), nil
	}
	return nil, driver.InvalidOffsetError{Path: path, Offset: offset, Driver: Name}
}

// eofReader is the body of a reader opened at the end of an object.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// getWith starts a GET of the object at path from offset, of n bytes if n
// is positive, else to the end; with ifMatch not nil, only if the object's
// ETag is still that.
//
// The request cannot run under a plain deadline, since the body of a large
// object may take longer than any fixed timeout to stream. Instead a timer
// bounds the wait for the response and then each wait for more of the body;
// a consumer that stops reading for a while is not penalized.
func (d *impl) getWith(ctx context.Context, path string, offset, n int64, ifMatch *string) (*reader, error) {
	ctx, cancel := context.WithCancel(ctx)
	r := &reader{d: d, path: path, timeout: d.timeout, cancel: cancel}
	r.timer = time.AfterFunc(d.timeout, cancel)
	in := &s3.GetObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(path)), IfMatch: ifMatch}
	if n > 0 {
		// A bounded range: the server sends only what is read, and the
		// connection, read to the end of its answer, serves the next GET.
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+n-1))
	} else if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := d.client.GetObject(ctx, in)
	if !r.timer.Stop() && err == nil {
		out.Body.Close()
		err = r.timeoutErr()
	}
	if err != nil {
		cancel()
		return nil, d.fail("GetObject", path, err)
	}
	r.out, r.body = out, out.Body
	return r, nil
}

// reader is the body of a GET, with the timer described at get.
type reader struct {
	d       *impl
	path    string
	timeout time.Duration
	out     *s3.GetObjectOutput
	body    io.ReadCloser
	timer   *time.Timer
	cancel  context.CancelFunc
}

func (r *reader) timeoutErr() error {
	return fmt.Errorf("no answer within %v: %w", r.timeout, context.DeadlineExceeded)
}

// Read returns the SDK's errors wrapped in *driver.Error, since base hands
// this stream to the caller as is.
func (r *reader) Read(p []byte) (int, error) {
	r.timer.Reset(r.timeout)
	n, err := r.body.Read(p)
	if !r.timer.Stop() { // it fired during this Read
		return n, r.d.opErr("Read", r.path, r.timeoutErr())
	}
	if err != nil && err != io.EOF {
		err = r.d.opErr("Read", r.path, err)
	}
	return n, err
}

func (r *reader) Close() error {
	r.timer.Stop()
	r.cancel()
	return r.body.Close()
}
