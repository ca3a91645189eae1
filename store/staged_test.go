package store

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/s3"
	"github.com/regfs/regfs/driver/s3/s3test"
)

// copyCounter counts the server-side copies (CopyObject, UploadPartCopy:
// requests with a copy source) that pass through it.
type copyCounter struct{ copies atomic.Int64 }

func (c *copyCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("X-Amz-Copy-Source") != "" {
		c.copies.Add(1)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// stagedEnv is an S3 driver on a versitygw of the test's, under a root of
// its own, with its copies counted.
type stagedEnv struct {
	srv    *s3test.Server
	d      driver.StorageDriver
	copies *copyCounter
	root   string
}

func newStagedEnv(t *testing.T, srv *s3test.Server, root string) *stagedEnv {
	t.Helper()
	cc := &copyCounter{}
	d, err := s3.New(t.Context(), s3.Params{
		Bucket: srv.Bucket, Region: srv.Region, Endpoint: srv.Endpoint, RootDirectory: root,
		Credentials: srv.Credentials(), HTTPClient: &http.Client{Transport: cc},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &stagedEnv{srv: srv, d: d, copies: cc, root: root}
}

// pendingUploads returns the keys of the multipart uploads in progress
// under the env's root.
func (e *stagedEnv) pendingUploads(t *testing.T) []string {
	t.Helper()
	out, err := e.srv.Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{
		Bucket: aws.String(e.srv.Bucket), Prefix: aws.String(e.root + "/"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

// TestStagedUploadS3 runs the upload scenarios on the S3 driver, where an
// upload's bytes are staged at the blob's key: nothing is copied at the
// commit, nothing is at the blob's key before it, and resume, mismatch,
// cancel and deduplication keep their guarantees.
func TestStagedUploadS3(t *testing.T) {
	srv := s3test.Start(t)
	const part = 10 << 20 // the S3 driver's part
	content := randomBytes(21, 2*part+part/2+777)
	dgst := digest.FromBytes(content)
	ctx := context.Background()

	t.Run("resume", func(t *testing.T) {
		e := newStagedEnv(t, srv, "resume")
		s1 := newStore(t, e.d)
		up, err := repo(t, s1, "a/b").Uploads().Create(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		if !up.(*upload).staged {
			t.Fatal("an upload on S3 is not staged")
		}
		cut := part + part/3
		if _, err := up.Write(content[:cut]); err != nil {
			t.Fatal(err)
		}
		if err := up.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := blobData(t, s1, dgst); ok {
			t.Fatal("the blob is at its key before the upload was verified")
		}
		// s1 is dropped here, as in a crash after the flush.
		s2 := newStore(t, e.d)
		r := repo(t, s2, "a/b")
		infos, err := r.Uploads().List(ctx)
		if err != nil || len(infos) != 1 || infos[0].Size != int64(cut) || infos[0].Expected != dgst {
			t.Fatalf("List = %+v, %v; want one upload of %d bytes", infos, err, cut)
		}
		up2, err := r.Uploads().Resume(ctx, up.ID())
		if err != nil {
			t.Fatal(err)
		}
		if up2.Size() != int64(cut) {
			t.Fatalf("resumed at %d, want %d", up2.Size(), cut)
		}
		if _, err := up2.WriteAt(content[cut:], int64(cut)); err != nil {
			t.Fatal(err)
		}
		desc, err := up2.Commit(ctx)
		if err != nil || desc.Digest != dgst || desc.Size != int64(len(content)) {
			t.Fatalf("Commit = %+v, %v", desc, err)
		}
		if b, ok := blobData(t, s2, dgst); !ok || !bytes.Equal(b, content) {
			t.Fatal("blob data wrong after the resumed commit")
		}
		if n := e.copies.copies.Load(); n != 0 {
			t.Errorf("%d server-side copies, want none", n)
		}
		if infos, _ := r.Uploads().List(ctx); len(infos) != 0 {
			t.Errorf("upload left behind: %+v", infos)
		}
		if p := e.pendingUploads(t); len(p) != 0 {
			t.Errorf("multipart uploads left: %q", p)
		}
	})

	t.Run("resume before any record", func(t *testing.T) {
		// A crash before the first part filled: the upload has neither
		// data nor a record, and starts its bytes anew, staged.
		e := newStagedEnv(t, srv, "fresh")
		s1 := newStore(t, e.d)
		up, err := repo(t, s1, "r").Uploads().Create(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(content[:part/2]); err != nil {
			t.Fatal(err)
		}
		if err := up.(*upload).settle(); err != nil {
			t.Fatal(err)
		}
		// s1 and up are dropped here: nothing of the bytes was stored.
		r := repo(t, newStore(t, e.d), "r")
		up2, err := r.Uploads().Resume(ctx, up.ID())
		if err != nil {
			t.Fatal(err)
		}
		if up2.Size() != 0 || !up2.(*upload).staged {
			t.Fatalf("resumed at %d (staged %v), want 0, staged", up2.Size(), up2.(*upload).staged)
		}
		if _, err := up2.Write(content); err != nil {
			t.Fatal(err)
		}
		if desc, err := up2.Commit(ctx); err != nil || desc.Digest != dgst {
			t.Fatalf("Commit = %+v, %v", desc, err)
		}
		if n := e.copies.copies.Load(); n != 0 {
			t.Errorf("%d server-side copies, want none", n)
		}
		if p := e.pendingUploads(t); len(p) != 0 {
			t.Errorf("multipart uploads left: %q", p)
		}
	})

	t.Run("mismatch", func(t *testing.T) {
		e := newStagedEnv(t, srv, "mismatch")
		s := newStore(t, e.d)
		r := repo(t, s, "r")
		up, err := r.Uploads().Create(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		cut := part + 5
		if _, err := up.Write(content[:cut]); err != nil {
			t.Fatal(err)
		}
		_, err = up.Commit(ctx)
		var mm *DigestMismatchError
		if !errors.As(err, &mm) || mm.Size != int64(cut) {
			t.Fatalf("Commit of a partial upload = %v, want a mismatch at %d bytes", err, cut)
		}
		if _, ok := blobData(t, s, dgst); ok {
			t.Fatal("a mismatch made the blob")
		}
		// The rest, after a restart.
		r2 := repo(t, newStore(t, e.d), "r")
		up2, err := r2.Uploads().Resume(ctx, up.ID())
		if err != nil {
			t.Fatal(err)
		}
		if up2.Size() != int64(cut) {
			t.Fatalf("resumed at %d after a mismatch, want %d", up2.Size(), cut)
		}
		if _, err := up2.Write(content[cut:]); err != nil {
			t.Fatal(err)
		}
		if desc, err := up2.Commit(ctx); err != nil || desc.Digest != dgst {
			t.Fatalf("Commit after the rest = %+v, %v", desc, err)
		}
		if b, ok := blobData(t, s, dgst); !ok || !bytes.Equal(b, content) {
			t.Fatal("blob data wrong")
		}
		if p := e.pendingUploads(t); len(p) != 0 {
			t.Errorf("multipart uploads left: %q", p)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		e := newStagedEnv(t, srv, "cancel")
		s := newStore(t, e.d)
		up, err := repo(t, s, "r").Uploads().Create(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(content[:2*part+1]); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		if p := e.pendingUploads(t); len(p) != 1 || !strings.HasSuffix(p[0], "/"+dgst.Encoded()+"/data") {
			t.Fatalf("multipart uploads %q, want one at the blob's key", p)
		}
		// Removed by another store, as gc removes an old upload.
		if err := repo(t, newStore(t, e.d), "r").Uploads().Cancel(ctx, up.ID()); err != nil {
			t.Fatal(err)
		}
		if p := e.pendingUploads(t); len(p) != 0 {
			t.Errorf("multipart uploads left after Cancel: %q", p)
		}
		keys, err := srv.Keys(ctx, srv.Bucket, "cancel/")
		if err != nil || len(keys) != 0 {
			t.Errorf("keys left after Cancel: %q, %v", keys, err)
		}
	})

	t.Run("dedup", func(t *testing.T) {
		e := newStagedEnv(t, srv, "dedup")
		s := newStore(t, e.d)
		for _, name := range []string{"one", "two"} {
			up, err := repo(t, s, name).Uploads().Create(ctx, dgst)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := up.Write(content); err != nil {
				t.Fatal(err)
			}
			if desc, err := up.Commit(ctx); err != nil || desc.Digest != dgst {
				t.Fatalf("Commit in %s = %+v, %v", name, desc, err)
			}
		}
		if b, ok := blobData(t, s, dgst); !ok || !bytes.Equal(b, content) {
			t.Fatal("blob data wrong")
		}
		if p := e.pendingUploads(t); len(p) != 0 {
			t.Errorf("multipart uploads left: %q", p)
		}
	})

	t.Run("committed by another store", func(t *testing.T) {
		e := newStagedEnv(t, srv, "another")
		testCommittedByAnother(t, e.d, false)
		if p := e.pendingUploads(t); len(p) != 0 {
			t.Errorf("multipart uploads left: %q", p)
		}
	})
}
