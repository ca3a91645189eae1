// Package storagecheck checks a registry's storage in tests with fsck
// itself (store/fsck), rather than each test walking the tree on its own.
package storagecheck

import (
	"context"
	"testing"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store/fsck"
)

// Clean runs a read-only fsck of d and fails tb unless it checked the
// whole storage and found no problem: every blob hashes to its name, every
// link is a digest naming an existing blob, nothing out of the layout, no
// leftover. It returns the report (how many blobs and links were checked).
func Clean(tb testing.TB, d driver.StorageDriver) *fsck.Report {
	tb.Helper()
	rep, err := fsck.Run(context.Background(), d, fsck.Options{})
	if err != nil {
		tb.Fatalf("fsck: %v", err)
	}
	for _, p := range rep.Problems {
		tb.Errorf("fsck: %s %s: %s", p.Kind, p.Path, p.Detail)
	}
	return rep
}
