package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
	"github.com/regfs/regfs/driver/faulty"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/internal/testsupport/storagecheck"
)

// faultyMount mounts an FS whose storage is a faulty driver (no faults
// yet) over an in-memory one, with the given driver deadline; it returns
// the faulty driver and the in-memory one below it, to inspect storage
// without faults.
func faultyMount(t *testing.T, deadline time.Duration) (*testMount, *faulty.Driver, driver.StorageDriver) {
	t.Helper()
	inner := inmemory.New()
	f := faulty.New(inner, 21, nil)
	d := base.NewWithOptions(f, base.Options{Timeout: deadline, IdleTimeout: deadline})
	return newMount(t, mountConfig{drv: d}), f, inner
}

// errnoOf returns the errno inside err, 0 for nil.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	if err != nil {
		return syscall.Errno(^uintptr(0))
	}
	return 0
}

// wait waits for wg under syscallTimeout; a hang aborts the mount and
// fails the test.
func (m *testMount) wait(wg *sync.WaitGroup) {
	m.t.Helper()
	m.must("wait for the workers", func() error { wg.Wait(); return nil })
}

// TestMountUnderFaults reads layers and manifests and pushes layers and
// manifests through the mount, in parallel, while the storage fails often.
// A failure must reach the caller as EIO (ETIMEDOUT for a stall), never as
// ENOENT and never as a rejected upload or manifest (EBADMSG) unless the
// caller's own write failed first; a read that succeeds returns exactly
// the right bytes; afterwards storage holds no torn blob and no link to a
// missing blob, and everything reported done is there.
func TestMountUnderFaults(t *testing.T) {
	m, f, inner := faultyMount(t, 5*time.Second)
	ctx := context.Background()
	mf, mfd, layers := m.pushImage("app", "v1", 3)
	// More layers, read cold: the kernel keeps what it read once in its
	// page cache (blobs are immutable), so only distinct files and failed
	// reads reach the FS and the faulty storage below it.
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < 24; i++ {
		b := make([]byte, 1+rng.IntN(600<<10))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		m.pushBlob("app", b)
		layers = append(layers, b)
	}
	layerDigests := make([]digest.Digest, len(layers))
	for i, l := range layers {
		layerDigests[i] = digest.FromBytes(l)
	}
	f.SetRule(faulty.Any, faulty.Rule{Error: 0.02, ErrorAfter: 0.02, Delay: 0.05, DelayFor: time.Millisecond})
	f.SetRule(faulty.Read, faulty.Rule{Error: 0.02, Short: 0.5, ShortWithin: 256 << 10})

	var (
		mu       sync.Mutex
		errnos   = map[string]map[syscall.Errno]int{}
		done     = map[digest.Digest][]byte{}
		attempts = map[digest.Digest][]byte{}
		tagged   = map[string][][]byte{"v1": {mf}}
		wg       sync.WaitGroup
		problems []string
	)
	record := func(op string, err error, allowed ...syscall.Errno) {
		mu.Lock()
		defer mu.Unlock()
		e := errnoOf(err)
		if errnos[op] == nil {
			errnos[op] = map[syscall.Errno]int{}
		}
		errnos[op][e]++
		if e == 0 {
			return
		}
		for _, a := range append(allowed, syscall.EIO, syscall.ETIMEDOUT) {
			if e == a {
				return
			}
		}
		problems = append(problems, fmt.Sprintf("%s: %v (errno %d)", op, err, e))
	}
	wrong := func(what string) {
		mu.Lock()
		problems = append(problems, what)
		mu.Unlock()
	}

	const rounds = 25
	for g := 0; g < 6; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < rounds; i++ {
				switch k := rng.IntN(len(layers) + 2); {
				case k < len(layers):
					got, err := readFile(m.path("app/_layers", layerDigests[k].String()))
					record("read layer", err)
					if err == nil && !bytes.Equal(got, layers[k]) {
						wrong(fmt.Sprintf("layer %s read %d wrong bytes", layerDigests[k], len(got)))
					}
				case k == len(layers):
					got, err := readFile(m.path("app/_manifests", mfd.String()))
					record("read revision", err)
					if err == nil && !bytes.Equal(got, mf) {
						wrong("revision read wrong bytes")
					}
				default:
					_, err := os.Stat(m.path("app/_manifests/v1"))
					record("stat tag", err)
				}
			}
		})
	}
	for g := 0; g < 2; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for i := 0; i < rounds/2; i++ {
				b := make([]byte, 1+rng.IntN(400<<10))
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				d := digest.FromBytes(b)
				mu.Lock()
				attempts[d] = b
				mu.Unlock()
				up := m.path("app/_uploads", d.String())
				wf, err := openFile(up, wo)
				if err != nil {
					record("create upload", err)
					continue
				}
				_, werr := wf.Write(b)
				record("write upload", werr)
				cerr := wf.Close()
				if werr != nil {
					// The close commits what the write left: a digest
					// mismatch is the right answer then.
					record("close upload after a failed write", cerr, syscall.EBADMSG)
					_ = os.Remove(up)
					continue
				}
				record("close upload", cerr)
				if cerr == nil {
					mu.Lock()
					done[d] = b
					mu.Unlock()
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < rounds/2; i++ {
			tag := fmt.Sprintf("t%d", i%3)
			b := imageManifest(t, []byte(`{"architecture":"amd64","os":"linux","tag":"v1"}`), layers[:1+i%3]...)
			err := m.writeClose(m.path("app/_manifests", tag), wo, b)
			record("push manifest", err)
			mu.Lock()
			tagged[tag] = append(tagged[tag], b)
			mu.Unlock()
		}
	})
	m.wait(&wg)
	f.Disable()
	counts := f.Counts()
	t.Logf("errnos by operation: %v; faults injected: %v (%d); cache: %+v", errnos, counts.Injected, counts.Total(), m.cache.Stats())
	for _, p := range problems {
		t.Error(p)
	}
	if errnos["read layer"][0] == 0 || errnos["read layer"][syscall.EIO] == 0 {
		t.Errorf("the run did not exercise both failing and succeeding reads")
	}
	for _, k := range []faulty.Kind{faulty.KindError, faulty.KindDelay, faulty.KindEarlyEOF, faulty.KindStreamError} {
		if counts.Injected[k] == 0 {
			t.Errorf("no %s fault was injected: the test did not exercise it", k)
		}
	}

	checkStorageFS(t, inner)
	// Every upload reported committed reads back; every other one is
	// either absent or, if its commit landed after all, right.
	for d, b := range attempts {
		got, err := readFile(m.path("app/_layers", d.String()))
		_, ok := done[d]
		switch {
		case err == nil && !bytes.Equal(got, b):
			t.Errorf("layer %s reads wrong bytes", d)
		case err != nil && ok:
			t.Errorf("upload %s reported committed: %v", d, err)
		case err != nil && !errors.Is(err, syscall.ENOENT):
			t.Errorf("layer %s after the faults: %v", d, err)
		}
	}
	// Each tag reads as one of the manifests pushed to it.
	for tag, mfs := range tagged {
		got, err := readFile(m.path("app/_manifests", tag))
		if errors.Is(err, syscall.ENOENT) && tag != "v1" {
			continue // every push of it failed before its tag was written
		}
		if err != nil {
			t.Errorf("tag %s: %v", tag, err)
			continue
		}
		found := false
		for _, b := range mfs {
			found = found || bytes.Equal(got, b)
		}
		if !found {
			t.Errorf("tag %s reads a manifest never pushed to it", tag)
		}
	}
	_ = ctx
}

