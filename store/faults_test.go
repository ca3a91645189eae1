package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
	"github.com/regfs/regfs/driver/faulty"
)

// faultRules are the faults the store runs under in TestStoreUnderFaults:
// every method fails, loses its answer or stalls briefly now and then, and
// streams are cut short.
var faultRules = map[string]faulty.Rule{
	faulty.Any:  {Error: 0.04, ErrorAfter: 0.03, Delay: 0.05, DelayFor: time.Millisecond},
	faulty.Read: {Error: 0.01, Delay: 0.02, DelayFor: time.Millisecond, Short: 0.15, ShortWithin: 32 << 10},
	// Writes are fewer than the other calls: a higher rate makes sure
	// some short writes happen in every run.
	faulty.Write: {Error: 0.1, ErrorAfter: 0.03, Delay: 0.05, DelayFor: time.Millisecond},
}

// faultStore is a store on a faulty driver over d, with a small cache of
// small blocks so that reads load often.
func faultStore(t *testing.T, d driver.StorageDriver, seed uint64) (Store, *faulty.Driver, *cache.Cache) {
	t.Helper()
	f := faulty.New(d, seed, nil)
	c := cache.NewWithOptions(cache.Options{Budget: 256 << 10, BlockSize: 8 << 10, RetryDelay: time.Millisecond})
	s, err := New(base.New(f), Options{Cache: c, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, f, c
}

// backendFailure tells whether err is what a failing backend may cause: an
// error, but not one that says something does not exist.
func backendFailure(err error) bool {
	return err != nil && !driver.IsNotFound(err) && !errors.Is(err, ErrBlobUnknown) &&
		!errors.Is(err, ErrManifestUnknown) && !errors.Is(err, ErrUploadUnknown) && !errors.Is(err, ErrTagUnknown)
}

// TestStoreUnderFaults reads blobs, uploads blobs and pushes manifests in
// parallel on a driver that fails often. Every failure must be an error
// (never "not found" for something that exists, never wrong bytes), every
// success must be real, and afterwards the storage must hold no torn blob
// and no link to a missing blob.
func TestStoreUnderFaults(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			td := dc.new(t, "")
			s, f, c := faultStore(t, td, 11)
			ctx := context.Background()
			r := repo(t, s, "faults/app")

			// Blobs that exist before the faults start; readers check them.
			rng := rand.New(rand.NewPCG(1, 2))
			var blobs [][]byte
			var dgsts []digest.Digest
			for i := 0; i < 8; i++ {
				b := make([]byte, 1000+rng.IntN(200<<10))
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				blobs = append(blobs, b)
				dgsts = append(dgsts, pushBlob(t, r, b))
			}
			cfg := pushBlob(t, r, []byte(`{"architecture":"amd64","os":"linux"}`))

			for m, rule := range faultRules {
				f.SetRule(m, rule)
			}
			var (
				mu        sync.Mutex
				committed = map[digest.Digest][]byte{}
				pushed    = map[string]digest.Digest{}
				reads     int
				readErrs  int
				uploads   int
				upErrs    int
				puts      int
				putErrs   int
			)
			fail := func(format string, args ...any) {
				t.Helper()
				t.Errorf(format, args...)
			}
			var wg sync.WaitGroup
			const rounds = 60
			for g := 0; g < 4; g++ {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 7))
					for i := 0; i < rounds; i++ {
						k := rng.IntN(len(blobs))
						got, err := readBlob(ctx, r, dgsts[k], rng)
						mu.Lock()
						reads++
						if err != nil {
							readErrs++
						}
						mu.Unlock()
						switch {
						case err != nil && !backendFailure(err):
							fail("reading %s under faults: %v (a backend failure read as not found)", dgsts[k], err)
						case err == nil && !bytes.Equal(got, blobs[k]):
							fail("reading %s under faults returned wrong bytes", dgsts[k])
						}
					}
				})
			}
			for g := 0; g < 2; g++ {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 9))
					for i := 0; i < rounds/3; i++ {
						b := []byte(fmt.Sprintf("upload %d %d %s", g, i, strings.Repeat("x", rng.IntN(50<<10))))
						err := uploadBlob(ctx, r, b, rng)
						mu.Lock()
						uploads++
						if err != nil {
							upErrs++
						} else {
							committed[digest.FromBytes(b)] = b
						}
						mu.Unlock()
						if err != nil && !backendFailure(err) && !isMismatchAfterShortWrite(err) {
							fail("upload under faults: %v", err)
						}
					}
				})
			}
			wg.Go(func() {
				for i := 0; i < rounds/3; i++ {
					tag := fmt.Sprintf("t%d", i%5)
					mf := schema2(cfg, dgsts[i%len(dgsts)], dgsts[(i+1)%len(dgsts)])
					d, err := r.Manifests().Put(ctx, mf, tag, "")
					mu.Lock()
					puts++
					if err != nil {
						putErrs++
					} else {
						pushed[tag] = d
					}
					mu.Unlock()
					if err != nil && !backendFailure(err) {
						fail("manifest put under faults: %v", err)
					}
				}
			})
			wg.Wait()

			f.Disable()
			counts := f.Counts()
			st := c.Stats()
			t.Logf("%d reads (%d failed), %d uploads (%d failed), %d manifest puts (%d failed); faults injected: %v; cache retries %d, load errors %d",
				reads, readErrs, uploads, upErrs, puts, putErrs, counts.Injected, st.Retries, st.LoadErrors)
			for _, k := range []faulty.Kind{faulty.KindError, faulty.KindErrorAfter, faulty.KindDelay, faulty.KindEarlyEOF, faulty.KindStreamError, faulty.KindShortWrite} {
				if counts.Injected[k] == 0 {
					t.Errorf("no %s fault was injected: the test did not exercise it", k)
				}
			}
			if st.Retries == 0 {
				t.Errorf("the cache never retried a load under faults")
			}
			if readErrs == reads || upErrs == uploads || putErrs == puts {
				t.Errorf("every operation of a kind failed: the fault rates are too high to test successes")
			}

			if checkStorage(t, td) == 0 {
				t.Errorf("no link in storage after the run")
			}
			// What was reported done is there.
			for d, b := range committed {
				got, err := readBlob(ctx, r, d, rng)
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("committed upload %s: %v, or wrong bytes", d, err)
				}
			}
			// A tag's last successful push may have been followed by a
			// failed one whose tag write landed (a lost answer), so the
			// tag must point at a revision that exists, with its blobs.
			for tag := range pushed {
				d, err := r.Tags().Get(ctx, tag)
				if err != nil {
					t.Errorf("tag %s pushed under faults: %v", tag, err)
					continue
				}
				if _, _, err := r.Manifests().Get(ctx, d); err != nil {
					t.Errorf("tag %s points at %s: %v", tag, d, err)
				}
			}
		})
	}
}

