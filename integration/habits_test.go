package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestHabits runs the habits people bring from other filesystems (issue
// #14, README "Everyday habits") through a real mount with real tools.
func TestHabits(t *testing.T) {
	habits := []scenario{
		{"Fsync", testHabitFsync},
		{"PreservingCopies", testHabitPreservingCopies},
		{"AppendAndTouchOfTags", testHabitAppendTouch},
	}
	for _, d := range []string{"filesystem", "inmemory"} {
		t.Run(d, func(t *testing.T) {
			for _, s := range habits {
				t.Run(s.name, func(t *testing.T) {
					m := startMount(t, d, mountOpts{})
					s.run(t, m)
				})
			}
		})
	}
}

// wantFail runs script, which must fail with output containing want.
func wantFail(t *testing.T, script, want string) {
	t.Helper()
	out, err := shErr(t, script)
	if err == nil {
		t.Errorf("%s: succeeded, want failure %q\n%s", script, want, out)
		return
	}
	if !strings.Contains(out, want) {
		t.Errorf("%s: output %q, want it to contain %q", script, out, want)
	}
}

// testHabitFsync: fsync, fdatasync, dd conv=fsync and sync FILE succeed on
// every kind of node, and on a manifest being written (stored at close).
func testHabitFsync(t *testing.T, m *mount) {
	mf := pushImage(t, m, "r", "v1", 1)
	rev := sha(mf)
	layer := strings.TrimSpace(sh(t, fmt.Sprintf("ls %q | head -1", m.path("r/_layers"))))
	for _, p := range []string{
		m.path("r/_layers", layer), m.path("r/_manifests", rev), m.path("r/_manifests/v1"),
		m.path("r/_layers"), m.path("r/_manifests"), m.path("r/_uploads"), m.path("r"), m.Dir,
		m.path(".regfs/stats"),
	} {
		sh(t, fmt.Sprintf("sync %q && sync -d %q", p, p))
	}
	// A manifest being written, by dd with conv=fsync: fsync returns 0, the
	// manifest is stored at close.
	src := writeFile(t, mf)
	sh(t, fmt.Sprintf("dd if=%q of=%q conv=fsync status=none", src, m.path("r/_manifests/v2")))
	if got := readFile(t, m.path("r/_manifests/v2")); string(got) != string(mf) {
		t.Errorf("v2 after dd conv=fsync reads %q", got)
	}
	// An upload: dd conv=fsync,fdatasync commits at close.
	blob := randomBytes(t, 70000)
	bsrc := writeFile(t, blob)
	sh(t, fmt.Sprintf("dd if=%q of=%q bs=4096 conv=fsync status=none", bsrc, m.path("r/_uploads", sha(blob))))
	sh(t, fmt.Sprintf("test -f %q", m.path("r/_layers", sha(blob))))
}

// testHabitPreservingCopies: cp -p, and chmod, chown and touch of
// uploads, layers and tags succeed and change nothing.
func testHabitPreservingCopies(t *testing.T, m *mount) {
	mf := pushImage(t, m, "r", "v1", 0)
	a, b := randomBytes(t, 5000), randomBytes(t, 6000)
	srcA, srcB := writeFile(t, a), writeFile(t, b)
	sh(t, fmt.Sprintf("chmod 600 %q && touch -d 2001-01-01 %q", srcA, srcA))
	sh(t, fmt.Sprintf("cp -p %q %q", srcA, m.path("r/_uploads", sha(a))))
	sh(t, fmt.Sprintf("cp -p %q %q", srcB, m.path("r/_uploads", sha(b))))
	for _, d := range []string{sha(a), sha(b)} {
		p := m.path("r/_layers", d)
		if got := sh(t, fmt.Sprintf("stat -c %%a %q", p)); strings.TrimSpace(got) != "444" {
			t.Errorf("mode of %s: %s", d, got)
		}
		sh(t, fmt.Sprintf("chmod 600 %q && chown %d %q && touch %q", p, 0, p, p))
	}
	tag := m.path("r/_manifests/v1")
	sh(t, fmt.Sprintf("chmod 600 %q && touch %q && chmod 755 %q", tag, tag, m.path("r")))
	if got := readFile(t, tag); string(got) != string(mf) {
		t.Errorf("v1 after chmod reads %q", got)
	}
	if string(readFile(t, m.path("r/_layers", sha(a)))) != string(a) {
		t.Error("layer a changed")
	}
	if got := sh(t, fmt.Sprintf("stat -c %%a %q", tag)); strings.TrimSpace(got) != "644" {
		t.Errorf("mode of v1 after chmod 600: %s", got)
	}
	wantFail(t, fmt.Sprintf("chmod u+s %q", tag), "Operation not permitted")
}

// testHabitAppendTouch: >> to a tag is EPERM at open, a write past the end
// of a manifest being written is EBADMSG (never NUL padding), touch of a new
// name is EINVAL; each is a line in .regfs/errors and changes nothing.
func testHabitAppendTouch(t *testing.T, m *mount) {
	mf := pushImage(t, m, "r", "v1", 0)
	tag := m.path("r/_manifests/v1")
	wantFail(t, fmt.Sprintf("echo x >> %q", tag), "Operation not permitted")
	if got := readFile(t, tag); string(got) != string(mf) {
		t.Errorf("v1 after >> reads %q", got)
	}
	wantFail(t, fmt.Sprintf("echo '{}' | dd of=%q bs=1 seek=10 status=none", m.path("r/_manifests/holey")), "Bad message")
	wantFail(t, fmt.Sprintf("touch %q", m.path("r/_manifests/newname")), "Invalid argument")
	sh(t, fmt.Sprintf("touch %q", tag))
	if got := sh(t, "ls "+m.path("r/_manifests")); strings.Contains(got, "newname") || strings.Contains(got, "holey") {
		t.Errorf("_manifests after the refusals:\n%s", got)
	}
	errs := sh(t, "cat "+m.path(".regfs/errors"))
	for _, want := range []string{"r/_manifests/v1", "cannot be appended", "r/_manifests/holey", "leaves a hole", "r/_manifests/newname", "empty manifest is not a push"} {
		if !strings.Contains(errs, want) {
			t.Errorf(".regfs/errors does not say %q:\n%s", want, errs)
		}
	}
}
