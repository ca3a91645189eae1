package fs

import (
	"os"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
)

// The modes say what a write can do, and every node belongs to the
// daemon's user: directories that accept changes and tags are writable by
// the owner only, blobs, revisions and .regfs by nobody, and a read-only
// mount shows no write bit anywhere.
func TestModesTellWhatAWriteCanDo(t *testing.T) {
	for _, ro := range []bool{false, true} {
		name := "read-write"
		if ro {
			name = "read-only"
		}
		t.Run(name, func(t *testing.T) {
			m := newMount(t, mountConfig{readOnly: ro})
			_, mfd, layers := m.pushImage("app", "v1", 1)
			up, err := m.repo("app").Uploads().Create(t.Context(), digest.FromString("upload"))
			if err != nil {
				t.Fatal(err)
			}
			if err := up.Close(); err != nil {
				t.Fatal(err)
			}
			w := func(mode os.FileMode) os.FileMode {
				if ro {
					return mode &^ 0o222
				}
				return mode
			}
			for _, c := range []struct {
				rel  string
				want os.FileMode
			}{
				{"", w(os.ModeDir | 0o755)},
				{"app", w(os.ModeDir | 0o755)},
				{"app/_layers", w(os.ModeDir | 0o755)},
				{"app/_manifests", w(os.ModeDir | 0o755)},
				{"app/_uploads", w(os.ModeDir | 0o755)},
				{".regfs", os.ModeDir | 0o555},
				{".regfs/stats", 0o444},
				{"app/_layers/" + digest.FromBytes(layers[0]).String(), 0o444},
				{"app/_manifests/" + mfd.String(), 0o444},
				{"app/_manifests/v1", w(0o644)},
				{"app/_uploads/" + digest.FromString("upload").String(), w(0o644)},
			} {
				fi, err := m.stat(m.path(c.rel))
				if err != nil {
					t.Errorf("stat %s: %v", c.rel, err)
					continue
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode() != c.want || st.Uid != uint32(os.Getuid()) || st.Gid != uint32(os.Getgid()) {
					t.Errorf("%s: %v %d:%d, want %v %d:%d", c.rel, fi.Mode(), st.Uid, st.Gid, c.want, os.Getuid(), os.Getgid())
				}
			}
		})
	}
}
