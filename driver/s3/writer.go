package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/regfs/regfs/driver"
)

// Part sizes of a writer's multipart upload.
//
// S3 allows 10,000 parts of 5 MiB to 5 GiB (the last one may be smaller),
// and a writer holds one part in memory, so the part size is a compromise
// between memory and the largest object. A part is 10 MiB while the object
// is below about 5 GB; after that it is 1/500 of the bytes before it,
// rounded up to a MiB, and at most 256 MiB. An object of 1 TiB takes about
// 5,700 parts; the part limit is reached only beyond 2 TiB (TestPartSizes
// checks both). Container layers are rarely above a few GB, so in practice a
// writer holds at most 10 MiB.
const (
	minWritePart = 10 << 20
	maxWritePart = 256 << 20
	maxParts     = 10_000
)

// partSize returns the size of the part that starts after before bytes.
func (d *impl) partSize(before int64) int64 {
	const mib = 1 << 20
	s := (before/500 + mib - 1) / mib * mib
	return min(max(s, d.writePartMin), d.writePartMax)
}

// Writer sends nothing until a part is full or the writer is closed: a new
// writer replaces the object when it is closed or committed, not when it is
// opened, and an appending writer reads only the object's size (plus its
// bytes when it is smaller than a part).
func (d *impl) Writer(ctx context.Context, path string, append bool) (driver.FileWriter, error) {
	w := &writer{
		d:      d,
		path:   path,
		key:    d.key(path),
		append: append,
		// Write and Close take no context, and the one Writer was given
		// may end with the request that opened the file: they use it only
		// for its values, with a deadline per request.
		ctx: context.WithoutCancel(ctx),
	}
	if !append {
		return w, nil
	}
	out, err := d.head(ctx, path)
	if err != nil {
		return nil, err
	}
	w.size, w.etag = aws.ToInt64(out.ContentLength), out.ETag
	if w.size >= d.minPartSize {
		// Copied server side when the upload starts.
		w.pendingCopy = w.size
		return w, nil
	}
	if w.size > 0 {
		// Too small to be a part of its own: its bytes start the buffer
		// (less than a part, since minPartSize <= writePartMin).
		r, err := d.getWith(ctx, path, 0, 0, w.etag)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		w.buf = make([]byte, 0, w.size)
		if w.buf, err = readAll(r, w.buf); err != nil {
			return nil, err
		}
		if int64(len(w.buf)) != w.size {
			return nil, d.opErr("GetObject", path, fmt.Errorf("read %d bytes of an object of %d", len(w.buf), w.size))
		}
	}
	return w, nil
}

// writer writes one object. Its bytes go to a buffer of one part; a full
// buffer becomes a part of a multipart upload, started on the first full
// part. Close or Commit then makes the object: one PutObject if no upload
// was started, else the completion of the upload. base enforces the state
// machine (no Write after Close, Close at most once after Cancel).
type writer struct {
	d      *impl
	path   string
	key    string
	append bool
	ctx    context.Context // for Write and Close, see Writer

	size int64   // bytes in the object, including those of earlier writers
	etag *string // of the object appended to, so that a change fails the copy
	// pendingCopy is the size of the existing object, still to be copied
	// into the upload when it starts; 0 once copied or if there is none.
	pendingCopy int64
	buf         []byte // written and not yet sent
	dirty       bool   // Write was called with bytes: Close must change the object

	uploadID *string // the multipart upload, once started
	parts    []types.CompletedPart
	sent     int64 // bytes in the upload's parts
	done     bool  // the object is made (Commit or Close) or cancelled
}

func (w *writer) Size() int64 { return w.size }

// Write appends p to the buffer, sending each part as it fills up. The
// buffer is sent when more bytes arrive after it is full, not as soon as it
// is full, so that n counts exactly the bytes accepted if sending fails.
func (w *writer) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		limit := w.d.partSize(w.sent + w.pendingCopy)
		if int64(len(w.buf)) >= limit {
			if err := w.flush(w.ctx); err != nil {
				return n, err
			}
			continue
		}
		take := int(min(limit-int64(len(w.buf)), int64(len(p))))
		if need := len(w.buf) + take; need > cap(w.buf) {
			// Grow to at most one part, not to twice what is needed.
			nb := make([]byte, len(w.buf), min(limit, max(int64(need), 2*int64(cap(w.buf)))))
			copy(nb, w.buf)
			w.buf = nb
		}
		w.buf = append(w.buf, p[:take]...)
		w.size += int64(take)
		w.dirty = true
		n += take
		p = p[take:]
	}
	return n, nil
}

