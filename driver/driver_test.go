package driver

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// reference is the path syntax written the slow, obvious way.
var component = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func reference(p string) bool {
	if !strings.HasPrefix(p, "/") || p == "/" {
		return false
	}
	for _, c := range strings.Split(p[1:], "/") {
		if !component.MatchString(c) || c == "." || c == ".." {
			return false
		}
	}
	return true
}

func TestValidPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/a": true, "/a/b": true, "/_layers/sha256": true, "/...": true, "/..a/.b": true,
		"/A-Z_0.9": true,
		"":         false, "/": false, "a": false, "a/b": false, "//": false, "/a/": false,
		"/a//b": false, "/.": false, "/..": false, "/a/./b": false, "/a/../b": false,
		"/a b": false, "/a:b": false, "/\u00e9": false, "/a\x00": false,
	} {
		if got := ValidPath(p); got != want {
			t.Errorf("ValidPath(%q) = %v, want %v", p, got, want)
		}
		if got := reference(p); got != want {
			t.Errorf("reference(%q) = %v, want %v (the test is wrong)", p, got, want)
		}
	}
}

func FuzzValidPath(f *testing.F) {
	for _, p := range []string{"/a/b", "/a/../b", "//", "/a/", "/.x/..y/...", "/a b"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if got, want := ValidPath(p), reference(p); got != want {
			t.Errorf("ValidPath(%q) = %v, reference says %v", p, got, want)
		}
	})
}

func TestValidComponent(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "_uploads": true, "...": true, "": false, ".": false, "..": false, "a/b": false,
	} {
		if got := ValidComponent(name); got != want {
			t.Errorf("ValidComponent(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestIsNotFound(t *testing.T) {
	nf := PathNotFoundError{Path: "/a", Driver: "x"}
	for err, want := range map[error]bool{
		nf:                               true,
		fmt.Errorf("ctx: %w", nf):        true,
		&Error{Driver: "x", Err: nf}:     true,
		InvalidPathError{Path: "/a"}:     false,
		&Error{Driver: "x", Err: nil}:    false,
		fmt.Errorf("path not found: /a"): false,
	} {
		if got := IsNotFound(err); got != want {
			t.Errorf("IsNotFound(%v) = %v, want %v", err, got, want)
		}
	}
	if IsNotFound(nil) {
		t.Error("IsNotFound(nil) = true")
	}
}

func BenchmarkValidPath(b *testing.B) {
	p := "/docker/registry/v2/blobs/sha256/ab/ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab/data"
	for b.Loop() {
		if !ValidPath(p) {
			b.Fatal("invalid")
		}
	}
}