// checkStorageFS checks the storage below the faults with fsck: every
// blob hashes to its name (no torn blob) and every link names a blob whose
// data exists.
func checkStorageFS(t *testing.T, d driver.StorageDriver) {
	t.Helper()
	if rep := storagecheck.Clean(t, d); rep.Blobs == 0 || rep.Links == 0 {
		t.Errorf("storage check found %d blobs and %d links: nothing was checked", rep.Blobs, rep.Links)
	}
}

// TestMountStalledBackend: a backend that stops answering fails reads and
// lookups through the mount with ETIMEDOUT after the driver's deadline
// (times the cache's attempts for reads) instead of hanging them.
func TestMountStalledBackend(t *testing.T) {
	const deadline = 300 * time.Millisecond
	m, f, _ := faultyMount(t, deadline)
	_, _, layers := m.pushImage("stall", "v1", 1)
	layer := m.path("stall/_layers", digest.FromBytes(layers[0]).String())

	f.SetRule(faulty.Read, faulty.Rule{Delay: 1, DelayFor: time.Hour})
	start := time.Now()
	var err error
	m.must("read a stalled layer", func() error { _, err = readFile(layer); return nil })
	wantErrno(t, "read of a stalled blob", err, syscall.ETIMEDOUT)
	t.Logf("stalled read failed after %v: %v", time.Since(start), err)

	f.SetRule(faulty.Any, faulty.Rule{Delay: 1, DelayFor: time.Hour})
	start = time.Now()
	m.must("stat a stalled tag", func() error { _, err = os.Stat(m.path("stall/_manifests/v1")); return nil })
	wantErrno(t, "stat of a tag on a stalled backend", err, syscall.ETIMEDOUT)
	m.must("list a stalled directory", func() error { _, err = os.ReadDir(m.path("stall/_layers")); return nil })
	wantErrno(t, "readdir on a stalled backend", err, syscall.ETIMEDOUT)
	if el := time.Since(start); el > 20*deadline {
		t.Errorf("stalled metadata calls took %v with a %v deadline", el, deadline)
	}
	if f.Counts().Injected[faulty.KindDelay] == 0 {
		t.Errorf("no stall was injected")
	}
	// The mount recovers when the backend does.
	f.Disable()
	if got := m.readFile(layer); !bytes.Equal(got, layers[0]) {
		t.Errorf("layer after the stall reads wrong bytes")
	}
}

