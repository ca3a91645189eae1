package fs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"
)

// driverCalls is the number of storage driver calls the store made so far.
func (m *testMount) driverCalls() int64 {
	var n int64
	for _, v := range m.fs.Stats().DriverCalls {
		n += v
	}
	return n
}

// find runs find(1) over the whole mount and returns the paths it prints,
// relative to the mountpoint.
func (m *testMount) find() []string {
	m.t.Helper()
	var out []byte
	m.must("find", func() (err error) {
		out, err = exec.Command("find", m.dir).Output()
		return err
	})
	var paths []string
	for _, p := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		paths = append(paths, strings.TrimPrefix(strings.TrimPrefix(p, m.dir), "/"))
	}
	return paths
}

// A second find over the whole tree is served from the kernel's caches:
// listings, the names of repositories and reserved directories, and their
// attributes. regfs's storage is not asked anything.
func TestSecondFindAsksNothing(t *testing.T) {
	m := newMount(t, mountConfig{})
	_, mfd, layers := m.pushImage("app", "v1", 2)
	m.pushImage("team/web", "latest", 1)
	for i := range 20 {
		m.pushBlob("many/r"+string(rune('a'+i)), []byte{byte(i)})
	}
	up, err := m.repo("app").Uploads().Create(context.Background(), digest.FromString("later"))
	if err != nil {
		t.Fatal(err)
	}

	first := m.find()
	for _, want := range []string{
		"app/_layers/" + digest.FromBytes(layers[1]).String(),
		"app/_manifests/v1",
		"app/_manifests/" + mfd.String(),
		"team/web/_uploads",
		"app/_uploads/" + up.Expected().String(),
		"many/rt/_layers",
		".regfs/stats",
	} {
		if !slices.Contains(first, want) {
			t.Errorf("find does not list %s:\n%s", want, strings.Join(first, "\n"))
		}
	}
	before := m.driverCalls()
	if second := m.find(); !slices.Equal(second, first) {
		t.Errorf("second find lists\n%s\nfirst listed\n%s", strings.Join(second, "\n"), strings.Join(first, "\n"))
	}
	if n := m.driverCalls() - before; n != 0 {
		t.Errorf("second find made %d driver calls (%v), want 0: listings and names are cached", n, m.fs.Stats().DriverCalls)
	}
}

