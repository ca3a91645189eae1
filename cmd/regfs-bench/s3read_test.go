package main

import (
	"io"
	"os/exec"
	"slices"
	"strings"
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
	for _, want := range []struct{ id, against string }{
		{"S1", "ranged GETs of the object with aws-sdk-go-v2"},
		{"S1", "regfs on the filesystem driver"},
		{"S2", "regfs on the filesystem driver, second read"},
		{"S5", "one ranged GET of 1 byte"},
		{"S6", "the cache budget"},
	} {
		row, ok := rep.row(want.id, want.against)
		if !ok {
			t.Errorf("no %s row against %q", want.id, want.against)
			continue
		}
		if row.Value <= 0 || row.Compare <= 0 || row.Ratio <= 0 {
			t.Errorf("%s against %q: value %v, comparison %v, ratio %v: want all positive", want.id, want.against, row.Value, row.Compare, row.Ratio)
		}
		if !strings.Contains(table, "| "+want.id+" | ") {
			t.Errorf("the table has no %s line", want.id)
		}
	}
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