// TestUploadShortWriteResumes: storage that takes only part of each write
// before failing. The writer gets EIO (never EINVAL for a write at the
// offset it was told), the upload holds exactly a prefix of what was
// written, and appending the rest at the upload's size commits the blob.
func TestUploadShortWriteResumes(t *testing.T) {
	m, f, inner := faultyMount(t, 5*time.Second)
	content := randomBytes(t, 700<<10)
	d := digest.FromBytes(content)
	m.must("mkdir", func() error { return os.MkdirAll(m.path("short"), 0o755) })
	up := m.path("short/_uploads", d.String())
	// The first write request succeeds, the next ones store part of
	// their bytes and fail: write(2) must report the bytes stored.
	f.SetRule(faulty.Write, faulty.Rule{Error: 1, Skip: 1})
	var werr error
	m.must("write", func() error {
		wf, err := openFile(up, wo)
		if err != nil {
			return err
		}
		_, werr = wf.Write(content)
		_ = wf.Close() // commits the prefix: a mismatch
		return nil
	})
	f.Disable()
	t.Logf("write: %v; faults %v", werr, f.Counts())
	if werr != nil && !errors.Is(werr, syscall.EIO) {
		t.Fatalf("write to storage failing part way: %v, want EIO or success", werr)
	}
	if f.Counts().Injected[faulty.KindShortWrite] == 0 {
		t.Fatalf("no short write was injected")
	}
	if werr == nil {
		// Every short write was answered as one and continued.
		if got := m.readFile(m.path("short/_layers", d.String())); !bytes.Equal(got, content) {
			t.Fatalf("layer written through short writes reads wrong bytes")
		}
		return
	}
	fi, err := m.stat(up)
	if err != nil {
		t.Fatalf("upload after the failed write: %v", err)
	}
	if err := m.writeClose(up, appendFlag, content[fi.Size():]); err != nil {
		t.Fatalf("appending the rest at %d: %v", fi.Size(), err)
	}
	if got := m.readFile(m.path("short/_layers", d.String())); !bytes.Equal(got, content) {
		t.Fatalf("resumed layer reads wrong bytes")
	}
	checkStorageFS(t, inner)
}
