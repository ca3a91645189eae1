package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/regfs/regfs/driver"
)

// Staged writes (driver.Stager).
//
// A staged writer is a writer whose multipart upload is at the key of dst
// from the start, and is completed there only by Commit, so that the bytes
// become the object without the server-side copy a Move would make. Its
// parts are durable on the server as soon as they are sent, but S3 cannot
// read back the parts of an upload in progress, and a part other than the
// last must be at least 5 MiB: so Close, instead of completing the upload,
// writes the state object, which holds the upload's ID, the parts sent
// (number, ETag, size) and the bytes after them (the tail, less than a
// part), and is all a later writer needs to go on:
//
//	regfs-staged 1\n
//	{"upload":"<id>","size":<bytes>,"parts":[{"n":1,"etag":"...","size":<bytes>}],"tail":<bytes>}\n
//	<tail bytes>
//
// Parts sent after the state object was last written (before a crash)
// are in the upload but not in the state: the next writer sends parts of
// the same numbers again, which replaces them, and CompleteMultipartUpload
// names only the parts of the state, which discards any other. The state
// is rewritten as soon as a writer starts the upload, so that no upload
// exists that no state names but for the time of that one request.

const stageMagic = "regfs-staged 1\n"

// stageHeadRead is how much of a state object the first GET asks for: the
// header of an upload of up to about a thousand parts, and a small tail,
// without reading a tail of several MiB when only the size is wanted. A
// variable so that tests can make a header longer than it.
var stageHeadRead int64 = 64 << 10

// stageRecord is the header of a state object.
type stageRecord struct {
	Upload string      `json:"upload,omitempty"`
	Size   int64       `json:"size"`
	Parts  []stagePart `json:"parts,omitempty"`
	Tail   int64       `json:"tail"`
}

type stagePart struct {
	N    int32  `json:"n"`
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

var errBadStage = errors.New("not a staged write's state")

// StageWriter implements driver.Stager. An appending writer reads only the
// state's header (its Size is then known); the tail is read when the
// writer needs it, on the first Write, Close after writing, or Commit.
func (d *impl) StageWriter(ctx context.Context, dst, state string, appending bool) (driver.FileWriter, error) {
	if !driver.ValidPath(dst) {
		return nil, driver.InvalidPathError{Path: dst, Driver: Name}
	}
	w := &writer{
		d:        d,
		path:     dst,
		key:      d.key(dst),
		append:   appending,
		ctx:      context.WithoutCancel(ctx),
		slot:     make(chan struct{}, partsInFlight),
		stage:    true,
		state:    state,
		partSize: map[int32]int64{},
	}
	w.idle.L = &w.mu
	if !appending {
		return w, nil
	}
	rec, head, off, etag, err := d.readStage(ctx, state)
	if err != nil {
		return nil, err
	}
	w.stateETag = etag
	if rec.Upload != "" {
		w.uploadID = aws.String(rec.Upload)
	}
	for _, p := range rec.Parts {
		w.parts = append(w.parts, types.CompletedPart{ETag: aws.String(p.ETag), PartNumber: aws.Int32(p.N)})
		w.partSize[p.N] = p.Size
		w.sent += p.Size
	}
	w.numbered = int32(len(rec.Parts))
	w.size = rec.Size
	w.recTail = rec.Tail
	if int64(len(head))-off >= rec.Tail {
		w.buf = append(make([]byte, 0, rec.Tail), head[off:off+rec.Tail]...)
	} else {
		w.tailAt = off
	}
	return w, nil
}

// readStage reads the header of the state object at state: it returns
// the header, the bytes read (the header and what of the tail came with
// it), the tail's offset, and the object's ETag.
func (d *impl) readStage(ctx context.Context, state string) (stageRecord, []byte, int64, *string, error) {
	r, err := d.getWith(ctx, state, 0, stageHeadRead, nil)
	if err != nil {
		if isInvalidRange(err) {
			err = d.opErr("StageWriter", state, errors.New("empty state object"))
		}
		return stageRecord{}, nil, 0, nil, err
	}
	head, err := readAll(r, make([]byte, 0, min(stageHeadRead, max(0, aws.ToInt64(r.out.ContentLength)))))
	r.Close()
	if err != nil {
		return stageRecord{}, nil, 0, nil, d.opErr("GetObject", state, err)
	}
	etag := r.out.ETag
	rec, off, err := parseStage(head)
	if errors.Is(err, errNeedMore) && int64(len(head)) == stageHeadRead {
		// A header longer than the first read: read it all.
		all, gerr := d.getWith(ctx, state, 0, 0, etag)
		if gerr != nil {
			return stageRecord{}, nil, 0, nil, gerr
		}
		head, gerr = readAll(all, nil)
		all.Close()
		if gerr != nil {
			return stageRecord{}, nil, 0, nil, d.opErr("GetObject", state, gerr)
		}
		rec, off, err = parseStage(head)
	}
	if err != nil {
		return stageRecord{}, nil, 0, nil, d.opErr("StageWriter", state, err)
	}
	return rec, head, off, etag, nil
}

var errNeedMore = errors.New("state header continues beyond what was read")

// parseStage parses a state object's header (from its first bytes), and
// returns it with the offset of the tail.
func parseStage(b []byte) (stageRecord, int64, error) {
	rest, ok := bytes.CutPrefix(b, []byte(stageMagic))
	if !ok {
		if len(b) < len(stageMagic) {
			return stageRecord{}, 0, errNeedMore
		}
		return stageRecord{}, 0, errBadStage
	}
	line, _, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return stageRecord{}, 0, errNeedMore
	}
	var rec stageRecord
	if err := json.Unmarshal(line, &rec); err != nil {
		return stageRecord{}, 0, fmt.Errorf("%w: %v", errBadStage, err)
	}
	var sum int64
	for i, p := range rec.Parts {
		if p.N != int32(i+1) || p.Size <= 0 || p.ETag == "" {
			return stageRecord{}, 0, fmt.Errorf("%w: part %d of %d", errBadStage, i+1, len(rec.Parts))
		}
		sum += p.Size
	}
	if rec.Tail < 0 || sum+rec.Tail != rec.Size || len(rec.Parts) > 0 && rec.Upload == "" {
		return stageRecord{}, 0, fmt.Errorf("%w: sizes do not add up", errBadStage)
	}
	return rec, int64(len(stageMagic) + len(line) + 1), nil
}

