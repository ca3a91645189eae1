package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/testenv"
)

// TestHabits runs the habits people bring from other filesystems (issue
// #14, README "Everyday habits") through a real mount with real tools.
func TestHabits(t *testing.T) {
	habits := []scenario{
		{"Fsync", testHabitFsync},
		{"PreservingCopies", testHabitPreservingCopies},
		{"AppendAndTouchOfTags", testHabitAppendTouch},
		{"MvRetags", testHabitMv},
		{"EditTagInPlace", testHabitEdit},
		{"RmRfRepository", testHabitRmRf},
		{"LsShowsDots", testHabitDots},
		{"Df", testHabitDf},
		{"TimesFromStorage", testHabitTimes},
		{"TwoCpOfOneDigest", testHabitTwoCp},
		{"PushDirectoryOfBlobs", testHabitPushBlobsDir},
		{"InstallAfterCommit", testHabitInstall},
		{"RsyncIntoUploads", testHabitRsync},
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

// testHabitMv: mv of a tag re-tags; a revision cannot move.
func testHabitMv(t *testing.T, m *mount) {
	mf := pushImage(t, m, "r", "a", 0)
	other := pushImage(t, m, "r", "b", 0)
	dir := m.path("r/_manifests")
	sh(t, fmt.Sprintf("cd %q && mv a c", dir))
	got := sh(t, fmt.Sprintf("cd %q && ls", dir))
	if strings.Contains(got, "a\n") || !strings.Contains(got, "c\n") {
		t.Errorf("_manifests after mv a c:\n%s", got)
	}
	// Over an existing tag: b now names a's revision.
	sh(t, fmt.Sprintf("cd %q && mv c b", dir))
	if b := readFile(t, m.path("r/_manifests/b")); string(b) != string(mf) {
		t.Errorf("b after mv c b reads %q", b)
	}
	if _, err := shErr(t, fmt.Sprintf("test -e %q", m.path("r/_manifests/c"))); err == nil {
		t.Error("c still exists after mv c b")
	}
	// The revision b named before stays; revisions do not move.
	sh(t, fmt.Sprintf("test -f %q", m.path("r/_manifests", sha(other))))
	wantFail(t, fmt.Sprintf("cd %q && mv %s d", dir, sha(mf)), "Operation not permitted")
	wantFail(t, fmt.Sprintf("mv %q %q", m.path("r/_manifests/b"), m.path("r/_layers/b")), "Operation not permitted")
	// A name still being written cannot move, nor be moved over.
	wantFail(t, fmt.Sprintf("cd %q && exec 3>new && mv new x", dir), "Device or resource busy")
	wantFail(t, fmt.Sprintf("cd %q && exec 3>new && mv b new", dir), "Device or resource busy")
	// In storage: the tag b points at a's revision and no tag a or c is left.
	if m.Root != "" {
		tags := m.Root + "/docker/registry/v2/repositories/r/_manifests/tags"
		got := sh(t, fmt.Sprintf("ls %q && cat %q", tags, tags+"/b/current/link"))
		if got != "b\n"+sha(mf) {
			t.Errorf("tags in storage:\n%s", got)
		}
	}
	// To another repository: EXDEV, so mv copies (a verified push there)
	// and removes the tag here.
	sh(t, fmt.Sprintf("mkdir %q && ln %q/* %q", m.path("o"), m.path("r/_layers"), m.path("o/_layers/")))
	sh(t, fmt.Sprintf("mv %q %q", m.path("r/_manifests/b"), m.path("o/_manifests/b")))
	if got := readFile(t, m.path("o/_manifests/b")); string(got) != string(mf) {
		t.Errorf("o's b after mv across repositories reads %q", got)
	}
	if _, err := shErr(t, "test -e "+m.path("r/_manifests/b")); err == nil {
		t.Error("r's b still exists after mv to o")
	}
}

// testHabitEdit: sed -i, cp to a temporary name then mv over the tag, and a
// vim save push the edited manifest as the tag; no temporary name is left.
func testHabitEdit(t *testing.T, m *mount) {
	mf := pushImage(t, m, "r", "v1", 1)
	dir := m.path("r/_manifests")
	tag := dir + "/v1"
	check := func(what string, want []byte) {
		t.Helper()
		if got := readFile(t, tag); string(got) != string(want) {
			t.Errorf("%s: v1 reads\n%s\nwant\n%s", what, got, want)
		}
		if got := lines(sh(t, fmt.Sprintf("cd %q && ls | grep -v ^sha256:", dir))); len(got) != 1 || got[0] != "v1" {
			t.Errorf("%s: tags %v, want [v1]", what, got)
		}
	}
	// sed -i
	sh(t, fmt.Sprintf("sed -i 's/\"schemaVersion\": 2/\"schemaVersion\":  2/' %q", tag))
	edited := []byte(strings.Replace(string(mf), `"schemaVersion": 2`, `"schemaVersion":  2`, 1))
	check("sed -i", edited)
	sh(t, fmt.Sprintf("test -f %q", m.path("r/_manifests", sha(edited))))

	// cp to a temporary name, then mv over the tag.
	src := writeFile(t, mf)
	sh(t, fmt.Sprintf("cp %q %q && mv %q %q", src, dir+"/v1.tmp", dir+"/v1.tmp", tag))
	check("cp + mv", mf)

	// Same revision under both names: mv itself refuses ("same file",
	// as a tag shares its revision's inode); rm of the copy is the way.
	sh(t, fmt.Sprintf("cp %q %q", src, dir+"/v1.tmp"))
	wantFail(t, fmt.Sprintf("mv %q %q", dir+"/v1.tmp", tag), "are the same file")
	sh(t, "rm "+dir+"/v1.tmp")
	check("same file", mf)

	// Editors' swap and backup names are not tags.
	wantFail(t, fmt.Sprintf("cd %q && : > .v1.swp", dir), "Invalid argument")
	wantFail(t, fmt.Sprintf("cd %q && : > v1~", dir), "Invalid argument")

	// A rejected edit changes nothing and leaves no temporary name.
	wantFail(t, fmt.Sprintf("sed -i 's/schemaVersion/schemaVersio/' %q", tag), "")
	check("rejected sed -i", mf)

	// vim: ex mode, the default settings (a backup while writing, fsync).
	if _, err := shErr(t, "command -v vim"); err != nil {
		t.Log("vim is not installed: skipping the vim save")
		return
	}
	sh(t, fmt.Sprintf("cd %q && HOME=%q vim -Nu NONE -es -c '%%s/\"schemaVersion\": 2/\"schemaVersion\":  2/' -c wq v1", dir, t.TempDir()))
	check("vim", append(edited, '\n')) // vim ends the last line
}

// testHabitRmRf: rm -rf of a repository deletes its tags, revisions, layer
// links and uploads and the directory; blob data stays for gc. rmdir of the
// namespace it leaves empty removes that too.
func testHabitRmRf(t *testing.T, m *mount) {
	mf := pushImage(t, m, "ns/app", "v1", 2)
	keep := pushImage(t, m, "ns/keep", "v1", 1)
	sh(t, fmt.Sprintf("cd %q && ln %s v2", m.path("ns/app/_manifests"), sha(mf)))
	// An upload in progress.
	sh(t, fmt.Sprintf("printf abc > %q", m.path("ns/app/_uploads", sha([]byte("abcdef")))))
	sh(t, "rm -rf "+m.path("ns/app"))
	if got := sh(t, "ls "+m.path("ns")); strings.TrimSpace(got) != "_layers\n_manifests\n_uploads\nkeep" {
		t.Errorf("ls ns after rm -rf ns/app:\n%s", got)
	}
	if _, err := shErr(t, "test -e "+m.path("ns/app")); err == nil {
		t.Error("ns/app still exists")
	}
	if got := readFile(t, m.path("ns/keep/_manifests/v1")); string(got) != string(keep) {
		t.Error("ns/keep changed")
	}
	if m.Root != "" {
		v2 := m.Root + "/docker/registry/v2"
		if _, err := shErr(t, fmt.Sprintf("test -e %q", v2+"/repositories/ns/app")); err == nil {
			t.Error("ns/app is still in storage")
		}
		// The blobs stay for gc.
		sh(t, fmt.Sprintf("test -f %q", v2+"/blobs/sha256/"+sha(mf)[7:9]+"/"+sha(mf)[7:]+"/data"))
	}
	// rm -rf of the whole namespace, then nothing is left.
	sh(t, "rm -rf "+m.path("ns"))
	if got := sh(t, "ls "+m.Dir); strings.TrimSpace(got) != "" {
		t.Errorf("ls of the mount after rm -rf ns:\n%s", got)
	}
	if m.Root != "" {
		if got := sh(t, "ls "+m.Root+"/docker/registry/v2/repositories"); strings.TrimSpace(got) != "" {
			t.Errorf("repositories in storage after rm -rf ns:\n%s", got)
		}
	}
}

// testHabitDots: ls -a lists . and .. in every directory, with the inodes
// stat reports for the directory and its parent.
func testHabitDots(t *testing.T, m *mount) {
	pushImage(t, m, "ns/app", "v1", 1)
	sh(t, fmt.Sprintf("printf abc > %q", m.path("ns/app/_uploads", sha([]byte("abcdef")))))
	for _, d := range []string{"", ".regfs", "ns", "ns/app", "ns/app/_layers", "ns/app/_manifests", "ns/app/_uploads"} {
		p := m.path(d)
		got := sh(t, fmt.Sprintf("ls -ai %q | awk '$2==\".\"||$2==\"..\"{print $1, $2}'", p))
		want := sh(t, fmt.Sprintf("stat -c '%%i .' %q && stat -c '%%i ..' %q", p, p+"/.."))
		if got != want {
			t.Errorf("ls -ai %s: dots\n%swant\n%s", d, got, want)
		}
	}
}

// testHabitDf: df of the mount shows the backend's size: the file system of
// the filesystem driver's root, 1 PiB for memory (and S3).
func testHabitDf(t *testing.T, m *mount) {
	size := func(p string) string {
		return strings.TrimSpace(sh(t, fmt.Sprintf("df -B1 --output=size %q | tail -1", p)))
	}
	want := "1125899906842624"
	if m.Root != "" {
		want = size(m.Root)
	}
	if got := size(m.Dir); got != want {
		t.Errorf("df size of the mount = %s, want %s", got, want)
	}
	if avail := strings.TrimSpace(sh(t, fmt.Sprintf("df -B1 --output=avail %q | tail -1", m.Dir))); avail == "0" {
		t.Error("df shows no space available")
	}
}

// TestHabitsDfS3: on S3, df shows the nominal 1 PiB.
func TestHabitsDfS3(t *testing.T) {
	testHabitDf(t, startMount(t, "s3", mountOpts{}))
}

// testHabitTimes: a layer's mtime is its link's in storage, a revision's
// its revision link's, a tag's its current link's; a directory's is the
// newest of its children regfs has seen.
func testHabitTimes(t *testing.T, m *mount) {
	if m.Root == "" {
		t.Skip("sets link times in the filesystem driver's root")
	}
	mf := pushImage(t, m, "r", "v1", 1)
	layer := strings.TrimSpace(sh(t, fmt.Sprintf("ls %q | head -1", m.path("r/_layers"))))
	repo := m.Root + "/docker/registry/v2/repositories/r"
	links := map[string]string{
		"r/_layers/" + layer:      repo + "/_layers/sha256/" + layer[7:] + "/link",
		"r/_manifests/" + sha(mf): repo + "/_manifests/revisions/sha256/" + sha(mf)[7:] + "/link",
		"r/_manifests/v1":         repo + "/_manifests/tags/v1/current/link",
	}
	m.stop()
	stamps := []string{"2001-02-03 04:05:06", "2002-02-03 04:05:06", "2003-02-03 04:05:06"}
	i := 0
	for _, link := range links {
		sh(t, fmt.Sprintf("touch -d %q %q", stamps[i], link))
		i++
	}
	// A directory's time is the newest child regfs has seen when the kernel
	// fetches its attributes, which it keeps as long as the listing
	// (--dir-cache-time): a short one here, so the test need not wait.
	m.args = append([]string{m.args[0], "--dir-cache-time", "1s"}, m.args[1:]...)
	m.restart()
	stat := func(p string) string { return strings.TrimSpace(sh(t, "stat -c %Y "+p)) }
	for name, link := range links {
		if got, want := stat(m.path(name)), stat(link); got != want {
			t.Errorf("mtime of %s = %s, want its link's %s", name, got, want)
		}
	}
	// Listed, a directory shows its newest child's time.
	sh(t, "ls -l "+m.path("r/_layers")+" "+m.path("r/_manifests"))
	time.Sleep(1500 * time.Millisecond)
	newestLink := strings.TrimSpace(sh(t, fmt.Sprintf("find %q -name link -printf '%%Ts\\n' | sort -n | tail -1", repo+"/_layers")))
	if got := stat(m.path("r/_layers")); got != newestLink {
		t.Errorf("mtime of r/_layers = %s, want its newest link's %s", got, newestLink)
	}
	// ls -t orders by push time: the tag was pointed last (2003 at most).
	newest := stat(links["r/_manifests/v1"])
	if got := stat(m.path("r/_manifests/v1")); got != newest {
		t.Errorf("tag mtime %s, want %s", got, newest)
	}
}

// testHabitTwoCp: a second cp of a blob into _uploads while a first
// writer is part way through the same digest succeeds, and so does the
// first; the blob is stored once and no upload is left.
func testHabitTwoCp(t *testing.T, m *mount) {
	blob := randomBytes(t, 8<<20)
	src := writeFile(t, blob)
	dst := m.path("r/_uploads", sha(blob))
	sh(t, "mkdir -p "+m.path("r"))
	// The first writer holds the upload open on fd 3 and writes 1 MiB;
	// cp runs whole meanwhile; then the first writes the rest and closes.
	sh(t, fmt.Sprintf(`exec 3>%[1]q && head -c 1048576 %[2]q >&3 && cp %[2]q %[1]q && tail -c +1048577 %[2]q >&3 && exec 3>&-`, dst, src))
	if got := readFile(t, m.path("r/_layers", sha(blob))); string(got) != string(blob) {
		t.Fatal("the layer differs from the blob")
	}
	if ls := strings.TrimSpace(sh(t, "ls "+m.path("r/_uploads"))); ls != "" {
		t.Errorf("_uploads after both writers: %q", ls)
	}
	if m.Root != "" {
		if got := sh(t, "ls "+m.Root+"/docker/registry/v2/repositories/r/_uploads | wc -l"); strings.TrimSpace(got) != "0" {
			t.Errorf("uploads left in storage: %s", got)
		}
	}
	// Two cp at once, each of which may find the other's upload.
	for i := 0; i < 3; i++ {
		sh(t, "rm "+m.path("r/_layers", sha(blob)))
		out, err := shErr(t, fmt.Sprintf("cp %q %q & a=$!; cp %q %q & b=$!; wait $a; x=$?; wait $b; exit $((x|$?))", src, dst, src, dst))
		if err != nil && !strings.Contains(out, "File exists") {
			t.Errorf("two cp at once: %v\n%s", err, out)
		}
		if got := readFile(t, m.path("r/_layers", sha(blob))); string(got) != string(blob) {
			t.Fatal("the layer differs from the blob")
		}
	}
}

// testHabitPushBlobsDir: the README's one-liner pushes the blobs of an OCI
// layout (or a skopeo dir: copy, whose blobs are named by bare hex), then
// the manifest is pushed by tag.
func testHabitPushBlobsDir(t *testing.T, m *mount) {
	dir := t.TempDir()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layers := [][]byte{randomBytes(t, 3000), randomBytes(t, 200000)}
	mf := imageManifest(t, config, layers...)
	sh(t, "mkdir -p "+dir+"/blobs/sha256")
	for _, b := range append([][]byte{config, mf}, layers...) {
		sh(t, fmt.Sprintf("cp %q %q", writeFile(t, b), dir+"/blobs/sha256/"+sha(b)[7:]))
	}
	repo := m.path("app")
	sh(t, "mkdir -p "+repo)
	// The README's lines, as written there.
	sh(t, fmt.Sprintf(`cd %q && REPO=%q && for b in blobs/sha256/*; do cp "$b" "$REPO/_uploads/sha256:${b##*/}" || break; done`, dir, repo))
	sh(t, fmt.Sprintf(`cd %q && cp blobs/sha256/%s %q`, dir, sha(mf)[7:], repo+"/_manifests/latest"))
	if got := readFile(t, repo+"/_manifests/latest"); string(got) != string(mf) {
		t.Errorf("latest reads %q", got)
	}
	for _, l := range layers {
		if got := readFile(t, repo+"/_layers/"+sha(l)); string(got) != string(l) {
			t.Errorf("layer %s differs", sha(l))
		}
	}
}

// testHabitInstall: install sets the mode by name after closing, when the
// upload has already moved to _layers: the process that committed it still
// finds the name, so install succeeds; any other process finds it gone.
func testHabitInstall(t *testing.T, m *mount) {
	b := randomBytes(t, 5000)
	sh(t, "mkdir -p "+m.path("r"))
	up := m.path("r/_uploads", sha(b))
	sh(t, fmt.Sprintf("install -m 600 %q %q", writeFile(t, b), up))
	if got := readFile(t, m.path("r/_layers", sha(b))); string(got) != string(b) {
		t.Error("the layer install stored differs")
	}
	if _, err := shErr(t, "test -e "+up); err == nil {
		t.Error("another process finds the committed upload's name")
	}
	if got := strings.TrimSpace(sh(t, "ls "+m.path("r/_uploads"))); got != "" {
		t.Errorf("_uploads lists %q after the commit", got)
	}
	// Again, and by one program that pushes the blob twice and sets its
	// mode by name after each: the second open of the name starts a new
	// upload.
	sh(t, fmt.Sprintf("install -m 600 %q %q", writeFile(t, b), up))
	if _, err := shErr(t, "command -v python3"); err != nil {
		t.Log("python3 is not installed: skipping the program that pushes twice")
		return
	}
	sh(t, fmt.Sprintf(`python3 -c '
import os, sys
for mode in (0o644, 0o600):
    with open(sys.argv[1], "wb") as f:
        f.write(open(sys.argv[2], "rb").read())
    os.chmod(sys.argv[1], mode)
' %q %q`, up, writeFile(t, b)))
	if got := readFile(t, m.path("r/_layers", sha(b))); string(got) != string(b) {
		t.Error("the layer differs after the second push")
	}
}

// testHabitRsync: rsync -a of a directory of blobs named by digest into
// _uploads pushes them (its temporary names are uploads of the digest they
// carry, and the rename after the commit has nothing left to do), and so
// does rsync -a --inplace; every mode and time rsync sets changes nothing.
func testHabitRsync(t *testing.T, m *mount) {
	if _, err := shErr(t, "command -v rsync"); err != nil {
		testenv.SkipOrFail(t, "rsync is not installed")
	}
	src := t.TempDir()
	var blobs [][]byte
	for i := 0; i < 3; i++ {
		b := randomBytes(t, 1000+i*300000)
		blobs = append(blobs, b)
		sh(t, fmt.Sprintf("cp %q %q", writeFile(t, b), src+"/"+sha(b)))
	}
	sh(t, fmt.Sprintf("chmod 600 %q/* && mkdir -p %q", src, m.path("r")))
	sh(t, fmt.Sprintf("rsync -a %q/ %q/", src, m.path("r/_uploads")))
	check := func(what string) {
		t.Helper()
		for _, b := range blobs {
			if got := readFile(t, m.path("r/_layers", sha(b))); string(got) != string(b) {
				t.Errorf("%s: layer %s differs", what, sha(b))
			}
		}
		if got := strings.TrimSpace(sh(t, "ls -a "+m.path("r/_uploads"))); got != ".\n.." {
			t.Errorf("%s: _uploads lists %q", what, got)
		}
	}
	check("rsync -a")
	for _, b := range blobs {
		sh(t, "rm "+m.path("r/_layers", sha(b)))
	}
	sh(t, fmt.Sprintf("rsync -a --inplace %q/ %q/", src, m.path("r/_uploads")))
	check("rsync -a --inplace")
	// While the temporary name is still open, it cannot move.
	b := randomBytes(t, 100)
	tmp := m.path("r/_uploads", "."+sha(b)+".AbC123")
	wantFail(t, fmt.Sprintf("exec 3>%q && mv %q %q", tmp, tmp, m.path("r/_uploads", sha(b))), "Device or resource busy")
	// A temporary name of anything but a digest is still refused.
	wantFail(t, fmt.Sprintf(": > %q", m.path("r/_uploads/.notadigest.AbC123")), "Invalid argument")
}
