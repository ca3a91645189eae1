package main

import (
	"os"
	"strings"
	"testing"
)

// Markers of the README's flag lists.
const (
	readmeFlagsBegin = "<!-- flags: generated from --help; update with REGFS_UPDATE_README=1 go test -run TestReadmeFlags ./cmd/regfs -->\n"
	readmeFlagsEnd   = "<!-- /flags -->\n"
)

// readmeFlags is what the README's Flags section lists: every flag of
// every command, as --help prints them.
func readmeFlags() string {
	var b strings.Builder
	b.WriteString(readmeFlagsBegin + "```\n")
	b.WriteString("regfs mount [flags] [SOURCE] MOUNTPOINT\nregfs SOURCE MOUNTPOINT [-o OPTIONS]\n")
	writeFlags(&b, newMountFlags(&Config{}))
	b.WriteString("\nregfs fsck [flags]\n")
	writeFlags(&b, newFsckFlags(&FsckConfig{}))
	b.WriteString("\nregfs gc [flags]\n")
	writeFlags(&b, newGCFlags(&GCConfig{}))
	b.WriteString("\nregfs version [MOUNTPOINT]\n```\n" + readmeFlagsEnd)
	return b.String()
}

// The README lists every flag of every command exactly as --help does, so
// the two cannot drift.
func TestReadmeFlags(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i := strings.Index(readme, readmeFlagsBegin)
	j := strings.Index(readme, readmeFlagsEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no generated flags section (%q ... %q)", readmeFlagsBegin, readmeFlagsEnd)
	}
	got, want := readme[i:j+len(readmeFlagsEnd)], readmeFlags()
	if got == want {
		return
	}
	if os.Getenv("REGFS_UPDATE_README") != "" {
		if err := os.WriteFile(path, []byte(readme[:i]+want+readme[j+len(readmeFlagsEnd):]), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("README.md flags updated")
		return
	}
	t.Errorf("README.md's flags differ from --help; run REGFS_UPDATE_README=1 go test -run TestReadmeFlags ./cmd/regfs. Want:\n%s", want)
}
