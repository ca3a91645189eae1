package s3

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
)

// stagedParts is smallParts with the implementation at hand, so that a
// test can wait for the parts of a writer it drops (as a crash would).
func stagedParts(t *testing.T) (*base.Base, *impl, *recorder) {
	rec := &recorder{}
	d := newTestDriver(t, func(d *impl) {
		d.writePartMin, d.writePartMax = 5<<20, 5<<20
		d.maxCopySize = 10 << 20
	})
	p := testParams
	p.HTTPClient = &http.Client{Transport: rec}
	client, err := newClient(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	d.client = client
	return base.New(d), d, rec
}

func stageWriter(t *testing.T, d driver.Stager, dst, state string, appending bool) driver.FileWriter {
	t.Helper()
	w, err := d.StageWriter(t.Context(), dst, state, appending)
	if err != nil {
		t.Fatalf("StageWriter(append %v): %v", appending, err)
	}
	return w
}

// TestStageWriter writes an object in four staged writers, the third of
// them dropped after sending parts, as a crash would: nothing is at dst
// until Commit, each writer goes on from what the last Close recorded,
// and the object is made without copying a byte server side.
func TestStageWriter(t *testing.T) {
	d, di, rec := stagedParts(t)
	ctx := t.Context()
	dst, state := "/blobs/b/data", "/uploads/u/staged"
	data := randomBytes(31<<20+12345, 9)

	w := stageWriter(t, d, dst, state, false)
	write(t, w, data[:12<<20])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, dst); !driver.IsNotFound(err) {
		t.Fatalf("Stat(dst) after Close = %v, want not found", err)
	}

	w = stageWriter(t, d, dst, state, true)
	if w.Size() != 12<<20 {
		t.Fatalf("Size after reopening = %d, want %d", w.Size(), 12<<20)
	}
	write(t, w, data[12<<20:16<<20])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Parts sent and never recorded: the next writer replaces them.
	dw := stageWriter(t, di, dst, state, true)
	write(t, dw, randomBytes(13<<20, 10))
	dw.(*writer).wait()

	w = stageWriter(t, d, dst, state, true)
	if w.Size() != 16<<20 {
		t.Fatalf("Size after a dropped writer = %d, want %d (the last Close)", w.Size(), 16<<20)
	}
	write(t, w, data[16<<20:])
	if _, err := d.Stat(ctx, dst); !driver.IsNotFound(err) {
		t.Fatalf("Stat(dst) before Commit = %v, want not found", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wantContent(t, d, dst, data)
	if _, err := d.Stat(ctx, state); !driver.IsNotFound(err) {
		t.Errorf("Stat(state) after Commit = %v, want not found", err)
	}
	calls := rec.take()
	for _, op := range []string{"CopyObject", "UploadPartCopy"} {
		if n := count(calls, op); n != 0 {
			t.Errorf("%d %s requests, want none: the bytes are sent once", n, op)
		}
	}
	if err := d.Delete(ctx, "/blobs"); err != nil {
		t.Fatal(err)
	}
}

// TestStageWriterSmall: a staged write smaller than a part lives in the
// state alone (a tail longer than the first read of the state), and its
// Commit is one PutObject.
func TestStageWriterSmall(t *testing.T) {
	d, _, rec := stagedParts(t)
	ctx := t.Context()
	dst, state := "/blobs/s/data", "/uploads/s/staged"
	data := randomBytes(1<<20+3, 11)
	w := stageWriter(t, d, dst, state, false)
	write(t, w, data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = stageWriter(t, d, dst, state, true)
	if w.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", w.Size(), len(data))
	}
	rec.take()
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if calls := rec.take(); count(calls, "CreateMultipartUpload") != 0 || count(calls, "PutObject") != 1 {
		t.Errorf("Commit sent %q, want one PutObject", calls)
	}
	wantContent(t, d, dst, data)
	if err := d.Delete(ctx, "/blobs"); err != nil {
		t.Fatal(err)
	}
}

// TestStageWriterCancel: Cancel aborts the upload and removes the state,
// and never touches an object at dst.
func TestStageWriterCancel(t *testing.T) {
	d, _, _ := stagedParts(t)
	ctx := t.Context()
	dst, state := "/blobs/c/data", "/uploads/c/staged"
	old := []byte("the blob as it was")
	if err := d.PutContent(ctx, dst, old); err != nil {
		t.Fatal(err)
	}
	w := stageWriter(t, d, dst, state, false)
	write(t, w, randomBytes(11<<20, 12))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = stageWriter(t, d, dst, state, true)
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := d.Stat(ctx, state); !driver.IsNotFound(err) {
		t.Errorf("Stat(state) after Cancel = %v, want not found", err)
	}
	wantContent(t, d, dst, old)
	if _, err := d.StageWriter(ctx, dst, state, true); !driver.IsNotFound(err) {
		t.Errorf("StageWriter(append) after Cancel = %v, want not found", err)
	}
	if err := d.Delete(ctx, "/blobs"); err != nil {
		t.Fatal(err)
	}
	// checkEmpty (cleanup) fails the test on a multipart upload left.
}

var _ driver.Janitor = (*impl)(nil)

// TestStageLeftovers: a staged write's upload that outlived its state (its
// registry upload purged) is a leftover once it is older than a week, and
// Clean aborts it; a younger one is a write in progress.
func TestStageLeftovers(t *testing.T) {
	d, im, _ := stagedParts(t)
	ctx := t.Context()
	dst, state := "/blobs/l/data", "/uploads/l/staged"
	w := stageWriter(t, d, dst, state, false)
	write(t, w, randomBytes(6<<20, 13))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "/uploads"); err != nil { // as a purge would
		t.Fatal(err)
	}
	// A registry's chunked upload in progress, its multipart upload open
	// between PATCHes (distribution's S3 driver keeps it open until the
	// upload's commit): the registry's to end, never a leftover.
	regKey := im.key("/docker/registry/v2/repositories/r/_uploads/u/data")
	reg, err := im.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &im.bucket, Key: &regKey})
	if err != nil {
		t.Fatal(err)
	}
	if left, err := d.Leftovers(ctx); err != nil || len(left) != 0 {
		t.Fatalf("Leftovers = %q, %v; want none younger than a week", left, err)
	}
	defer func(age time.Duration) { staleUploadAge = age }(staleUploadAge)
	staleUploadAge = -time.Minute // every upload is stale
	left, err := d.Leftovers(ctx)
	if err != nil || len(left) != 1 || !strings.Contains(left[0], " at "+dst+",") {
		t.Fatalf("Leftovers = %q, %v; want the upload at %s alone", left, err, dst)
	}
	if err := d.Clean(ctx); err != nil {
		t.Fatal(err)
	}
	if left, err := d.Leftovers(ctx); err != nil || len(left) != 0 {
		t.Fatalf("Leftovers after Clean = %q, %v", left, err)
	}
	if _, err := im.client.ListParts(ctx, &s3.ListPartsInput{Bucket: &im.bucket, Key: &regKey, UploadId: reg.UploadId}); err != nil {
		t.Fatalf("the registry's upload after Clean: %v", err)
	}
	if _, err := im.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &im.bucket, Key: &regKey, UploadId: reg.UploadId}); err != nil {
		t.Fatal(err)
	}
	// checkEmpty (cleanup) fails the test on a multipart upload left.
}

