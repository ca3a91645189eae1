package store

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/inmemory"
)

func TestFence(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, inmemory.New())
	r := repo(t, s, "app")
	content := []byte("layer bytes")
	d := digest.FromBytes(content)

	f, release := TakeFence(s)
	up, err := r.Uploads().Create(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !f.HoldsBlob(d) || !f.HoldsUpload("app", up.ID()) {
		t.Fatal("an open upload and its blob are not held")
	}
	if _, err := up.Write(content); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if f.HoldsUpload("app", up.ID()) {
		t.Fatal("a committed upload is still held")
	}
	// Committed during the fence: still held until the fence is released.
	if !f.HoldsBlob(d) {
		t.Fatal("a blob committed while the fence was up is not held")
	}
	release()
	f2, release2 := TakeFence(s)
	defer release2()
	if f2.HoldsBlob(d) {
		t.Fatal("a new fence holds a blob nothing touches now")
	}
	// Linking and storing a manifest hold what they name.
	if err := repo(t, s, "other").Layers().Link(ctx, d); err != nil {
		t.Fatal(err)
	}
	if !f2.HoldsBlob(d) {
		t.Fatal("a blob linked during the fence is not held")
	}
	cfg := pushBlob(t, r, []byte(`{}`))
	m, err := r.Manifests().Put(ctx, schema2(cfg, d), "v1", "")
	if err != nil {
		t.Fatal(err)
	}
	if !f2.HoldsBlob(m) || !f2.HoldsBlob(cfg) {
		t.Fatal("a manifest stored during the fence, or its config, is not held")
	}
	// A resumed upload is held again, and released by Close.
	up2, err := r.Uploads().Create(ctx, digest.FromString("later"))
	if err != nil {
		t.Fatal(err)
	}
	if err := up2.Close(); err != nil {
		t.Fatal(err)
	}
	if f2.HoldsUpload("app", up2.ID()) {
		t.Fatal("a closed upload is held")
	}
	up3, err := r.Uploads().Resume(ctx, up2.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !f2.HoldsUpload("app", up2.ID()) {
		t.Fatal("a resumed upload is not held")
	}
	if err := up3.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if f2.HoldsUpload("app", up2.ID()) {
		t.Fatal("a cancelled upload is held")
	}
}