// What regfs changes itself shows in the next listing at once, though the
// listings are cached for a minute: a commit moves an upload into
// _layers/, a stored manifest adds its revision to _manifests/, and a
// repository removed and pushed again starts with nothing of the old one.
func TestOwnChangesListedAtOnce(t *testing.T) {
	m := newMount(t, mountConfig{dirCacheTTL: time.Hour})
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	m.pushBlob("app", config)
	for _, d := range []string{"", "app", "app/_layers", "app/_manifests", "app/_uploads"} {
		m.readDir(m.path(d)) // cached from now on
	}

	layer := randomBytes(t, 5000)
	ld := digest.FromBytes(layer)
	if err := m.writeClose(m.path("app/_uploads", ld.String()), os.O_CREATE|os.O_WRONLY, layer); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if got := m.readDir(m.path("app/_layers")); !slices.Contains(got, ld.String()) {
		t.Errorf("_layers after the upload's close lists %v, want %s", got, ld)
	}
	if got := m.readDir(m.path("app/_uploads")); len(got) != 0 {
		t.Errorf("_uploads after the commit lists %v, want nothing", got)
	}

	// The first layer of a new repository: its _layers/ was listed empty.
	m.must("mkdir", func() error { return os.Mkdir(m.path("fresh"), 0o755) })
	if got := m.readDir(m.path("fresh/_layers")); len(got) != 0 {
		t.Fatalf("fresh/_layers lists %v", got)
	}
	if err := m.writeClose(m.path("fresh/_uploads", ld.String()), os.O_CREATE|os.O_WRONLY, layer); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if got := m.readDir(m.path("fresh/_layers")); !slices.Equal(got, []string{ld.String()}) {
		t.Errorf("fresh/_layers after its first upload lists %v, want %s", got, ld)
	}

	mf := imageManifest(t, config, layer)
	if err := m.writeClose(m.path("app/_manifests/v1"), os.O_CREATE|os.O_WRONLY, mf); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if got := m.readDir(m.path("app/_manifests")); !slices.Equal(got, []string{digest.FromBytes(mf).String(), "v1"}) {
		t.Errorf("_manifests after the tag's close lists %v, want its revision and v1", got)
	}

	// A repository pushed, emptied and removed through the mount, then
	// pushed again by another writer.
	m.must("mkdir", func() error { return os.Mkdir(m.path("gone"), 0o755) })
	old := digest.FromString("old")
	if err := m.writeClose(m.path("gone/_uploads", old.String()), os.O_CREATE|os.O_WRONLY, []byte("old")); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if got := m.readDir(m.path("")); !slices.Contains(got, "gone") {
		t.Fatalf("root lists %v, want gone", got)
	}
	if got := m.readDir(m.path("gone/_layers")); !slices.Equal(got, []string{old.String()}) {
		t.Fatalf("gone/_layers lists %v, want %s", got, old)
	}
	m.must("rm", func() error { return os.Remove(m.path("gone/_layers", old.String())) })
	if got := m.readDir(m.path("gone/_layers")); len(got) != 0 {
		t.Fatalf("gone/_layers after rm lists %v", got)
	}
	// A shell whose working directory is gone/_layers keeps the kernel's
	// node of it, listing included, past the rmdir.
	var cwd int
	m.must("open", func() (err error) {
		cwd, err = syscall.Open(m.path("gone/_layers"), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		return err
	})
	defer syscall.Close(cwd)
	m.must("rmdir", func() error { return os.Remove(m.path("gone")) })
	if _, err := m.stat(m.path("gone")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat of a removed repository: %v, want ENOENT", err)
	}
	again := m.pushBlob("gone", []byte("again"))
	if got := m.readDir(m.path("gone/_layers")); !slices.Equal(got, []string{again.String()}) {
		t.Errorf("gone/_layers pushed again lists %v, want %s", got, again)
	}
}

// What another writer (here: the store, under the mount) adds or removes
// shows in listings within DirCacheTTL, and a name looked up directly is
// found at once whatever the cached listing says.
func TestOtherWritersListedWithinDirCacheTTL(t *testing.T) {
	m := newMount(t, mountConfig{dirCacheTTL: 500 * time.Millisecond})
	ctx := context.Background()
	_, mfd, _ := m.pushImage("app", "v1", 1)
	if got := m.readDir(m.path("")); !slices.Equal(got, []string{".regfs", "app"}) {
		t.Fatalf("root lists %v", got)
	}
	if got := m.readDir(m.path("app/_manifests")); !slices.Equal(got, []string{mfd.String(), "v1"}) {
		t.Fatalf("_manifests lists %v", got)
	}

	layers := m.readDir(m.path("app/_layers"))

	m.pushBlob("newrepo", []byte("new"))
	newLayer := m.pushBlob("app", []byte("another layer"))
	m.pushBlob("app", []byte("{}"))
	newRev, err := m.repo("app").Manifests().Put(ctx, imageManifest(t, []byte("{}"), []byte("another layer")), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.repo("app").Tags().Tag(ctx, "v2", mfd); err != nil {
		t.Fatal(err)
	}
	if err := m.repo("app").Tags().Untag(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"newrepo/_layers", "app/_manifests/v2", "app/_layers/" + newLayer.String(), "app/_manifests/" + newRev.String()} {
		if _, err := m.stat(m.path(p)); err != nil {
			t.Errorf("stat %s, just added by another writer: %v", p, err)
		}
	}
	m.eventually("the new repository listed", func() bool {
		return slices.Contains(m.readDir(m.path("")), "newrepo")
	})
	m.eventually("the new tag and revision listed, the removed tag not", func() bool {
		return slices.Equal(m.readDir(m.path("app/_manifests")), slices.Sorted(slices.Values([]string{mfd.String(), newRev.String(), "v2"})))
	})
	m.eventually("the new layer listed", func() bool {
		return slices.Equal(m.readDir(m.path("app/_layers")), slices.Sorted(slices.Values(append(layers, newLayer.String(), digest.FromString("{}").String()))))
	})
}

// Every directory lists "." and "..", with the inodes stat reports.
func TestDotEntries(t *testing.T) {
	m := newMount(t, mountConfig{})
	m.pushBlob("team/app", []byte("x"))
	for _, c := range []struct{ dir, parent string }{
		{"", ""},
		{"team", ""},
		{"team/app", "team"},
		{"team/app/_layers", "team/app"},
		{"team/app/_manifests", "team/app"},
		{".regfs", ""},
	} {
		var out []byte
		m.must("ls -ai", func() (err error) {
			out, err = exec.Command("ls", "-ai", m.path(c.dir)).Output()
			return err
		})
		inode := func(p string) string {
			fi, err := m.stat(m.path(p))
			if err != nil {
				t.Fatal(err)
			}
			return strconv.FormatUint(fi.Sys().(*syscall.Stat_t).Ino, 10)
		}
		got := strings.Fields(string(out))
		if len(got) < 4 || got[1] != "." || got[3] != ".." || got[0] != inode(c.dir) || c.dir != "" && got[2] != inode(c.parent) {
			t.Errorf("ls -ai %s: %q, want . with inode %s and .. with %s's", c.dir, got, inode(c.dir), c.parent)
		}
	}
}

// Only a directory's latest listing is expired, when it is due: an older
// one queued before it is passed over, so a listing served just before an
// older one expires is still dropped on time.
func TestDirExpiryLatestListing(t *testing.T) {
	f := New(nil, Options{})
	e := newDirExpiry(f, time.Minute)
	root, app := newRootDir(f), newNSDir(f, "app")
	e.listedNamespace(root, "", []string{"app"})
	e.listed(app)
	e.listedNamespace(root, "", []string{"app", "web"}) // listed again
	if left := e.listedFor("", "web"); left <= 0 || left > time.Minute {
		t.Errorf("listedFor(web) = %v, want up to a minute", left)
	}
	now := time.Now()
	if due, next := e.take(now); len(due) != 0 || next <= 0 {
		t.Fatalf("take now: %v, next in %v; want nothing due yet", due, next)
	}
	due, next := e.take(now.Add(time.Minute))
	if !slices.Equal(due, []fs.Node{app, root}) || next != 0 {
		t.Errorf("take a minute later: %v, next in %v; want app and the root once, nothing left", due, next)
	}
	if e.listedFor("", "web") != 0 {
		t.Error("the root's names outlived its listing")
	}
}

// A manifest name created and closed without a byte written disappears
// from the cached listing of _manifests.
func TestUnwrittenManifestNameLeavesListing(t *testing.T) {
	m := newMount(t, mountConfig{dirCacheTTL: time.Hour})
	m.pushImage("app", "v1", 1)
	var fd int
	err := m.do(func() (err error) {
		fd, err = syscall.Open(m.path("app/_manifests/empty"), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
		return err
	})
	if err != nil {
		t.Skipf("creating a manifest name is refused (%v): no name to leave the listing", err)
	}
	if got := m.readDir(m.path("app/_manifests")); !slices.Contains(got, "empty") {
		t.Fatalf("_manifests while empty is open lists %v", got)
	}
	_ = m.do(func() error { return syscall.Close(fd) }) // whether close reports the empty manifest or not
	m.eventually("the unwritten name leaves the listing", func() bool {
		return !slices.Contains(m.readDir(m.path("app/_manifests")), "empty")
	})
}