// TestStagedWrites: StageLister lists a staged write by its dst, its state
// names it, and AbortStagedWrite discards it.
func TestStagedWrites(t *testing.T) {
	d, _, _ := stagedParts(t)
	ctx := t.Context()
	dst, state := "/blobs/w/data", "/uploads/w/staged"
	w := stageWriter(t, d, dst, state, false)
	write(t, w, randomBytes(6<<20, 14))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ws, err := d.StagedWrites(ctx, "/blobs")
	if err != nil || len(ws) != 1 || ws[0].Dst != dst || ws[0].ID == "" || ws[0].Started.IsZero() {
		t.Fatalf("StagedWrites = %+v, %v; want the write to %s", ws, err, dst)
	}
	if other, err := d.StagedWrites(ctx, "/uploads"); err != nil || len(other) != 0 {
		t.Errorf("StagedWrites(/uploads) = %+v, %v; want none", other, err)
	}
	if id, err := d.StagedWriteID(ctx, state); err != nil || id != ws[0].ID {
		t.Errorf("StagedWriteID = %q, %v; want %q", id, err, ws[0].ID)
	}
	if err := d.AbortStagedWrite(ctx, ws[0]); err != nil {
		t.Fatal(err)
	}
	if err := d.AbortStagedWrite(ctx, ws[0]); err != nil {
		t.Errorf("AbortStagedWrite of a write gone = %v, want nil", err)
	}
	if ws, err := d.StagedWrites(ctx, "/blobs"); err != nil || len(ws) != 0 {
		t.Errorf("StagedWrites after the abort = %+v, %v", ws, err)
	}
	if err := d.Delete(ctx, "/uploads"); err != nil {
		t.Fatal(err)
	}
}

// TestParseStage: a state object's header is believed only when its parts
// are numbered from 1 and its sizes add up; a cut one asks for more.
func TestParseStage(t *testing.T) {
	good := stageMagic + `{"upload":"u","size":12,"parts":[{"n":1,"etag":"e","size":10}],"tail":2}` + "\nab"
	rec, off, err := parseStage([]byte(good))
	if err != nil || rec.Upload != "u" || rec.Size != 12 || len(rec.Parts) != 1 || rec.Tail != 2 || good[off:] != "ab" {
		t.Fatalf("parseStage(good) = %+v, %d, %v", rec, off, err)
	}
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"regfs-sta", errNeedMore},
		{stageMagic + `{"size":0`, errNeedMore},
		{"not a state\n{}\n", errBadStage},
		{stageMagic + "{\n", errBadStage},
		{stageMagic + `{"upload":"u","size":12,"parts":[{"n":2,"etag":"e","size":10}],"tail":2}` + "\n", errBadStage},
		{stageMagic + `{"upload":"u","size":13,"parts":[{"n":1,"etag":"e","size":10}],"tail":2}` + "\n", errBadStage},
		{stageMagic + `{"size":12,"parts":[{"n":1,"etag":"e","size":10}],"tail":2}` + "\n", errBadStage},
		{stageMagic + `{"upload":"u","size":10,"parts":[{"n":1,"etag":"","size":10}],"tail":0}` + "\n", errBadStage},
		{stageMagic + `{"size":-1,"tail":-1}` + "\n", errBadStage},
	} {
		if _, _, err := parseStage([]byte(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("parseStage(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

// TestStageLongHeader: a state whose header is longer than the first read
// is read whole.
func TestStageLongHeader(t *testing.T) {
	d, _, _ := stagedParts(t)
	ctx := t.Context()
	dst, state := "/blobs/h/data", "/uploads/h/staged"
	data := randomBytes(12<<20, 15)
	w := stageWriter(t, d, dst, state, false)
	write(t, w, data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	defer func(n int64) { stageHeadRead = n }(stageHeadRead)
	stageHeadRead = int64(len(stageMagic)) + 20 // within the header
	w = stageWriter(t, d, dst, state, true)
	if w.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", w.Size(), len(data))
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	wantContent(t, d, dst, data)
	if err := d.Delete(ctx, "/blobs"); err != nil {
		t.Fatal(err)
	}
}
