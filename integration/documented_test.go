package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"
)

// The tests in this file check, through a real mount, what README.md
// documents in its tables of commands and errors.

// uploadSizeOf returns the size stat reports for an upload.
func uploadSizeOf(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("stat of the upload: %v", err)
	}
	return fi.Size()
}

// finishUpload appends content from the upload's current size with tail
// and checks that the committed layer hashes to its name.
func finishUpload(t *testing.T, m *mount, repo string, content []byte) {
	t.Helper()
	d := sha(content)
	up := m.path(repo, "_uploads", d)
	size := uploadSizeOf(t, up)
	sh(t, fmt.Sprintf("tail -c +%d %q >> %q", size+1, writeFile(t, content), up))
	if got := readFile(t, m.path(repo, "_layers", d)); !bytes.Equal(got, content) {
		t.Fatalf("layer resumed at %d reads differently", size)
	}
}

// TestDocumentedFsyncUpload: "fsync ... an upload's bytes are made
// durable". An upload written in part and fsynced, its descriptor still
// open, shows the fsynced size, and after a SIGKILL and a new mount it is
// still there at that size and resumes. On S3 nothing of an open upload is
// in the bucket before a flush (a multipart upload is invisible until
// completed), so there only the fsync keeps the bytes.
func TestDocumentedFsyncUpload(t *testing.T) {
	for _, d := range []string{"filesystem", "s3"} {
		t.Run(d, func(t *testing.T) {
			m := startMount(t, d, mountOpts{})
			content := randomBytes(t, 7<<20+99)
			up := m.path("app/_uploads", sha(content))
			sh(t, "mkdir -p "+m.path("app"))
			f, err := os.OpenFile(up, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			const n = 6<<20 + 123 // more than one 5 MiB multipart part
			if _, err := f.Write(content[:n]); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync of the upload: %v", err)
			}
			if got := uploadSizeOf(t, up); got != n {
				t.Fatalf("stat size after fsync = %d, want %d", got, n)
			}
			m.kill()
			_ = f.Close() // the mount is dead: ENOTCONN
			m.restart()
			if got := uploadSizeOf(t, up); got != n {
				t.Fatalf("upload size after SIGKILL and remount = %d, want the fsynced %d", got, n)
			}
			finishUpload(t, m, "app", content)
		})
	}
}

