package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
)

// FuzzRepositoryName checks that every name the store accepts maps to a
// driver path inside repositories/ made of valid, non-reserved components,
// that the reference package agrees it is a repository path, and that every
// name it refuses is refused with ErrInvalidName and yields no path.
func FuzzRepositoryName(f *testing.F) {
	for _, s := range []string{"a", "library/ubuntu", "a/b/c", "a__b", "a--b", "a.b_c-d", "", "A", "a//b", "../a", "_a", "a/_layers", "a:1/b", "localhost/x", strings.Repeat("a/", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateRepositoryName(name)
		p, perr := pathFor(repositoryPathSpec{name: name})
		if err != nil {
			if !errors.Is(err, ErrInvalidName) || perr == nil {
				t.Fatalf("refused %q with %v, pathFor = %q, %v", name, err, p, perr)
			}
			return
		}
		if perr != nil || p != storageRoot+"/repositories/"+name || !driver.ValidPath(p) {
			t.Fatalf("accepted %q but pathFor = %q, %v", name, p, perr)
		}
		if len(name) > reference.RepositoryNameTotalLengthMax || name != strings.ToLower(name) {
			t.Fatalf("accepted %q", name)
		}
		for _, c := range strings.Split(name, "/") {
			if c == "" || c == "." || c == ".." || strings.HasPrefix(c, "_") || !driver.ValidComponent(c) {
				t.Fatalf("accepted %q with component %q", name, c)
			}
		}
		named, rerr := reference.ParseNormalizedNamed("example.com/" + name)
		if rerr != nil || reference.Path(named) != name {
			t.Fatalf("accepted %q, which reference parses as %v, %v", name, named, rerr)
		}
	})
}

// FuzzDigest checks that an accepted digest is canonical sha256 and makes a
// blob path with its own hex in it, and that everything else is refused
// with ErrInvalidDigest and yields no path.
func FuzzDigest(f *testing.F) {
	for _, s := range []string{string(digest.FromString("x")), "sha256:", "sha256:../x", "sha512:" + strings.Repeat("a", 128), "SHA256:" + strings.Repeat("a", 64), strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		p, perr := pathFor(blobDataPathSpec{digest: digest.Digest(s)})
		if err != nil {
			if !errors.Is(err, ErrInvalidDigest) || perr == nil {
				t.Fatalf("refused %q with %v, pathFor = %q, %v", s, err, p, perr)
			}
			return
		}
		if string(d) != s || len(s) != 71 || d.Algorithm() != digest.SHA256 || d.Encoded() != strings.ToLower(d.Encoded()) {
			t.Fatalf("accepted %q as %q", s, d)
		}
		want := storageRoot + "/blobs/sha256/" + s[7:9] + "/" + s[7:] + "/data"
		if perr != nil || p != want || !driver.ValidPath(p) {
			t.Fatalf("pathFor(%q) = %q, %v", s, p, perr)
		}
	})
}