// isMismatchAfterShortWrite tells whether err is the digest mismatch of an
// upload whose write failed part way (the caller pushed on regardless).
func isMismatchAfterShortWrite(err error) bool {
	var m *DigestMismatchError
	return errors.As(err, &m)
}

// readBlob reads a linked blob whole, with ReadAt at random chunk sizes.
func readBlob(ctx context.Context, r Repository, d digest.Digest, rng *rand.Rand) ([]byte, error) {
	br, err := r.Layers().Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer br.Close()
	out := make([]byte, br.Size())
	for off := 0; off < len(out); {
		n := min(1+rng.IntN(40<<10), len(out)-off)
		got, err := br.ReadAt(out[off:off+n], int64(off))
		if err != nil && !(err == io.EOF && off+got == len(out)) {
			return nil, err
		}
		if got != n {
			return nil, fmt.Errorf("short ReadAt: %d of %d bytes at %d", got, n, off)
		}
		off += n
	}
	return out, nil
}

// uploadBlob pushes b in a few writes with flushes between; on an error it
// stops and cancels the upload (which may fail too).
func uploadBlob(ctx context.Context, r Repository, b []byte, rng *rand.Rand) error {
	up, err := r.Uploads().Create(ctx, digest.FromBytes(b))
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = up.Cancel(ctx)
		return err
	}
	for off := 0; off < len(b); {
		n := min(1+rng.IntN(20<<10), len(b)-off)
		if _, err := up.Write(b[off : off+n]); err != nil {
			return fail(err)
		}
		off += n
		if rng.IntN(3) == 0 {
			if err := up.Flush(ctx); err != nil {
				return fail(err)
			}
		}
	}
	if _, err := up.Commit(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// checkStorage checks the storage below d directly: every blob hashes to
// its name (no torn blob) and every link is a well-formed digest naming a
// blob whose data exists (no link without its blob).
func checkStorage(t *testing.T, d driver.StorageDriver) (links int) {
	t.Helper()
	ctx := context.Background()
	root := "/docker/registry/v2"
	var blobs int
	err := d.Walk(ctx, root, func(fi driver.FileInfo) error {
		if fi.IsDir {
			return nil
		}
		rel := strings.TrimPrefix(fi.Path, root+"/")
		switch {
		case strings.HasPrefix(rel, "blobs/") && strings.HasSuffix(rel, "/data"):
			blobs++
			b, err := d.GetContent(ctx, fi.Path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			if want := strings.Split(rel, "/")[3]; hex.EncodeToString(sum[:]) != want {
				t.Errorf("torn blob %s: content hashes to %x", fi.Path, sum)
			}
		case strings.HasPrefix(rel, "repositories/") && strings.HasSuffix(rel, "/link"):
			links++
			b, err := d.GetContent(ctx, fi.Path)
			if err != nil {
				return err
			}
			target := digest.Digest(b)
			if len(b) != 71 || target.Validate() != nil {
				t.Errorf("malformed link %s: %q", fi.Path, b)
				return nil
			}
			if _, err := d.Stat(ctx, mustPath(blobDataPathSpec{digest: target})); err != nil {
				t.Errorf("link %s names %s, whose data is missing: %v", fi.Path, target, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking storage: %v", err)
	}
	if blobs == 0 {
		t.Errorf("storage check found no blob: nothing was checked")
	}
	return links
}

// A failing block load is tried exactly the cache's number of attempts,
// then fails with an error that is not "not found"; a transient failure is
// retried and the read returns the right bytes.
func TestStoreReadRetriesAreBounded(t *testing.T) {
	ctx := context.Background()
	d := drivers[0].new(t, "")
	s, f, _ := faultStore(t, d, 12)
	r := repo(t, s, "retry")
	b := bytes.Repeat([]byte("retry me "), 500) // one block of the first cache
	dg := pushBlob(t, r, b)

	f.SetRule(faulty.Reader, faulty.Rule{Error: 1})
	before := f.Counts().Calls[faulty.Reader]
	br, err := r.Layers().Open(ctx, dg)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	buf := make([]byte, 100)
	_, err = br.ReadAt(buf, 0)
	if !backendFailure(err) || !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("ReadAt on a failing backend: %v, want the injected error", err)
	}
	if got := f.Counts().Calls[faulty.Reader] - before; got != cache.DefaultAttempts {
		t.Errorf("a failing load opened %d streams, want exactly %d attempts", got, cache.DefaultAttempts)
	}

	// Fail half the opens (no stream is kept, so every load opens one):
	// each load succeeds on a retry.
	flaky := faulty.New(d, 13, map[string]faulty.Rule{faulty.Reader: {Error: 0.5}})
	c2 := cache.NewWithOptions(cache.Options{Budget: 1 << 20, BlockSize: 512, MaxStreams: -1, RetryDelay: -1, Attempts: 20})
	s2, err := New(base.New(flaky), Options{Cache: c2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readBlob(ctx, repo(t, s2, "retry"), dg, rand.New(rand.NewPCG(3, 4)))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("read through a flaky backend: %v", err)
	}
	if flaky.Counts().Injected[faulty.KindError] == 0 || c2.Stats().Retries == 0 {
		t.Errorf("no open failed or was retried: the retry path was not exercised: %v, %+v", flaky.Counts(), c2.Stats())
	}
}

// A backend that stalls a read forever makes the read fail with a timeout
// after the cache's attempts, each bounded by the driver's idle deadline.
func TestStoreStalledReadTimesOut(t *testing.T) {
	ctx := context.Background()
	d := drivers[0].new(t, "")
	f := faulty.New(d, 14, nil)
	bd := base.NewWithOptions(f, base.Options{Timeout: 100 * time.Millisecond, IdleTimeout: 100 * time.Millisecond})
	s, err := New(bd, Options{Cache: cache.New(1<<20, 4096), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r := repo(t, s, "stall")
	dg := pushBlob(t, r, bytes.Repeat([]byte("z"), 10000))
	br, err := r.Layers().Open(ctx, dg)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	f.SetRule(faulty.Read, faulty.Rule{Delay: 1, DelayFor: time.Hour})
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := br.ReadAt(make([]byte, 100), 0)
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("stalled ReadAt: %v, want a timeout", err)
		}
		t.Logf("stalled read failed after %v: %v", time.Since(start), err)
	case <-time.After(30 * time.Second):
		t.Fatal("a stalled backend hangs ReadAt")
	}
	// Metadata calls too.
	f.SetRule(faulty.Any, faulty.Rule{Delay: 1, DelayFor: time.Hour})
	if _, err := r.Layers().Stat(ctx, dg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled Stat: %v, want a timeout", err)
	}
}

// A commit whose Move did its work but lost its answer fails; committing
// again must finish the job (the data is in the blob store now), not
// report the upload as unknown.
func TestStoreCommitAfterLostMove(t *testing.T) {
	for _, dc := range drivers {
		t.Run(dc.name, func(t *testing.T) {
			ctx := context.Background()
			td := dc.new(t, "")
			s, f, _ := faultStore(t, td, 15)
			r := repo(t, s, "lost")
			b := bytes.Repeat([]byte("lost answer "), 3000)
			dg := digest.FromBytes(b)
			up, err := r.Uploads().Create(ctx, dg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := up.Write(b); err != nil {
				t.Fatal(err)
			}
			f.SetRule(faulty.Move, faulty.Rule{ErrorAfter: 1})
			if _, err := up.Commit(ctx); !errors.Is(err, faulty.ErrInjected) {
				t.Fatalf("commit with a lost Move answer: %v, want the injected error", err)
			}
			f.Disable()
			checkStorage(t, td)
			desc, err := up.Commit(ctx)
			if err != nil {
				t.Fatalf("commit again after a lost Move answer: %v", err)
			}
			if desc.Digest != dg || desc.Size != int64(len(b)) {
				t.Errorf("commit = %+v", desc)
			}
			got, err := readBlob(ctx, r, dg, rand.New(rand.NewPCG(1, 1)))
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("reading the blob: %v", err)
			}
			if ups, err := r.Uploads().List(ctx); err != nil || len(ups) != 0 {
				t.Errorf("uploads after the commit: %v, %v", ups, err)
			}
			checkStorage(t, td)
		})
	}
}
