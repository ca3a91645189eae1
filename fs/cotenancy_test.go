package fs

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A layer or revision another writer deletes (here: through the store,
// under the mount) disappears from stat within the entry timeout, though
// its attributes are cached for long; a second stat does not bring it back.
func TestDeletedUnderneathDisappears(t *testing.T) {
	m := newMount(t, mountConfig{})
	ctx := context.Background()
	_, mfd, layers := m.pushImage("app", "v1", 1)
	layer := m.path("app/_layers", digest.FromBytes(layers[0]).String())
	rev := m.path("app/_manifests", mfd.String())
	for _, p := range []string{layer, rev} {
		if _, err := m.stat(p); err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
	}
	if err := m.repo("app").Layers().Unlink(ctx, digest.FromBytes(layers[0])); err != nil {
		t.Fatal(err)
	}
	if err := m.repo("app").Manifests().Delete(ctx, mfd); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{layer, rev} {
		m.eventually("stat of "+p+" fails after it was deleted underneath", func() bool {
			_, err := m.stat(p)
			return errors.Is(err, os.ErrNotExist)
		})
		if _, err := m.stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s again: %v, want ENOENT", p, err)
		}
	}
}
