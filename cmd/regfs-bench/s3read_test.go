package main

import (
	"io"
	"os/exec"
	"slices"
	"testing"

	"github.com/regfs/regfs/driver/s3/s3test"
)

// checkS3Rows checks the S rows of a tiny run (TestBenchTiny): present,
// with figures, wherever versitygw is installed, and in CI, where it must
// be. No figure is checked against its target.
func checkS3Rows(t *testing.T, rep *Report, table string) {
	t.Helper()
	if _, err := exec.LookPath("versitygw"); err != nil && !s3test.InCI() {
		t.Log("versitygw not installed: the S rows were left out")
		return
	}
	wantRows(t, rep, table, []rowWant{
		{"S1", "ranged GETs of the object with aws-sdk-go-v2"},
		{"S1", "regfs on the filesystem driver"},
		{"S2", "regfs on the filesystem driver, second read"},
		{"S5", "one ranged GET of 1 byte"},
		{"S5", "a List, then a ranged GET of 64 KiB"},
		{"S5", "head -c1 of the layer's file"},
		{"S6", "the cache budget"},
	})
}

func TestParseFlagsOnlyS(t *testing.T) {
	cfg, err := parseFlags([]string{"-only", "s2,S5,P2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"S1", "S5", "P1"}; !slices.Equal(cfg.Only, want) {
		t.Errorf("-only s2,S5,P2: %q, want %q", cfg.Only, want)
	}
	for _, bad := range []string{"S7", "S0", "P9", "X1"} {
		if _, err := parseFlags([]string{"-only", bad}, io.Discard); err == nil {
			t.Errorf("-only %s accepted", bad)
		}
	}
}
