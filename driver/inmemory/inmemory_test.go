package inmemory

import (
	"context"
	"testing"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(*testing.T) driver.StorageDriver { return New() })
}

// TestDirectoriesAreImplied: a directory lives exactly as long as something
// is below it, and Delete("/") empties the store.
func TestDirectoriesAreImplied(t *testing.T) {
	ctx := context.Background()
	d := New()
	for _, p := range []string{"/a/b/c", "/a/d"} {
		if err := d.PutContent(ctx, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Delete(ctx, "/a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/a/b"); !driver.IsNotFound(err) {
		t.Errorf("Stat of emptied /a/b = %v, want PathNotFoundError", err)
	}
	if fi, err := d.Stat(ctx, "/a"); err != nil || !fi.IsDir {
		t.Errorf("Stat of /a = %+v, %v; want a directory", fi, err)
	}
	if err := d.Move(ctx, "/a/d", "/e/d"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/a"); !driver.IsNotFound(err) {
		t.Errorf("Stat of /a after moving its last child = %v, want PathNotFoundError", err)
	}
	if err := d.Delete(ctx, "/"); err != nil {
		t.Fatal(err)
	}
	if names, err := d.List(ctx, "/"); err != nil || len(names) != 0 {
		t.Errorf("List(/) after Delete(/) = %q, %v; want empty", names, err)
	}
}

func BenchmarkSuite(b *testing.B) {
	testsuite.Bench(b, func(*testing.B) driver.StorageDriver { return New() })
}