func (w *writer) stageErr(err error) error {
	return w.d.opErr("StageWriter", w.state, err)
}

// loadTail reads the tail of the state object, if the writer has not yet.
func (w *writer) loadTail(ctx context.Context) error {
	if w.tailAt == 0 {
		return nil
	}
	r, err := w.d.getWith(ctx, w.state, w.tailAt, w.recTail, w.stateETag)
	if err != nil {
		return err
	}
	defer r.Close()
	buf, err := readAll(r, make([]byte, 0, w.recTail))
	if err != nil {
		return w.d.opErr("GetObject", w.state, err)
	}
	if int64(len(buf)) != w.recTail {
		return w.stageErr(fmt.Errorf("read %d bytes of a tail of %d", len(buf), w.recTail))
	}
	w.buf, w.tailAt = buf, 0
	return nil
}

// record writes the state object: the upload, its parts sent (every part
// numbered, once none is in flight) and tail as the tail.
func (w *writer) record(ctx context.Context, tail []byte) error {
	rec := stageRecord{Upload: aws.ToString(w.uploadID), Tail: int64(len(tail))}
	w.mu.Lock()
	parts := slices.Clone(w.parts)
	w.mu.Unlock()
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	for _, p := range parts {
		n := *p.PartNumber
		rec.Parts = append(rec.Parts, stagePart{N: n, ETag: aws.ToString(p.ETag), Size: w.partSize[n]})
		rec.Size += w.partSize[n]
	}
	rec.Size += rec.Tail
	head, err := json.Marshal(rec)
	if err != nil {
		return w.stageErr(err)
	}
	b := make([]byte, 0, len(stageMagic)+len(head)+1+len(tail))
	b = append(append(append(append(b, stageMagic...), head...), '\n'), tail...)
	cctx, cancel := w.d.callCtx(ctx, int64(len(b)))
	defer cancel()
	out, err := w.d.client.PutObject(cctx, &s3.PutObjectInput{
		Bucket:        &w.d.bucket,
		Key:           aws.String(w.d.key(w.state)),
		Body:          bytes.NewReader(b),
		ContentLength: aws.Int64(int64(len(b))),
	})
	if err != nil {
		return w.d.opErr("PutObject", w.state, err)
	}
	w.recTail, w.stateETag = rec.Tail, out.ETag
	return nil
}

