package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestValidateRepositoryName(t *testing.T) {
	good := []string{
		"a", "hello", "library/ubuntu", "a/b/c/d", "my-app", "my.app", "my_app", "my__app", "my--app",
		"0", "9a/b9", "localhost", "example.com/app", strings.Repeat("a", 255),
		strings.Repeat("a/", 127) + "a",
	}
	bad := []string{
		"", "A", "Library/ubuntu", "a/", "/a", "a//b", ".", "..", "a/..", "../a", "_a", "a/_layers",
		"-a", "a-", "a.", ".a", "a..b", "a___b", "a b", "a:5000/b", "localhost:5000/b", "a@b",
		"a\x00b", "ä", strings.Repeat("a", 256), "a/" + strings.Repeat("b", 254), "a\\b",
	}
	for _, n := range good {
		if err := ValidateRepositoryName(n); err != nil {
			t.Errorf("ValidateRepositoryName(%q) = %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateRepositoryName(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateRepositoryName(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func TestValidateTag(t *testing.T) {
	for _, tag := range []string{"latest", "1", "_", "v1.0.0-rc.1", "A_b-C.d", strings.Repeat("x", 128)} {
		if err := ValidateTag(tag); err != nil {
			t.Errorf("ValidateTag(%q) = %v", tag, err)
		}
	}
	for _, tag := range []string{"", ".", "..", "-a", ".a", "a/b", "a:b", "a b", strings.Repeat("x", 129), "ä"} {
		if err := ValidateTag(tag); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateTag(%q) = %v, want ErrInvalidName", tag, err)
		}
	}
}

func TestParseDigest(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	if d, err := ParseDigest("sha256:" + hex); err != nil || d.Encoded() != hex {
		t.Fatalf("ParseDigest = %s, %v", d, err)
	}
	for _, s := range []string{
		"", "sha256:", "sha256:" + hex[:63], "sha256:" + hex + "0", "sha256:" + strings.ToUpper(hex),
		"SHA256:" + hex, hex, "sha256:" + hex[:62] + "zz", "sha256:../" + hex[:61],
		string(digest.SHA512.FromString("x")), string(digest.SHA384.FromString("x")), "md5:" + hex[:32],
	} {
		if _, err := ParseDigest(s); !errors.Is(err, ErrInvalidDigest) {
			t.Errorf("ParseDigest(%q) = %v, want ErrInvalidDigest", s, err)
		}
	}
}

func TestValidateUploadID(t *testing.T) {
	if err := ValidateUploadID(tdUploadID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", strings.ToUpper(tdUploadID), "{" + tdUploadID + "}", strings.ReplaceAll(tdUploadID, "-", ""), tdUploadID + "/x", "../" + tdUploadID} {
		if err := ValidateUploadID(id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("ValidateUploadID(%q) = %v", id, err)
		}
	}
}
