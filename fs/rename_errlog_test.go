package fs

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestRefusedRenamesInErrorLog: each refused rename gets an entry in
// .regfs/errors naming the path and why, as other rejected writes do; mv
// itself only prints the errno.
func TestRefusedRenamesInErrorLog(t *testing.T) {
	m := newMount(t, mountConfig{})
	_, rev, layers := m.pushImage("app", "v1", 1)
	m.pushImage("web", "v1", 1)
	layer := digest.FromBytes(layers[0]).String()
	for _, c := range []struct {
		name     string
		from, to string
		errno    syscall.Errno
		reason   string
	}{
		{"revision", "app/_manifests/" + rev.String(), "app/_manifests/v2", syscall.EPERM, "a revision is named by its digest"},
		{"to a digest", "app/_manifests/v1", "app/_manifests/" + digest.FromString("x").String(), syscall.EINVAL, "a tag cannot be renamed to a digest"},
		{"across repositories", "app/_manifests/v1", "web/_manifests/v2", syscall.EXDEV, "a tag cannot move to another repository"},
		{"a layer", "app/_layers/" + layer, "app/_layers/x", syscall.EPERM, "only tags can be renamed"},
		{"bad tag", "app/_manifests/v1", "app/_manifests/.bad", syscall.EINVAL, "app/_manifests/.bad refused"},
	} {
		err := m.do(func() error { return os.Rename(m.path(c.from), m.path(c.to)) })
		wantErrno(t, c.name, err, c.errno)
		errs := string(m.readFile(m.path(".regfs/errors")))
		if !strings.Contains(errs, " "+c.from+"\n") || !strings.Contains(errs, "rename to "+c.to+" refused") ||
			!strings.Contains(errs, c.reason) {
			t.Errorf("%s: .regfs/errors does not name %s, its target and %q:\n%s", c.name, c.from, c.reason, errs)
		}
	}
	// A manifest still being written cannot be renamed.
	var w *os.File
	m.must("create app/_manifests/v3", func() (err error) {
		w, err = openFile(m.path("app/_manifests/v3"), os.O_WRONLY|os.O_CREATE)
		return err
	})
	defer w.Close()
	err := m.do(func() error { return os.Rename(m.path("app/_manifests/v3"), m.path("app/_manifests/v4")) })
	wantErrno(t, "open for writing", err, syscall.EBUSY)
	if errs := string(m.readFile(m.path(".regfs/errors"))); !strings.Contains(errs, "rename to app/_manifests/v4 refused: manifest still open for writing") {
		t.Errorf(".regfs/errors does not name the busy rename:\n%s", errs)
	}
}
