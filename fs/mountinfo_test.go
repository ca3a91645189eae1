package fs

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	table := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
42 27 0:39 / /tmp/with\040space rw,nosuid - fuse.regfs regfs rw
43 27 0:40 / /tmp/back\134slash rw - tmpfs none rw
`
	mounts, err := parseMountinfo(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	has := func(p string) bool {
		return slices.ContainsFunc(mounts, func(m Mount) bool { return m.Point == p })
	}
	for _, c := range []struct {
		p    string
		want bool
	}{
		{"/", true}, {"/tmp/with space", true}, {`/tmp/back\slash`, true}, {"/tmp", false}, {"/tmp/with", false},
	} {
		if got := has(c.p); got != c.want {
			t.Errorf("mount point %q listed: %v, want %v", c.p, got, c.want)
		}
	}
	if want := (Mount{Point: "/tmp/with space", Dev: "0:39"}); mounts[1] != want {
		t.Errorf("second line parsed as %+v, want %+v", mounts[1], want)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b`: "/tmp/a b",
		`/plain`:      "/plain",
		`/x\134y`:     `/x\y`,
		`/short\04`:   `/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
