package inmemory

import (
	"bytes"
	"context"
	"testing"

	"github.com/regfs/regfs/driver"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	d := New()
	if err := d.PutContent(ctx, "/a/b", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetContent(ctx, "/a/b")
	if err != nil || !bytes.Equal(got, []byte("hi")) {
		t.Fatalf("GetContent = %q, %v", got, err)
	}
	if err := d.Delete(ctx, "/a/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/a"); !driver.IsNotFound(err) {
		t.Fatalf("Stat of pruned dir: %v", err)
	}
	if _, err := d.Stat(ctx, "/a/"); err == nil {
		t.Fatal("trailing slash accepted")
	}
}
