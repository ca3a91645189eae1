package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regfs/regfs/internal/testenv"
)

// nobody is the unprivileged user the permission tests act as.
const nobody = "65534"

// asNobody runs a shell script as uid and gid 65534 without supplementary
// groups and returns its combined output and error.
func asNobody(t *testing.T, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("setpriv", "--reuid="+nobody, "--regid="+nobody, "--clear-groups", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// permissionMount mounts a filesystem root as root with extra flags, with
// a fixture in it, and lets nobody reach the mountpoint.
func permissionMount(t *testing.T, extra ...string) (*mount, *hostileFixture) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "the permission tests mount as root and act as another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		testenv.SkipOrFail(t, "setpriv is missing")
	}
	m := startMount(t, "filesystem", mountOpts{Extra: extra})
	fx := newHostileFixture(t, m)
	// t.TempDir makes the mountpoint's parent 0700.
	if err := os.Chmod(filepath.Dir(m.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	return m, fx
}

// A root mount with --allow-other: another user reads layers and
// manifests, and every change it tries is refused (EACCES or EPERM) with
// storage unchanged.
func TestPermissionsOtherUser(t *testing.T) {
	m, fx := permissionMount(t, "--allow-other")
	mnt := m.Dir
	// A file nobody can read, to copy and link from.
	srcDir, err := os.MkdirTemp("", "regfs-perm-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(srcDir)
	if err := os.Chmod(srcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	content := []byte("bytes another user tries to push\n")
	src := filepath.Join(srcDir, "blob")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	mfSrc := filepath.Join(srcDir, "manifest")
	if err := os.WriteFile(mfSrc, fx.mf, 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, fmt.Sprintf("mkdir %q", m.path("madebyroot")))

	// Reads work.
	for _, c := range []struct {
		rel  string
		want []byte
	}{
		{"app/_layers/" + fx.layer, fx.layerBytes},
		{"app/_manifests/v1", fx.mf},
		{"app/_manifests/" + fx.mfd, fx.mf},
	} {
		out, err := asNobody(t, fmt.Sprintf("sha256sum < %q", m.path(c.rel)))
		if err != nil || !strings.HasPrefix(out, strings.TrimPrefix(sha(c.want), "sha256:")) {
			t.Errorf("nobody reading %s: %v\n%s", c.rel, err, out)
		}
	}
	if out, err := asNobody(t, fmt.Sprintf("ls -la %q %q %q && cat %q", mnt, m.path("app"), m.path("app/_manifests"), m.path(".regfs/stats"))); err != nil {
		t.Errorf("nobody listing: %v\n%s", err, out)
	} else if !strings.Contains(out, "drwxr-xr-x") || strings.Contains(out, "rwxrwx") {
		t.Errorf("modes shown:\n%s", out)
	}

	before := treeHash(t, m.Root)
	q := func(rel string) string { return fmt.Sprintf("%q", m.path(rel)) }
	upload := "app/_uploads/" + fx.upload
	for _, c := range []struct{ name, script string }{
		{"mkdir at the root", "mkdir " + q("evil")},
		{"mkdir in a repository", "mkdir " + q("app/evil")},
		{"mkdir -p a new repository", "mkdir -p " + q("evil/repo")},
		{"rm a layer", "rm -f " + q("app/_layers/"+fx.layer)},
		{"rm a tag", "rm -f " + q("app/_manifests/v1")},
		{"rm a revision", "rm -f " + q("app/_manifests/"+fx.mfd)},
		{"rm an upload", "rm -f " + q(upload)},
		{"cp into _uploads", fmt.Sprintf("cp %q %s", src, q("app/_uploads/"+sha(content)))},
		{"append to an upload", fmt.Sprintf("cat %q >> %s", src, q(upload))},
		{"truncate an upload", "truncate -s 0 " + q(upload)},
		{"ln a layer from another repository", fmt.Sprintf("ln %s %s", q("other/_layers/"+fx.otherLayer), q("app/_layers/"+fx.otherLayer))},
		{"ln a tag", fmt.Sprintf("ln %s %s", q("app/_manifests/"+fx.mfd), q("app/_manifests/evil"))},
		{"write a new tag", fmt.Sprintf("cat %q > %s", mfSrc, q("app/_manifests/evil"))},
		{"rewrite a tag", fmt.Sprintf("cat %q > %s", mfSrc, q("app/_manifests/v1"))},
		{"truncate a tag", "truncate -s 0 " + q("app/_manifests/v1")},
		{"rmdir a repository", "rmdir " + q("other")},
		{"rmdir a directory root made", "rmdir " + q("madebyroot")},
		{"mv a tag", fmt.Sprintf("mv %s %s", q("app/_manifests/v1"), q("app/_manifests/v9"))},
		{"mv a repository", fmt.Sprintf("mv %s %s", q("app"), q("app2"))},
		{"chmod a tag", "chmod 666 " + q("app/_manifests/v1")},
		{"touch a layer", "touch " + q("app/_layers/"+fx.layer)},
	} {
		out, err := asNobody(t, c.script)
		if err == nil {
			t.Errorf("%s: succeeded as nobody\n%s", c.name, out)
			continue
		}
		if !strings.Contains(out, "Permission denied") && !strings.Contains(out, "Operation not permitted") {
			t.Errorf("%s: want EACCES or EPERM, got %v\n%s", c.name, err, out)
		}
	}
	if diff := treeDiff(before, treeHash(t, m.Root)); diff != "" {
		t.Errorf("storage changed by another user's requests:\n%s", diff)
	}
	if out := sh(t, "ls "+q("")); !strings.Contains(out, "madebyroot") || strings.Contains(out, "evil") {
		t.Errorf("root of the mount after the requests:\n%s", out)
	}
	// The owner still may.
	sh(t, "rmdir "+q("madebyroot"))
}

// --no-default-permissions is the one way out of the checks: another user
// then may change what the daemon's user may.
func TestPermissionsOptOut(t *testing.T) {
	m, _ := permissionMount(t, "--allow-other", "--no-default-permissions")
	if out, err := asNobody(t, fmt.Sprintf("mkdir %q", m.path("evil"))); err != nil {
		t.Fatalf("mkdir as nobody with --no-default-permissions: %v\n%s", err, out)
	}
	if !strings.Contains(m.logText(), "no-default-permissions") {
		t.Errorf("no warning in the log:\n%s", m.logText())
	}
}

// Without --allow-other, only the daemon's user reaches the mount.
func TestPermissionsOwnerOnly(t *testing.T) {
	m, _ := permissionMount(t)
	if out, err := asNobody(t, fmt.Sprintf("ls %q", m.path("app/_manifests"))); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("nobody listing a mount without --allow-other: %v\n%s", err, out)
	}
}
