package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/inmemory"
)

// FuzzRepositoryNameAccepted is FuzzRepositoryName's other direction: a
// name that distribution/reference parses as the whole path of a
// reference on a registry host (no tag, no digest), within the registry's
// length limit, is accepted by the store.
func FuzzRepositoryNameAccepted(f *testing.F) {
	for _, s := range []string{"a", "library/ubuntu", "a/b/c", "a__b", "a--b", "a.b_c-d", "a---b", "a1/2b", "x:1", "a/b@sha256:" + strings.Repeat("a", 64), "UPPER"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		named, err := reference.ParseNormalizedNamed("registry.example.com/" + name)
		if err != nil || reference.Domain(named) != "registry.example.com" || reference.Path(named) != name || named.String() != "registry.example.com/"+name {
			return // not a plain repository path for reference
		}
		if len(name) > reference.RepositoryNameTotalLengthMax {
			return
		}
		if err := ValidateRepositoryName(name); err != nil {
			t.Fatalf("reference takes %q as a repository path, the store refuses it: %v", name, err)
		}
	})
}

// tagGrammar is the tag grammar of the distribution spec, written out
// here rather than taken from the reference package.
var tagGrammar = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// FuzzTag checks both directions of tag validation: the store accepts
// exactly the tags of the spec's grammar, and reference agrees.
func FuzzTag(f *testing.F) {
	for _, s := range []string{"latest", "v1.0", "_x", ".x", "-x", "a:b", "", strings.Repeat("a", 128), strings.Repeat("a", 129), "v1~", ".v1.swp", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		err := ValidateTag(tag)
		want := tagGrammar.MatchString(tag)
		if (err == nil) != want {
			t.Fatalf("ValidateTag(%q) = %v; the grammar says valid=%v", tag, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Fatalf("ValidateTag(%q) = %v, not ErrInvalidName", tag, err)
		}
		ref, rerr := reference.ParseNormalizedNamed("registry.example.com/a:" + tag)
		tagged, ok := ref.(reference.Tagged)
		refOK := rerr == nil && ok && tagged.Tag() == tag
		if refOK != want {
			t.Fatalf("reference parses a:%q as %v, %v; the grammar says valid=%v", tag, ref, rerr, want)
		}
	})
}

// linkGrammar is what a link file holds: the digest, no newline.
var linkGrammar = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// FuzzParseLink checks that ParseLink (fsck's and gc's parser) takes
// exactly "sha256:<64 lowercase hex>", that LinkContent gives the bytes
// back, and that the store's own reader (checkStoredDigest in readLink)
// agrees on every content.
func FuzzParseLink(f *testing.F) {
	d := digest.FromString("x").String()
	for _, s := range []string{d, d + "\n", " " + d, strings.ToUpper(d), d[:70], "sha512:" + strings.Repeat("a", 128), "", "sha256:" + strings.Repeat("g", 64)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := ParseLink(b)
		if ok != linkGrammar.Match(b) {
			t.Fatalf("ParseLink(%q) = %q, %v; the grammar says %v", b, got, ok, !ok)
		}
		if ok && (string(got) != string(b) || !bytes.Equal(LinkContent(got), b)) {
			t.Fatalf("ParseLink(%q) = %q, LinkContent gives %q", b, got, LinkContent(got))
		}
		if store := checkStoredDigest(digest.Digest(b)) == nil; store != ok {
			t.Fatalf("link %q: the store's reader accepts=%v, ParseLink=%v", b, store, ok)
		}
	})
}

// FuzzHashStateOffset checks the names of upload hash states
// (_uploads/<id>/hashstates/sha256/<offset>): ParsePath takes exactly the
// canonical decimal numbers that fit an int64, and every offset's path
// parses back to it.
func FuzzHashStateOffset(f *testing.F) {
	for _, s := range []string{"0", "1", "007", "-1", "+1", "9223372036854775807", "9223372036854775808", "1e3", " 1", ""} {
		f.Add(s, int64(len(s)))
	}
	const id = "0b7e6a9c-3f1d-4c2e-9a55-6d3c1f2e8b40"
	f.Fuzz(func(t *testing.T, name string, off int64) {
		l, err := ParsePath("repositories/a/_uploads/" + id + "/hashstates/sha256/" + name)
		n, perr := strconv.ParseInt(name, 10, 64)
		want := perr == nil && n >= 0 && strconv.FormatInt(n, 10) == name
		if (err == nil) != want {
			t.Fatalf("ParsePath of hash state %q: %+v, %v; want accepted=%v", name, l, err, want)
		}
		if want && (l.Kind != PathUploadHashState || l.Offset != n) {
			t.Fatalf("hash state %q parses as %+v", name, l)
		}
		if off < 0 {
			return
		}
		p, err := Location{Kind: PathUploadHashState, Repository: "a", Upload: id, Offset: off}.Path()
		if err != nil {
			t.Fatalf("Path of offset %d: %v", off, err)
		}
		if l, err := ParsePath(p); err != nil || l.Offset != off || l.Kind != PathUploadHashState {
			t.Fatalf("offset %d: path %q parses as %+v, %v", off, p, l, err)
		}
	})
}

// FuzzHashStateDecode stores arbitrary bytes as the hash state an upload
// resumes from (as a crash, another writer or a damaged disk could leave
// it) and checks that the upload still commits the right blob: a state
// that does not decode is dropped and the data re-hashed, one that decodes
// to the wrong hash is caught at commit and the data re-hashed. Nothing
// panics, and the blob holds exactly the bytes written.
func FuzzHashStateDecode(f *testing.F) {
	first, rest := []byte("the first part of a layer, "), []byte("and the rest of it")
	good := sha256.New()
	good.Write(first)
	goodState, _ := good.(encoding.BinaryMarshaler).MarshalBinary()
	other := sha256.New()
	other.Write(bytes.ToUpper(first))
	otherState, _ := other.(encoding.BinaryMarshaler).MarshalBinary()
	for _, s := range [][]byte{goodState, otherState, goodState[:len(goodState)-1], {}, []byte("sha\x03garbage")} {
		f.Add(s)
	}
	all := append(append([]byte{}, first...), rest...)
	want := digest.FromBytes(all)
	f.Fuzz(func(t *testing.T, state []byte) {
		ctx := context.Background()
		d := inmemory.New()
		s := newStore(t, d)
		r := repo(t, s, "app")
		up, err := r.Uploads().Create(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write(first); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		p := mustPath(uploadHashStatePathSpec{name: "app", id: up.ID(), offset: int64(len(first))})
		if err := d.PutContent(ctx, p, state); err != nil {
			t.Fatal(err)
		}
		up, err = r.Uploads().Resume(ctx, up.ID())
		if err != nil {
			t.Fatalf("resuming with hash state %q: %v", state, err)
		}
		if up.Size() != int64(len(first)) {
			t.Fatalf("resumed at %d, want %d", up.Size(), len(first))
		}
		if _, err := up.Write(rest); err != nil {
			t.Fatal(err)
		}
		desc, err := up.Commit(ctx)
		if err != nil {
			t.Fatalf("commit after resuming with hash state %q: %v", state, err)
		}
		if desc.Digest != want {
			t.Fatalf("committed %s, want %s", desc.Digest, want)
		}
		got, err := d.GetContent(ctx, mustPath(blobDataPathSpec{digest: want}))
		if err != nil || !bytes.Equal(got, all) {
			t.Fatalf("blob data %q, %v; want %q", got, err, all)
		}
	})
}
