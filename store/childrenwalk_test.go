package store

import (
	"context"
	"slices"
	"testing"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
)

// childrenWalks records whether each Walk was told that its caller wants
// the children only (driver.WithChildrenWalk).
type childrenWalks struct {
	driver.StorageDriver
	told []bool
}

func (d *childrenWalks) Walk(ctx context.Context, p string, fn driver.WalkFn) error {
	d.told = append(d.told, driver.ChildrenWalk(ctx))
	return d.StorageDriver.Walk(ctx, p, fn)
}

// TestChildrenWalkTellsTheDriver: Children tells the driver that it wants
// the children only, so that S3 lists them with one delimited listing.
func TestChildrenWalkTellsTheDriver(t *testing.T) {
	d := &childrenWalks{StorageDriver: inmemory.New()}
	s := newStore(t, d)
	pushBlob(t, repo(t, s, "team/app"), []byte("layer"))
	d.told = nil
	kids, err := s.Children(context.Background(), "team")
	if err != nil || !slices.Equal(kids, []string{"app"}) {
		t.Fatalf("Children(team) = %q, %v", kids, err)
	}
	if !slices.Equal(d.told, []bool{true}) {
		t.Errorf("Children's Walks told children only: %v, want [true]", d.told)
	}
}
