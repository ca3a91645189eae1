package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/regfs/regfs/driver"
)

// Part sizes of a writer's multipart upload.
//
// S3 allows 10,000 parts of 5 MiB to 5 GiB (the last one may be smaller).
// A part is 10 MiB while the object is below about 5 GB; after that it is
// 1/500 of the bytes before it, rounded up to a MiB, and at most 256 MiB.
// An object of 1 TiB takes about 5,700 parts; the part limit is reached
// only beyond 2 TiB (TestPartSizes checks both). Container layers are
// rarely above a few GB, so in practice a part is 10 MiB.
const (
	minWritePart = 10 << 20
	maxWritePart = 256 << 20
	maxParts     = 10_000
)

// Parts in flight. A full part is sent on a goroutine of its own while the
// writer fills the next one, so that the bytes keep coming in while earlier
// parts travel: a writer has at most partsInFlight parts being sent and one
// filling (50 MiB with 10 MiB parts), and a Write that would start one more
// waits for one to finish. All the writers of a driver share
// driverPartsInFlight sends, so that many uploads at once do not multiply
// the memory: a writer that finds none free sends its part itself,
// before Write returns, as a writer without concurrency would.
const (
	partsInFlight       = 4
	driverPartsInFlight = 16
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
		ctx:  context.WithoutCancel(ctx),
		slot: make(chan struct{}, partsInFlight),
	}
	w.idle.L = &w.mu
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
// part, and is sent in the background (see partsInFlight). Close or Commit
// then makes the object: one PutObject if no upload was started, else the
// completion of the upload once every part is sent. base enforces the
// state machine (no Write after Close, Close at most once after Cancel).
//
// A part that fails to send keeps its bytes: the next Write returns the
// failure without taking any byte (the bytes taken before stay taken), and
// the Write, Commit or Close after it sends the part again. So Size and
// the counts Write returns are always what Close would store.
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
	buf         []byte // written and not yet in a part
	dirty       bool   // Write was called with bytes: Close must change the object

	uploadID *string // the multipart upload, once started
	sent     int64   // bytes before buf: copied, or in parts sent or being sent
	numbered int32   // part numbers given out
	// charged is what the writer's buffers added to the Go memory limit
	// (chargeMemoryLimit), given back when it is done.
	charged int64
	done    bool // the object is made (Commit or Close) or cancelled

	// slot holds a token per part of this writer being sent.
	slot chan struct{}

	// A staged writer's (see stage.go): path is dst, and Close records
	// the progress in the state object at state instead of completing
	// the upload. partSize has the size of every part sent, by number;
	// recTail is the tail's length in the state object last read or
	// written, stateETag that object's version as read, and tailAt the
	// tail's offset in it while the tail is not read yet (else 0).
	stage     bool
	state     string
	partSize  map[int32]int64
	recTail   int64
	stateETag *string
	tailAt    int64

	mu   sync.Mutex
	idle sync.Cond // signalled when a send ends
	// parts are the parts sent, in any order; failed the parts whose send
	// failed, to be sent again, and err the first failure not yet
	// returned by Write. spare are buffers of parts sent, for reuse.
	parts  []types.CompletedPart
	failed []part
	err    error
	spare  [][]byte
}

// part is a part of the upload and its bytes.
type part struct {
	num int32
	buf []byte
}

func (w *writer) Size() int64 { return w.size }

// Write appends p to the buffer, handing each part to be sent as it fills
// up. The buffer is handed over when more bytes arrive after it is full,
// not as soon as it is full, so that n counts exactly the bytes accepted if
// sending fails.
func (w *writer) Write(p []byte) (int, error) {
	if err := w.loadTail(w.ctx); err != nil {
		return 0, err
	}
	if err := w.resend(w.ctx); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		limit := w.d.partSize(w.sent + w.pendingCopy)
		if int64(len(w.buf)) >= limit {
			if err := w.send(w.ctx); err != nil {
				return n, err
			}
			continue
		}
		take := int(min(limit-int64(len(w.buf)), int64(len(p))))
		if need := len(w.buf) + take; need > cap(w.buf) {
			w.grow(need, limit)
		}
		w.buf = append(w.buf, p[:take]...)
		w.size += int64(take)
		w.dirty = true
		n += take
		p = p[take:]
	}
	return n, nil
}