// flush sends the buffer as the next part.
func (w *writer) flush(ctx context.Context) error {
	if err := w.start(ctx); err != nil {
		return err
	}
	if len(w.parts) >= maxParts {
		return w.fail("UploadPart", fmt.Errorf("object exceeds %d parts", maxParts))
	}
	num := int32(len(w.parts) + 1)
	cctx, cancel := w.d.callCtx(ctx, int64(len(w.buf)))
	defer cancel()
	out, err := w.d.client.UploadPart(cctx, &s3.UploadPartInput{
		Bucket:        &w.d.bucket,
		Key:           &w.key,
		UploadId:      w.uploadID,
		PartNumber:    &num,
		Body:          bytes.NewReader(w.buf),
		ContentLength: aws.Int64(int64(len(w.buf))),
	})
	if err != nil {
		return w.fail("UploadPart", err)
	}
	w.parts = append(w.parts, types.CompletedPart{ETag: out.ETag, PartNumber: &num})
	w.sent += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// start starts the multipart upload if it is not yet, with the existing
// object copied in as its first parts.
func (w *writer) start(ctx context.Context) error {
	if w.uploadID != nil {
		return nil
	}
	id, err := w.d.createUpload(ctx, w.path)
	if err != nil {
		return err
	}
	if w.pendingCopy > 0 {
		parts, err := w.d.copyParts(ctx, w.path, id, w.key, w.key, w.pendingCopy, w.etag)
		if err != nil {
			w.d.abort(w.path, w.key, id)
			return err
		}
		w.parts = parts
		w.sent, w.pendingCopy = w.pendingCopy, 0
	}
	w.uploadID = id
	return nil
}

// finish makes the object out of everything written.
func (w *writer) finish(ctx context.Context) error {
	if w.done {
		return nil
	}
	switch {
	case w.uploadID == nil && w.pendingCopy == 0:
		// Everything is in the buffer. An appending writer that wrote
		// nothing leaves the object as it is; a new one makes it, if empty.
		if w.dirty || !w.append {
			if err := w.d.put(ctx, w.path, w.buf); err != nil {
				return err
			}
		}
	case w.uploadID == nil && !w.dirty:
		// Appending nothing to a large object: no need to copy it.
	default:
		if w.uploadID == nil || len(w.buf) > 0 {
			if err := w.flush(ctx); err != nil {
				return err
			}
		}
		if err := w.d.completeUpload(ctx, w.path, w.key, w.uploadID, w.parts); err != nil {
			return err
		}
	}
	w.done, w.buf, w.parts = true, nil, nil
	return nil
}

// Close makes the object, or aborts the upload if it cannot, so that no
// invisible parts stay behind (and billed).
func (w *writer) Close() error {
	err := w.finish(w.ctx)
	if err != nil && w.uploadID != nil {
		w.d.abort(w.path, w.key, w.uploadID)
	}
	w.done = true
	return err
}

// Commit makes the object. After a failure the writer is still open: Commit
// can be retried, or the writer cancelled.
func (w *writer) Commit(ctx context.Context) error { return w.finish(ctx) }

// Cancel aborts the upload and deletes the object, earlier writers' bytes
// included.
func (w *writer) Cancel(ctx context.Context) error {
	w.done, w.buf = true, nil
	if w.uploadID != nil {
		cctx, cancel := w.d.callCtx(ctx, 0)
		defer cancel()
		_, err := w.d.client.AbortMultipartUpload(cctx, &s3.AbortMultipartUploadInput{
			Bucket: &w.d.bucket, Key: &w.key, UploadId: w.uploadID,
		})
		if err != nil {
			return w.fail("AbortMultipartUpload", err)
		}
	}
	cctx, cancel := w.d.callCtx(ctx, 0)
	defer cancel()
	if _, err := w.d.client.DeleteObject(cctx, &s3.DeleteObjectInput{Bucket: &w.d.bucket, Key: &w.key}); err != nil && !isNotFound(err) {
		return w.fail("DeleteObject", err)
	}
	return nil
}

func (w *writer) fail(op string, err error) error {
	return w.d.opErr(op, w.path, err)
}

// createUpload starts a multipart upload of the object at path.
func (d *impl) createUpload(ctx context.Context, path string) (*string, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	out, err := d.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: &d.bucket, Key: aws.String(d.key(path)),
	})
	if err != nil {
		return nil, d.opErr("CreateMultipartUpload", path, err)
	}
	return out.UploadId, nil
}

// copyParts copies the size bytes of the object at srcKey into the upload
// id of dstKey, as parts numbered from 1 of at most maxCopySize each. etag,
// if not nil, is the version of the source expected.
func (d *impl) copyParts(ctx context.Context, path string, id *string, dstKey, srcKey string, size int64, etag *string) ([]types.CompletedPart, error) {
	n := (size + d.maxCopySize - 1) / d.maxCopySize
	partLen := (size + n - 1) / n
	// Valid keys hold only unreserved URL characters: no escaping needed.
	source := d.bucket + "/" + srcKey
	var parts []types.CompletedPart
	for start := int64(0); start < size; start += partLen {
		end := min(start+partLen, size) - 1
		num := int32(len(parts) + 1)
		cctx, cancel := d.callCtx(ctx, end+1-start)
		out, err := d.client.UploadPartCopy(cctx, &s3.UploadPartCopyInput{
			Bucket:            &d.bucket,
			Key:               &dstKey,
			UploadId:          id,
			PartNumber:        &num,
			CopySource:        &source,
			CopySourceRange:   aws.String(fmt.Sprintf("bytes=%d-%d", start, end)),
			CopySourceIfMatch: etag,
		})
		cancel()
		if err != nil {
			return nil, d.fail("UploadPartCopy", path, err)
		}
		if out.CopyPartResult == nil {
			return nil, d.opErr("UploadPartCopy", path, errors.New("no ETag in the answer"))
		}
		parts = append(parts, types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: &num})
	}
	return parts, nil
}

// completeUpload makes the object out of the parts of upload id.
func (d *impl) completeUpload(ctx context.Context, path, key string, id *string, parts []types.CompletedPart) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	_, err := d.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &d.bucket,
		Key:             &key,
		UploadId:        id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return d.opErr("CompleteMultipartUpload", path, err)
	}
	return nil
}

// abort aborts upload id on a failure path, where the first error is the
// one to report: its own failure is not returned. It does not use the
// caller's context, which may be why the operation failed.
func (d *impl) abort(path, key string, id *string) {
	ctx, cancel := d.callCtx(context.Background(), 0)
	defer cancel()
	_, err := d.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: &key, UploadId: id})
	if err != nil {
		// Its parts stay billed until a lifecycle rule removes them.
		slog.Warn("s3: cannot abort a multipart upload", "path", path, "upload", aws.ToString(id), "err", err)
	}
}

// readAll appends all of r to buf.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