// checkState fails when the state object is not the one the writer last
// read or wrote: the staged write was cancelled (PathNotFoundError) or
// taken over by another writer since, and what this one holds must not
// become the object.
func (w *writer) checkState(ctx context.Context) error {
	if w.stateETag == nil {
		return nil // nothing recorded: the writer holds all there is
	}
	out, err := w.d.head(ctx, w.state)
	if err != nil {
		return err
	}
	if aws.ToString(out.ETag) != aws.ToString(w.stateETag) {
		return w.stageErr(errors.New("the staged write changed since this writer read it (another writer?)"))
	}
	return nil
}

// startStage records the upload start just started, with the tail of the
// state it continues (the first bytes of the buffer, not yet in a part).
func (w *writer) startStage(ctx context.Context) error {
	return w.record(ctx, w.buf[:w.recTail])
}

// stageClose makes the bytes written durable in the state object: every
// full part sent, the rest as the tail. It changes nothing when nothing
// was written.
func (w *writer) stageClose(ctx context.Context) error {
	if w.done || !w.dirty {
		return nil
	}
	w.wait()
	w.mu.Lock()
	w.err = nil // the failed parts are sent again now
	w.mu.Unlock()
	if err := w.resend(ctx); err != nil {
		return err
	}
	if err := w.record(ctx, w.buf); err != nil {
		return err
	}
	w.dirty = false
	return nil
}

// stageCommit makes dst out of every byte written, then removes the state.
func (w *writer) stageCommit(ctx context.Context) error {
	if w.done {
		return nil
	}
	if err := w.loadTail(ctx); err != nil {
		return err
	}
	w.wait()
	w.mu.Lock()
	w.err = nil
	w.mu.Unlock()
	if err := w.resend(ctx); err != nil {
		return err
	}
	if err := w.checkState(ctx); err != nil {
		return err
	}
	if w.uploadID == nil {
		if err := w.d.put(ctx, w.path, w.buf); err != nil {
			return err
		}
	} else {
		if err := w.complete(ctx, len(w.buf) > 0 || w.numbered == 0); err != nil {
			if isNoSuchUpload(err) {
				return driver.PathNotFoundError{Path: w.state, Driver: Name}
			}
			return err
		}
	}
	w.done, w.buf, w.parts, w.spare = true, nil, nil, nil
	w.uncharge()
	if err := w.d.deleteObject(ctx, w.state, w.d.key(w.state)); err != nil && !driver.IsNotFound(err) {
		return err
	}
	return nil
}

// stageCancel aborts the upload and removes the state; dst is not touched.
func (w *writer) stageCancel(ctx context.Context) error {
	if w.uploadID != nil {
		cctx, cancel := w.d.callCtx(ctx, 0)
		defer cancel()
		_, err := w.d.client.AbortMultipartUpload(cctx, &s3.AbortMultipartUploadInput{
			Bucket: &w.d.bucket, Key: &w.key, UploadId: w.uploadID,
		})
		if err != nil && !isNoSuchUpload(err) {
			return w.fail("AbortMultipartUpload", err)
		}
	}
	if err := w.d.deleteObject(ctx, w.state, w.d.key(w.state)); err != nil && !driver.IsNotFound(err) {
		return err
	}
	return nil
}

