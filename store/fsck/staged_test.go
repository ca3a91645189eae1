package fsck

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/s3"
	"github.com/regfs/regfs/driver/s3/s3test"
	"github.com/regfs/regfs/store"
)

// TestOrphanStagedWrites: on S3 an upload's bytes are staged at its
// blob's key. A staged write its upload's record names is an upload in
// progress, not a problem; one that nothing names (its upload directory
// removed, as a registry's purge removes it) is reported once older than
// an hour, and a repair aborts it and only it.
func TestOrphanStagedWrites(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	d, err := s3.New(ctx, s3.Params{Bucket: srv.Bucket, Region: srv.Region, Endpoint: srv.Endpoint,
		RootDirectory: "orphans", Credentials: srv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(d, store.Options{Cache: cache.New(1<<20, 4096), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Repository("app")
	if err != nil {
		t.Fatal(err)
	}
	// Two uploads of more than a part (10 MiB): each has a staged write.
	var ups []store.Upload
	for range 2 {
		content := make([]byte, 11<<20)
		rand.Read(content)
		up, err := r.Uploads().Create(ctx, digest.FromBytes(content))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(content); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		ups = append(ups, up)
	}
	defer func() {
		if err := r.Uploads().Cancel(ctx, ups[0].ID()); err != nil {
			t.Error(err)
		}
		if ws, err := d.(driver.StageLister).StagedWrites(ctx, "/"); err != nil || len(ws) != 0 {
			t.Errorf("staged writes left: %+v, %v", ws, err)
		}
	}()
	// The second upload's directory goes without its staged write.
	dir := store.Location{Kind: store.PathUpload, Repository: "app", Upload: ups[1].ID()}
	if err := d.Delete(ctx, pathOf(t, dir)); err != nil {
		t.Fatal(err)
	}
	orphanDst := pathOf(t, store.Location{Kind: store.PathBlobData, Digest: ups[1].Expected()})

	check := func(now time.Time, repair bool) *Report {
		t.Helper()
		rep, err := Run(ctx, d, Options{Repair: repair, Now: func() time.Time { return now }, RecheckAfter: time.Millisecond, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := check(time.Now(), false); !rep.OK() {
		t.Errorf("a staged write younger than an hour reported:%s", problemsString(rep.Problems))
	}
	later := time.Now().Add(2 * time.Hour)
	rep := check(later, false)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != OrphanStagedWrite || rep.Problems[0].Path != orphanDst || rep.Problems[0].Fix != FixRemove {
		t.Fatalf("problems:%s\nwant one %s at %s", problemsString(rep.Problems), OrphanStagedWrite, orphanDst)
	}
	if len(rep.Uploads) != 1 || rep.Uploads[0].ID != ups[0].ID() {
		t.Errorf("uploads %+v, want the first", rep.Uploads)
	}
	rep = check(later, true)
	if len(rep.Problems) != 1 || !rep.Problems[0].Repaired || len(rep.Removed) != 1 {
		t.Fatalf("repair: removed %v, problems:%s", rep.Removed, problemsString(rep.Problems))
	}
	if rep := check(later, false); !rep.OK() {
		t.Errorf("after the repair:%s", problemsString(rep.Problems))
	}
	ws, err := d.(driver.StageLister).StagedWrites(ctx, "/")
	if err != nil || len(ws) != 1 || ws[0].Dst == orphanDst {
		t.Errorf("staged writes after the repair: %+v, %v; want the first upload's alone", ws, err)
	}
}