// TestDocumentedSIGTERMSavesUploads: SIGTERM while an upload is open (its
// descriptor never closed) unmounts and saves it: the next mount shows it
// at the size written and resumes it.
func TestDocumentedSIGTERMSavesUploads(t *testing.T) {
	for _, d := range []string{"filesystem", "s3"} {
		t.Run(d, func(t *testing.T) {
			m := startMount(t, d, mountOpts{})
			content := randomBytes(t, 7<<20+99)
			up := m.path("app/_uploads", sha(content))
			sh(t, "mkdir -p "+m.path("app"))
			f, err := os.OpenFile(up, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			const n = 6<<20 + 123
			if _, err := f.Write(content[:n]); err != nil {
				t.Fatal(err)
			}
			if got := uploadSizeOf(t, up); got != n {
				t.Fatalf("stat size while open = %d, want %d", got, n)
			}
			m.stop() // SIGTERM; the open descriptor makes the mount busy
			_ = f.Close()
			// The busy mount was unmounted lazily and the daemon exited with
			// the descriptor still open: the path that must save it.
			if log := m.logText(); !strings.Contains(log, "exiting with files still open") {
				t.Fatalf("the daemon did not exit with the upload open:\n%s", log)
			}
			m.restart()
			if got := uploadSizeOf(t, up); got != n {
				t.Fatalf("upload size after SIGTERM and remount = %d, want %d", got, n)
			}
			finishUpload(t, m, "app", content)
		})
	}
}

// TestDocumentedESTALE: "ESTALE: writing through a descriptor whose upload
// was meanwhile committed or cancelled".
func TestDocumentedESTALE(t *testing.T) {
	for _, d := range []string{"filesystem", "inmemory"} {
		t.Run(d, func(t *testing.T) {
			m := startMount(t, d, mountOpts{})
			sh(t, "mkdir -p "+m.path("app"))

			// Committed through a second descriptor.
			content := randomBytes(t, 300000)
			up := m.path("app/_uploads", sha(content))
			a, err := os.OpenFile(up, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if _, err := a.Write(content[:100000]); err != nil {
				t.Fatal(err)
			}
			b, err := os.OpenFile(up, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Write(content[100000:]); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatalf("close of the descriptor that wrote the rest: %v", err)
			}
			if got := readFile(t, m.path("app/_layers", sha(content))); !bytes.Equal(got, content) {
				t.Fatal("layer committed through the second descriptor reads differently")
			}
			if _, err := a.Write([]byte("x")); errnoOf(err) != syscall.ESTALE {
				t.Errorf("write through the first descriptor after the commit: %v, want ESTALE", err)
			}

			// Cancelled by rm.
			other := randomBytes(t, 300000)
			up = m.path("app/_uploads", sha(other))
			c, err := os.OpenFile(up, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(other[:100000]); err != nil {
				t.Fatal(err)
			}
			sh(t, "rm "+up)
			if _, err := c.Write(other[100000:]); errnoOf(err) != syscall.ESTALE {
				t.Errorf("write through a descriptor whose upload rm cancelled: %v, want ESTALE", err)
			}
		})
	}
}

// TestDocumentedRmTruncateOpenUpload: `rm` of an upload another process
// has open cancels it for good (the open descriptor's later writes and
// close bring nothing back, and on S3 no incomplete multipart upload stays); truncating it by name to any size but 0 or its
// own is EINVAL, to its own size does nothing, and to 0 (truncate(1) opens
// it: another descriptor) leaves the open writer's upload as it is.
func TestDocumentedRmTruncateOpenUpload(t *testing.T) {
	for _, d := range []string{"filesystem", "s3"} {
		t.Run(d, func(t *testing.T) {
			m := startMount(t, d, mountOpts{})
			sh(t, "mkdir -p "+m.path("app"))

			// More than a 10 MiB part: on S3 a multipart upload is running.
			content := randomBytes(t, 12<<20)
			up := m.path("app/_uploads", sha(content))
			f, err := os.OpenFile(up, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(content[:11<<20]); err != nil {
				t.Fatal(err)
			}
			sh(t, "rm "+up)
			if _, err := f.Write(content[11<<20:]); err == nil {
				t.Error("write after rm of the upload succeeded")
			}
			_ = f.Close()
			if ls := strings.TrimSpace(sh(t, "ls -A "+m.path("app/_uploads"))); ls != "" {
				t.Errorf("_uploads after rm and the open descriptor's close: %q", ls)
			}
			if _, err := os.Stat(m.path("app/_layers", sha(content))); !os.IsNotExist(err) {
				t.Errorf("layer after rm of its upload: %v", err)
			}
			checkNoUploadsInStorage(t, m)

			// Truncate by name while a descriptor is open.
			content = randomBytes(t, 300000)
			up = m.path("app/_uploads", sha(content))
			f, err = os.OpenFile(up, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(content[:100000]); err != nil {
				t.Fatal(err)
			}
			if out, err := shErr(t, "truncate -s 5 "+up); err == nil || !strings.Contains(out, "Invalid argument") {
				t.Errorf("truncate to 5 of an open upload: err=%v out=%q, want EINVAL", err, out)
			}
			sh(t, "truncate -s 100000 "+up) // its own size: nothing to do
			if got := uploadSizeOf(t, up); got != 100000 {
				t.Fatalf("size after truncate to its own size = %d, want 100000", got)
			}
			// truncate(1) opens the upload itself: a second descriptor, whose
			// truncate to 0 leaves the one writing it alone (decisions.md,
			// "Two writers of one digest").
			sh(t, "truncate -s 0 "+up)
			if got := uploadSizeOf(t, up); got != 100000 {
				t.Fatalf("size after truncate to 0 by another process = %d, want the writer's 100000", got)
			}
			if _, err := f.Write(content[100000:]); err != nil {
				t.Fatalf("writing on after another process's truncate: %v", err)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("close after writing the whole layer: %v", err)
			}
			if got := readFile(t, m.path("app/_layers", sha(content))); !bytes.Equal(got, content) {
				t.Fatal("layer written on after the truncate reads differently")
			}
		})
	}
}

// checkNoUploadsInStorage fails t if m's storage holds any upload.
func checkNoUploadsInStorage(t *testing.T, m *mount) {
	t.Helper()
	switch {
	case m.Root != "":
		if out := sh(t, fmt.Sprintf("find %q -path '*/_uploads/*' -type f", m.Root)); strings.TrimSpace(out) != "" {
			t.Errorf("upload files in storage:\n%s", out)
		}
	case m.S3 != nil:
		keys, err := m.S3.Keys(t.Context(), m.Bucket, m.Prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if strings.Contains(k, "/_uploads/") {
				t.Errorf("upload object in the bucket: %s", k)
			}
		}
		ups, err := m.S3.Client().ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: &m.Bucket})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range ups.Uploads {
			t.Errorf("incomplete multipart upload in the bucket: %s", *u.Key)
		}
	}
}

// TestDocumentedEINTR: "EINTR: the request was interrupted". A tag write
// (ln) is held in the daemon while it checks the revision, before any
// storage write (the REGFS_TEST_PAUSE hook stands for a stalled backend);
// a signal to the blocked thread makes the kernel send FUSE_INTERRUPT, and
// the ln fails with EINTR, tagging nothing, while the mount goes on
// serving. (Once a write has begun, an interrupt no longer stops the
// request: fs's TestInterruptAfterWriteCompletes.)
func TestDocumentedEINTR(t *testing.T) {
	m := startMount(t, "filesystem", mountOpts{})
	mf := pushImage(t, m, "app", "v1", 1)
	m.stop()
	m.env = append(m.env, testPauseEnvName+"=Stat /_manifests/revisions/")
	m.start()

	var err error
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Fatalf("ln never reached the paused storage write:\n%s", m.logText())
		}
		before := strings.Count(m.logText(), "msg=test-pause")
		tids := make(chan int, 1)
		errs := make(chan error, 1)
		go func() {
			// The link runs on this thread alone, so the signal below
			// reaches the thread blocked in it.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			errs <- syscall.Link(m.path("app/_manifests/v1"), m.path("app/_manifests/v2"))
		}()
		tid := <-tids
		paused := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !paused; {
			select {
			case err = <-errs:
				t.Logf("ln ended before the pause: %v", err)
				deadline = time.Time{}
			default:
				paused = strings.Count(m.logText(), "msg=test-pause") > before
				time.Sleep(10 * time.Millisecond)
			}
		}
		if !paused {
			continue
		}
		// SIGURG: the Go runtime handles it and ignores it, so only the
		// interrupt is seen.
		if err := unix.Tgkill(os.Getpid(), tid, unix.SIGURG); err != nil {
			t.Fatal(err)
		}
		select {
		case err = <-errs:
		case <-time.After(30 * time.Second):
			t.Fatalf("ln still blocked 30s after the signal:\n%s", m.logText())
		}
		break
	}
	if !errors.Is(err, syscall.EINTR) {
		t.Fatalf("interrupted ln: %v, want EINTR\n%s", err, m.logText())
	}
	if _, err := os.Lstat(m.path("app/_manifests/v2")); !os.IsNotExist(err) {
		t.Errorf("tag after an interrupted ln: %v, want ENOENT", err)
	}
	if got := readFile(t, m.path("app/_manifests/v1")); !bytes.Equal(got, mf) {
		t.Error("v1 reads differently after the interrupt")
	}
}

// testPauseEnvName is cmd/regfs's hook variable (testPauseEnv there).
const testPauseEnvName = "REGFS_TEST_PAUSE"

// direntInodes reads dir with getdents(2) and returns d_ino by name.
func direntInodes(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	out := map[string]uint64{}
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("getdents %s: %v", dir, err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
				uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			reclen := int(b[16]) | int(b[17])<<8
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			out[string(name)] = ino
			b = b[reclen:]
		}
	}
}

