package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/regfs/regfs/internal/testenv"
)

// TestS3WritesTiny runs S3 and S4 once on tiny data (a 4 MiB upload, 50
// repositories) against a versitygw of their own, so that they cannot
// rot: both rows have figures, the listing read no blob, and nothing is
// left behind. No figure is checked against its target.
func TestS3WritesTiny(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("versitygw"); err != nil {
		testenv.SkipOrFail(t, "versitygw is not installed (scripts/versitygw.sh install): %v", err)
	}
	cfg := tinyConfig(t)
	cfg.Only = []string{"S3"}
	rep, out := runTiny(t, cfg)
	wantRows(t, rep, "", []rowWant{
		{"S3", "aws-sdk-go-v2's upload manager"},
		{"S4", "ListObjectsV2"},
		{"S4", "a bare bazil.org/fuse"},
		{"S4", "the same ListObjectsV2"},
	})
	if row, ok := rep.row("S3", "driver Moves"); !ok || row.Met != "yes" {
		t.Errorf("S3 copies row %+v (found %v): the commit copied the upload", row, ok)
	}
	row, ok := rep.row("S4", "driver Readers")
	if !ok || row.Met != "yes" {
		t.Errorf("S4 blob reads row %+v (found %v): the listing read blobs", row, ok)
	}
	if !strings.Contains(out, "| S4 | ") {
		t.Error("the table has no S4 line")
	}
	assertCleanedUp(t, cfg.TempDir)
}