// isNoSuchUpload reports whether err says the multipart upload is gone
// (completed or aborted).
func isNoSuchUpload(err error) bool {
	var nsu *types.NoSuchUpload
	if errors.As(err, &nsu) {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload"
}

// staleUploadAge is the age after which a multipart upload in progress is
// a leftover (Janitor): a week, the age at which the registry purges an
// upload (and regfs's gc one without writes). The uploads of the writers
// of this driver live for as long as a writer is open, and those of staged
// writes (whose state names them) for as long as the registry upload they
// hold; one older than that is one whose state was removed with its upload
// (a registry's purge of it does not know of the staged bytes), or whose
// start a crash cut off before the state recorded it. A variable so that
// tests can make every upload stale.
var staleUploadAge = 7 * 24 * time.Hour

// Leftovers implements driver.Janitor: the multipart uploads in progress
// under the root that are older than staleUploadAge, which take space (and
// are billed) but no listing shows.
func (d *impl) Leftovers(ctx context.Context) ([]string, error) {
	ups, err := d.staleUploads(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range ups {
		p, _ := d.rel(aws.ToString(u.Key))
		out = append(out, fmt.Sprintf("multipart upload %s at %s, started %s", aws.ToString(u.UploadId), p, aws.ToTime(u.Initiated).UTC().Format(time.RFC3339)))
	}
	slices.Sort(out)
	return out, nil
}

// Clean implements driver.Janitor: it aborts the uploads Leftovers reports.
func (d *impl) Clean(ctx context.Context) error {
	ups, err := d.staleUploads(ctx)
	if err != nil {
		return err
	}
	for _, u := range ups {
		cctx, cancel := d.callCtx(ctx, 0)
		_, err := d.client.AbortMultipartUpload(cctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: u.Key, UploadId: u.UploadId})
		cancel()
		if err != nil && !isNoSuchUpload(err) {
			return d.opErr("AbortMultipartUpload", "/", err)
		}
	}
	return nil
}

// registryUpload reports whether key is a registry upload's data
// (".../_uploads/<id>/data"): a co-tenant registry's own chunked upload
// keeps its multipart upload open between PATCHes, and its lifetime is the
// registry's to end (its upload purge), never a leftover of regfs's. regfs
// stages its uploads at blob keys.
func registryUpload(key string) bool {
	return strings.Contains(key, "/_uploads/")
}

// staleUploads lists the multipart uploads in progress under the root
// older than staleUploadAge, but for a registry's own uploads.
func (d *impl) staleUploads(ctx context.Context) ([]types.MultipartUpload, error) {
	cutoff := time.Now().Add(-staleUploadAge)
	in := &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: &d.prefix}
	var out []types.MultipartUpload
	for {
		cctx, cancel := d.callCtx(ctx, 0)
		page, err := d.client.ListMultipartUploads(cctx, in)
		cancel()
		if err != nil {
			return nil, d.opErr("ListMultipartUploads", "/", err)
		}
		for _, u := range page.Uploads {
			if registryUpload(aws.ToString(u.Key)) {
				continue
			}
			if aws.ToTime(u.Initiated).Before(cutoff) {
				out = append(out, u)
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			return out, nil
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
}

// StagedWrites implements driver.StageLister: the multipart uploads in
// progress whose key is below dir.
func (d *impl) StagedWrites(ctx context.Context, dir string) ([]driver.StagedWrite, error) {
	prefix := d.dirPrefix(dir)
	in := &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: &prefix}
	var out []driver.StagedWrite
	for {
		cctx, cancel := d.callCtx(ctx, 0)
		page, err := d.client.ListMultipartUploads(cctx, in)
		cancel()
		if err != nil {
			return nil, d.opErr("ListMultipartUploads", dir, err)
		}
		for _, u := range page.Uploads {
			if p, ok := d.rel(aws.ToString(u.Key)); ok {
				out = append(out, driver.StagedWrite{Dst: p, ID: aws.ToString(u.UploadId), Started: aws.ToTime(u.Initiated)})
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			return out, nil
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
}

// StagedWriteID implements driver.StageLister.
func (d *impl) StagedWriteID(ctx context.Context, state string) (string, error) {
	rec, _, _, _, err := d.readStage(ctx, state)
	return rec.Upload, err
}

// AbortStagedWrite implements driver.StageLister.
func (d *impl) AbortStagedWrite(ctx context.Context, w driver.StagedWrite) error {
	cctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	_, err := d.client.AbortMultipartUpload(cctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: aws.String(d.key(w.Dst)), UploadId: aws.String(w.ID)})
	if err != nil && !isNoSuchUpload(err) {
		return d.opErr("AbortMultipartUpload", w.Dst, err)
	}
	return nil
}