// TestDocumentedDirentInodes: the inode numbers a listing gives (d_ino,
// which `ls -i` and `find -printf %i` print) are the ones stat gives, for
// layers, revisions, tags, uploads and directories; a tag's is its
// revision's.
func TestDocumentedDirentInodes(t *testing.T) {
	m := startMount(t, "filesystem", mountOpts{})
	pushImage(t, m, "ns/app", "v1", 2)
	_, _ = shErr(t, fmt.Sprintf("head -c 1000 /dev/urandom > %q", m.path("ns/app/_uploads", sha([]byte("never")))))
	dirs := []string{"", "ns", "ns/app", "ns/app/_layers", "ns/app/_manifests", "ns/app/_uploads"}
	kinds := map[string]bool{}
	for _, rel := range dirs {
		dir := m.path(rel)
		ents := direntInodes(t, dir)
		for name, ino := range ents {
			if name == ".." && rel == "" {
				continue // the mountpoint's parent is outside the mount
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(dir, name), &st); err != nil {
				t.Fatalf("lstat %s/%s: %v", rel, name, err)
			}
			if st.Ino != ino {
				t.Errorf("%s/%s: d_ino %d, stat's inode %d", rel, name, ino, st.Ino)
			}
			kinds[filepath.Base(rel)] = true
		}
		// The tools print the same.
		for _, cmd := range []string{"ls -ai %q", "find %q -mindepth 1 -maxdepth 1 -printf '%%i %%f\\n'"} {
			for _, l := range lines(sh(t, fmt.Sprintf(cmd, dir))) {
				f := strings.Fields(l)
				if len(f) != 2 || f[1] == ".." {
					continue
				}
				ino, err := strconv.ParseUint(f[0], 10, 64)
				if err != nil {
					t.Fatalf("%s: %q", cmd, l)
				}
				if want, ok := ents[f[1]]; !ok || want != ino {
					t.Errorf("%s prints %d for %s/%s, d_ino is %d", strings.Fields(cmd)[0], ino, rel, f[1], want)
				}
			}
		}
	}
	var tag, rev syscall.Stat_t
	mf := readFile(t, m.path("ns/app/_manifests/v1"))
	if err := syscall.Stat(m.path("ns/app/_manifests/v1"), &tag); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(m.path("ns/app/_manifests", sha(mf)), &rev); err != nil {
		t.Fatal(err)
	}
	if tag.Ino != rev.Ino {
		t.Errorf("tag inode %d, its revision's %d", tag.Ino, rev.Ino)
	}
	if n := len(direntInodes(t, m.path("ns/app/_manifests"))); n != 4 { // . .. v1 sha256:…
		t.Errorf("_manifests lists %d entries, want 4", n)
	}
}