// grow makes room in buf for need bytes: a spare buffer of a whole part if
// there is one, else one of twice the capacity, at most limit.
func (w *writer) grow(need int, limit int64) {
	w.mu.Lock()
	var nb []byte
	for len(w.spare) > 0 && nb == nil {
		b := w.spare[len(w.spare)-1]
		w.spare = w.spare[:len(w.spare)-1]
		if int64(cap(b)) >= limit {
			nb = b[:len(w.buf)]
		}
	}
	w.mu.Unlock()
	if nb == nil {
		size := min(limit, max(int64(need), 2*int64(cap(w.buf))))
		if w.numbered > 0 {
			size = limit // a part was full: so will this one be
			// A buffer beyond the one a writer filling parts one at a
			// time would hold: charged to the memory limit.
			w.charged += chargeMemoryLimit(size)
		}
		nb = make([]byte, len(w.buf), size)
	}
	copy(nb, w.buf)
	w.buf = nb
}

// resend returns the failure of a part sent in the background if Write has
// not returned it yet (once); after that, it sends the failed parts again,
// here, and returns the first failure.
func (w *writer) resend(ctx context.Context) error {
	w.mu.Lock()
	err, failed := w.err, w.failed
	w.err = nil
	if err == nil {
		w.failed = nil
	}
	w.mu.Unlock()
	if err != nil {
		return err
	}
	for i, pt := range failed {
		if err := w.sendPart(ctx, pt); err != nil {
			// sendPart kept pt; the others are kept with it.
			w.mu.Lock()
			w.failed = append(w.failed, failed[i+1:]...)
			w.mu.Unlock()
			return err
		}
	}
	return nil
}

// nextPart makes the buffer the next part of the upload, which it starts
// if it is not yet.
func (w *writer) nextPart(ctx context.Context) (part, error) {
	if err := w.start(ctx); err != nil {
		return part{}, err
	}
	if w.numbered >= maxParts {
		return part{}, w.fail("UploadPart", fmt.Errorf("object exceeds %d parts", maxParts))
	}
	w.numbered++
	pt := part{num: w.numbered, buf: w.buf}
	w.sent += int64(len(w.buf))
	w.buf = nil
	return pt, nil
}

// send hands the buffer over as the next part: to a goroutine of its own
// when the writer and the driver have a send to spare, after waiting for
// one of the writer's own to end if it has partsInFlight; else it sends it
// itself.
func (w *writer) send(ctx context.Context) error {
	pt, err := w.nextPart(ctx)
	if err != nil {
		return err
	}
	w.slot <- struct{}{} // waits while partsInFlight parts are being sent
	select {
	case w.d.sends <- struct{}{}:
		go func() {
			err := w.sendPart(ctx, pt)
			<-w.d.sends
			w.mu.Lock()
			if err != nil && w.err == nil {
				w.err = err
			}
			<-w.slot
			w.idle.Broadcast()
			w.mu.Unlock()
		}()
		return nil
	default:
		// A failed part is kept in failed, and the next call sends it
		// again.
		err := w.sendPart(ctx, pt)
		<-w.slot
		return err
	}
}

// sendPart sends one part. Its buffer becomes a spare once sent; a part
// that fails is kept in failed.
func (w *writer) sendPart(ctx context.Context, pt part) error {
	cctx, cancel := w.d.callCtx(ctx, int64(len(pt.buf)))
	defer cancel()
	out, err := w.d.client.UploadPart(cctx, &s3.UploadPartInput{
		Bucket:        &w.d.bucket,
		Key:           &w.key,
		UploadId:      w.uploadID,
		PartNumber:    &pt.num,
		Body:          bytes.NewReader(pt.buf),
		ContentLength: aws.Int64(int64(len(pt.buf))),
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed = append(w.failed, pt)
		return w.fail("UploadPart", err)
	}
	w.parts = append(w.parts, types.CompletedPart{ETag: out.ETag, PartNumber: &pt.num})
	if w.partSize != nil {
		w.partSize[pt.num] = int64(len(pt.buf))
	}
	if len(w.spare) <= partsInFlight {
		w.spare = append(w.spare, pt.buf[:0])
	}
	return nil
}

// wait waits until no part of the writer is being sent.
func (w *writer) wait() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.slot) > 0 {
		w.idle.Wait()
	}
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
		w.numbered = int32(len(parts))
		w.sent, w.pendingCopy = w.pendingCopy, 0
	}
	w.uploadID = id
	if w.stage {
		// A crash from here on leaves an upload that the state names.
		if err := w.startStage(ctx); err != nil {
			w.d.abort(w.path, w.key, id)
			w.uploadID = nil
			return err
		}
	}
	return nil
}

