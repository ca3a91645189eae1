package fs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/filesystem"
)

// TestUploadTimesFromStorage: ls -l _uploads/ shows when each upload was
// last written by whoever wrote it (its data's time), or its startedat
// before it has data, not when the mount started; once written to
// through the mount, the time of that write.
func TestUploadTimesFromStorage(t *testing.T) {
	root := t.TempDir()
	drv, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	m := newMount(t, mountConfig{drv: drv})
	ctx := context.Background()
	content := []byte("an upload a previous daemon left")
	d := digest.FromBytes(content)
	up, err := m.repo("r").Uploads().Create(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(content[:10]); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	written := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	data := filepath.Join(root, "docker/registry/v2/repositories/r/_uploads", up.ID(), "data")
	if err := os.Chtimes(data, written, written); err != nil {
		t.Fatal(err)
	}
	// A registry's upload with no data yet: its startedat.
	id := "0b6f0a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
	if err := m.drv.PutContent(ctx, "/docker/registry/v2/repositories/r/_uploads/"+id+"/startedat", []byte("2024-01-02T03:04:05Z")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]time.Time{
		d.String(): written,
		id:         time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
	} {
		fi, err := m.stat(m.path("r/_uploads", name))
		if err != nil || !fi.ModTime().Equal(want) {
			t.Errorf("mtime of upload %s: %v %v, want %v", name, fi, err, want)
		}
	}
	// Open for appending, not yet written: still storage's time.
	p := m.path("r/_uploads", d.String())
	var f *os.File
	m.must("open for append", func() (err error) {
		f, err = openFile(p, appendFlag)
		return err
	})
	defer f.Close()
	if fi, err := m.stat(p); err != nil || !fi.ModTime().Equal(written) {
		t.Errorf("mtime of an upload open but not written: %v %v, want %v", fi, err, written)
	}
	before := time.Now().Add(-time.Second)
	m.must("append", func() error { _, err := f.Write(content[10:20]); return err })
	if fi, err := m.stat(p); err != nil || fi.ModTime().Before(before) {
		t.Errorf("mtime after a write through the mount: %v %v, want the write's time", fi, err)
	}
}