// finish makes the object out of everything written.
func (w *writer) finish(ctx context.Context) error {
	if w.done {
		return nil
	}
	if w.stage {
		return w.stageCommit(ctx)
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
		w.wait()
		w.mu.Lock()
		w.err = nil // the failed parts are sent again now
		w.mu.Unlock()
		if err := w.resend(ctx); err != nil {
			return err
		}
		if err := w.complete(ctx, w.uploadID == nil || len(w.buf) > 0); err != nil {
			return err
		}
	}
	w.done, w.buf, w.parts, w.spare = true, nil, nil, nil
	w.uncharge()
	return nil
}

// complete sends the buffered bytes as the last part if last is set, then
// completes the multipart upload with every part sent, in order.
func (w *writer) complete(ctx context.Context, last bool) error {
	if last {
		pt, err := w.nextPart(ctx)
		if err != nil {
			return err
		}
		if err := w.sendPart(ctx, pt); err != nil {
			return err
		}
	}
	w.mu.Lock()
	parts := slices.Clone(w.parts)
	w.mu.Unlock()
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	return w.d.completeUpload(ctx, w.path, w.key, w.uploadID, parts)
}

// memoryLimitMu serialises the changes chargeMemoryLimit makes.
var memoryLimitMu sync.Mutex

// chargeMemoryLimit raises the Go runtime's memory limit by n bytes (lowers
// it for a negative n) and returns n, or 0 when no limit is set.
//
// The part buffers a writer holds beyond one are outside the budget that
// cmd/regfs sets the limit from (the block cache plus a headroom that
// counts one part per upload). Near a full cache, the collector would
// otherwise run back to back while an upload holds them: the stream of a
// 512 MiB cp into _uploads/ took 5.9-6.3 s with the cache full against
// 2.9-3.5 s with it empty. So the limit grows with them for as long as the
// writer holds them, and the process's memory stays what the limit and
// the writers' buffers add up to.
func chargeMemoryLimit(n int64) int64 {
	memoryLimitMu.Lock()
	defer memoryLimitMu.Unlock()
	limit := debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 || limit+n < 0 {
		return 0
	}
	debug.SetMemoryLimit(limit + n)
	return n
}

// uncharge gives back what the writer's buffers added to the memory limit.
func (w *writer) uncharge() {
	if w.charged != 0 {
		chargeMemoryLimit(-w.charged)
		w.charged = 0
	}
}

// Close makes the object, or aborts the upload if it cannot, so that no
// invisible parts stay behind (and billed).
func (w *writer) Close() error {
	if w.stage {
		// A failure keeps the upload: the state last written names it.
		err := w.stageClose(w.ctx)
		w.wait()
		w.done, w.buf, w.parts, w.spare, w.failed = true, nil, nil, nil, nil
		w.uncharge()
		return err
	}
	err := w.finish(w.ctx)
	if err != nil && w.uploadID != nil {
		w.wait()
		w.d.abort(w.path, w.key, w.uploadID)
	}
	if err != nil {
		w.wait()
		w.buf, w.parts, w.spare, w.failed = nil, nil, nil, nil
		w.uncharge()
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
	w.wait() // a part that lands after the abort would stay behind
	w.done, w.buf, w.spare, w.failed = true, nil, nil, nil
	w.uncharge()
	if w.stage {
		return w.stageCancel(ctx)
	}
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
