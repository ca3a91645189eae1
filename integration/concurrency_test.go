package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// concurrencyDuration bounds the parallel phase of TestConcurrency.
const concurrencyDuration = 20 * time.Second

// concurrencyRepos are the repositories everything runs on at once.
var concurrencyRepos = []string{"conc/a", "conc/b"}

// opCounts counts the operations of the run by kind.
type opCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *opCounts) add(kind string) {
	c.mu.Lock()
	c.n[kind]++
	c.mu.Unlock()
}

// pairBarrier lets two goroutines start each round together.
type pairBarrier struct {
	mu      sync.Mutex
	waiting chan struct{}
}

// wait returns once both goroutines called it for the round, or when stop
// is closed (false then).
func (b *pairBarrier) wait(stop <-chan struct{}) bool {
	b.mu.Lock()
	if b.waiting == nil {
		ch := make(chan struct{})
		b.waiting = ch
		b.mu.Unlock()
		select {
		case <-ch:
			return true
		case <-stop:
			return false
		}
	}
	close(b.waiting)
	b.waiting = nil
	b.mu.Unlock()
	return true
}

// TestConcurrency runs, against the real (race-enabled) daemon for a
// bounded time: 8 readers of layers and tags, 4 uploaders (two of them
// pushing the same blob into two repositories at the same moment), and
// manifest pushes, re-tags and deletes on the same repositories. Every
// read must return the right bytes, every operation that has no reason to
// fail must succeed, the daemon must report no data race, and regfs fsck
// and an independent check of the tree must find storage consistent.
func TestConcurrency(t *testing.T) {
	m := startMount(t, "filesystem", mountOpts{})
	// Layers that stay for the whole run, for the readers.
	type layer struct {
		repo, digest string
		data         []byte
	}
	var layers []layer
	cfgs := map[string]string{}
	rng := rand.New(rand.NewPCG(1, 1))
	for _, repo := range concurrencyRepos {
		cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","repo":%q}`, repo))
		cfgs[repo] = pushLayer(t, m, repo, cfg)
		for i := 0; i < 4; i++ {
			b := randomData(rng, 1+rng.IntN(3<<20))
			layers = append(layers, layer{repo, pushLayer(t, m, repo, b), b})
		}
	}

	var (
		counts   = opCounts{n: map[string]int{}}
		problems []string
		pmu      sync.Mutex
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		// pushed[repo/tag] holds every manifest pushed to the tag.
		pushed   sync.Map
		uploaded sync.Map // repo + "@" + digest -> data
		shared   sync.Map // digests uploaded to both repositories
	)
	problem := func(format string, args ...any) {
		pmu.Lock()
		if len(problems) < 50 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
		pmu.Unlock()
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}

	// 8 readers: whole layers, random ranges, tags, listings.
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for !stopped() {
				l := layers[rng.IntN(len(layers))]
				p := m.path(l.repo, "_layers", l.digest)
				switch rng.IntN(4) {
				case 0:
					got, err := os.ReadFile(p)
					counts.add("read whole layer")
					if err != nil || !bytes.Equal(got, l.data) {
						problem("read %s: %v (%d bytes, want %d)", p, err, len(got), len(l.data))
					}
				case 1:
					f, err := os.Open(p)
					if err != nil {
						problem("open %s: %v", p, err)
						continue
					}
					for i := 0; i < 8; i++ {
						off := rng.IntN(len(l.data))
						buf := make([]byte, min(1+rng.IntN(300<<10), len(l.data)-off))
						n, err := f.ReadAt(buf, int64(off))
						counts.add("read layer range")
						if err != nil || !bytes.Equal(buf[:n], l.data[off:off+n]) || n != len(buf) {
							problem("pread %s at %d: %v (%d of %d bytes)", p, off, err, n, len(buf))
						}
					}
					f.Close()
				case 2:
					repo := concurrencyRepos[rng.IntN(len(concurrencyRepos))]
					tag := fmt.Sprintf("t%d", rng.IntN(3))
					got, err := os.ReadFile(m.path(repo, "_manifests", tag))
					counts.add("read tag")
					if errors.Is(err, fs.ErrNotExist) {
						continue // untagged or deleted meanwhile
					}
					if err != nil {
						problem("read tag %s:%s: %v", repo, tag, err)
						continue
					}
					v, _ := pushed.Load(repo + ":" + tag)
					ok := false
					if v != nil {
						for _, mf := range v.(*manifestSet).all() {
							ok = ok || bytes.Equal(got, mf)
						}
					}
					if !ok {
						problem("tag %s:%s reads %d bytes never pushed to it: %q", repo, tag, len(got), got)
					}
				default:
					repo := concurrencyRepos[rng.IntN(len(concurrencyRepos))]
					for _, dir := range []string{"_layers", "_manifests", "_uploads"} {
						_, err := os.ReadDir(m.path(repo, dir))
						counts.add("list directory")
						if err != nil {
							problem("readdir %s/%s: %v", repo, dir, err)
						}
					}
				}
			}
		})
	}

	// 4 uploaders: two push the same content into the two repositories at
	// once each round, two push their own content.
	var bar pairBarrier
	for g := 0; g < 2; g++ {
		wg.Go(func() {
			repo := concurrencyRepos[g]
			for round := 0; ; round++ {
				if !bar.wait(stop) {
					return
				}
				b := randomData(rand.New(rand.NewPCG(uint64(round), 3)), 10_000+round*7919%(1<<20))
				d := sha(b)
				err := writeClose(m.path(repo, "_uploads", d), oCreate, b)
				counts.add("upload (same blob in two repositories)")
				if err != nil {
					problem("same-blob upload %s to %s: %v", d, repo, err)
					continue
				}
				uploaded.Store(repo+"@"+d, b)
				shared.Store(d, true)
			}
		})
	}
	for g := 0; g < 2; g++ {
		wg.Go(func() {
			repo := concurrencyRepos[g]
			rng := rand.New(rand.NewPCG(uint64(g), 4))
			for !stopped() {
				b := randomData(rng, 1+rng.IntN(1<<20))
				d := sha(b)
				err := writeClose(m.path(repo, "_uploads", d), oCreate, b)
				counts.add("upload")
				if err != nil {
					problem("upload %s to %s: %v", d, repo, err)
					continue
				}
				uploaded.Store(repo+"@"+d, b)
			}
		})
	}

	// Manifest pushes, re-tags, untags and deletes, one writer per
	// repository plus one deleter across both.
	for g, repo := range concurrencyRepos {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			var repoLayers []string
			for _, l := range layers {
				if l.repo == repo {
					repoLayers = append(repoLayers, l.digest)
				}
			}
			for i := 0; !stopped(); i++ {
				tag := fmt.Sprintf("t%d", rng.IntN(3))
				mf := concurrencyManifest(cfgs[repo], repoLayers[:1+rng.IntN(len(repoLayers))], fmt.Sprintf("%s-%d", repo, i))
				set, _ := pushed.LoadOrStore(repo+":"+tag, &manifestSet{})
				set.(*manifestSet).add(mf)
				err := writeClose(m.path(repo, "_manifests", tag), oCreate, mf)
				counts.add("push manifest")
				if errors.Is(err, syscall.ENOENT) {
					// The deleter untagged the tag between the kernel's
					// lookup and the SETATTR of O_TRUNC, whose reply needs
					// the tag's attributes: the push fails and is retried
					// by the next round, as a user would.
					counts.add("push manifest lost to a concurrent untag (ENOENT)")
					continue
				}
				if err != nil {
					problem("push %s:%s: %v", repo, tag, err)
					continue
				}
				if rng.IntN(3) == 0 {
					// Re-tag the new revision under another tag.
					other := fmt.Sprintf("t%d", rng.IntN(3))
					set, _ := pushed.LoadOrStore(repo+":"+other, &manifestSet{})
					set.(*manifestSet).add(mf)
					tmp := m.path(repo, "_manifests", other)
					err := retryEINTR(func() error { return syscall.Link(m.path(repo, "_manifests", sha(mf)), tmp) })
					counts.add("tag with ln")
					// The deleter may have removed the revision meanwhile;
					// ln onto an existing tag re-tags (EEXIST is the
					// kernel's if it still has the name cached).
					if err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EEXIST) {
						problem("ln %s %s: %v", sha(mf), tmp, err)
					}
				}
			}
		})
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(9, 6))
		for !stopped() {
			time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
			repo := concurrencyRepos[rng.IntN(len(concurrencyRepos))]
			names, err := os.ReadDir(m.path(repo, "_manifests"))
			counts.add("list directory")
			if err != nil {
				problem("readdir %s/_manifests: %v", repo, err)
				continue
			}
			if len(names) == 0 {
				continue
			}
			name := names[rng.IntN(len(names))].Name()
			err = retryEINTR(func() error { return syscall.Unlink(m.path(repo, "_manifests", name)) })
			if strings.HasPrefix(name, "sha256:") {
				counts.add("delete revision")
			} else {
				counts.add("untag")
			}
			switch {
			case err == nil, errors.Is(err, syscall.ENOENT):
			case errors.Is(err, syscall.EPERM) && !strings.HasPrefix(name, "sha256:"):
				// A new tag name while its first manifest is being
				// written cannot be removed (docs/decisions.md).
				counts.add("untag refused while the tag is being pushed (EPERM)")
			default:
				problem("rm %s/_manifests/%s: %v", repo, name, err)
			}
		}
	})

	time.Sleep(concurrencyDuration)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("workers did not stop within 2 minutes of the end of the run: a hang\n")
	}

	total := 0
	for _, k := range slices.Sorted(maps.Keys(counts.n)) {
		t.Logf("%6d %s", counts.n[k], k)
		total += counts.n[k]
	}
	t.Logf("%6d operations in %v", total, concurrencyDuration)
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) > 0 {
		// What the daemon logged for each EIO, say, is the cause.
		for _, l := range strings.Split(m.logText(), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				t.Log("daemon: " + l)
			}
		}
	}

	// Every upload is in its repository, with its bytes; no upload is left.
	nShared := 0
	uploaded.Range(func(k, v any) bool {
		repo, d, _ := strings.Cut(k.(string), "@")
		if got, err := os.ReadFile(m.path(repo, "_layers", d)); err != nil || !bytes.Equal(got, v.([]byte)) {
			t.Errorf("uploaded layer %s in %s: %v", d, repo, err)
		}
		return true
	})
	shared.Range(func(k, _ any) bool {
		nShared++
		d := k.(string)
		for _, repo := range concurrencyRepos {
			if _, ok := uploaded.Load(repo + "@" + d); !ok {
				continue
			}
			if _, err := os.Stat(m.path(repo, "_layers", d)); err != nil {
				t.Errorf("same-blob upload %s not linked in %s: %v", d, repo, err)
			}
		}
		return true
	})
	if nShared == 0 {
		t.Errorf("no same-blob upload completed")
	}
	for _, repo := range concurrencyRepos {
		if left, err := os.ReadDir(m.path(repo, "_uploads")); err != nil || len(left) != 0 {
			t.Errorf("%s/_uploads after the run: %v, %v", repo, left, err)
		}
	}

	log := stoppedLog(t, m)
	if strings.Contains(log, "level=ERROR") {
		t.Errorf("daemon logged errors during the run:\n%s", grepLines(log, "level=ERROR", 20))
	}
	checkTreeConsistent(t, m.Root)
}

// manifestSet is every manifest pushed to one tag.
type manifestSet struct {
	mu  sync.Mutex
	mfs [][]byte
}

func (s *manifestSet) add(b []byte) {
	s.mu.Lock()
	s.mfs = append(s.mfs, b)
	s.mu.Unlock()
}

func (s *manifestSet) all() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.mfs...)
}

// concurrencyManifest is an OCI manifest with an annotation that makes
// each push a distinct revision.
func concurrencyManifest(config string, layers []string, note string) []byte {
	m := ociManifest(config, layers...)
	return append(m[:len(m)-1], fmt.Sprintf(`,"annotations":{"n":%q}}`, note)...)
}

func randomData(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func grepLines(s, sub string, max int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && len(out) < max {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// fsckReport is the part of regfs fsck --json this test reads.
type fsckReport struct {
	Blobs    int  `json:"blobs"`
	Links    int  `json:"links"`
	Complete bool `json:"complete"`
	Problems []struct {
		Kind, Path, Detail string
	} `json:"problems"`
}

var linkRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// checkTreeConsistent runs regfs fsck on root and checks the tree itself
// too, without regfs code: every blob hashes to its name, every link is a
// digest whose blob exists, and no blob is stored twice (temp files of the
// filesystem driver, named .#*, count as copies).
func checkTreeConsistent(t *testing.T, root string) {
	t.Helper()
	out, err := exec.Command(regfsBin, "fsck", "--root", root, "--json").Output()
	var rep fsckReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("regfs fsck: %v; output does not parse: %v\n%s", err, jerr, out)
	}
	if err != nil || !rep.Complete || len(rep.Problems) > 0 {
		t.Errorf("regfs fsck: %v, complete %v, problems %+v", err, rep.Complete, rep.Problems)
	}
	t.Logf("fsck: %d blobs, %d links", rep.Blobs, rep.Links)

	v2 := filepath.Join(root, "docker/registry/v2")
	var blobs, links atomic.Int64
	err = filepath.WalkDir(v2, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), ".#") {
			t.Errorf("temporary file left: %s", p)
			return nil
		}
		if e.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(v2, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		switch {
		case parts[0] == "blobs":
			if len(parts) != 5 || parts[4] != "data" {
				t.Errorf("unexpected file in the blob store: %s", rel)
				return nil
			}
			blobs.Add(1)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			if hex.EncodeToString(s[:]) != parts[3] {
				t.Errorf("blob %s does not hash to its name", rel)
			}
		case e.Name() == "link":
			links.Add(1)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if !linkRE.Match(b) {
				t.Errorf("malformed link %s: %q", rel, b)
				return nil
			}
			h := string(b[7:])
			if _, err := os.Stat(filepath.Join(v2, "blobs/sha256", h[:2], h, "data")); err != nil {
				t.Errorf("link %s names a missing blob: %v", rel, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", v2, err)
	}
	if blobs.Load() != int64(rep.Blobs) {
		t.Errorf("fsck counted %d blobs, the tree holds %d", rep.Blobs, blobs.Load())
	}
}
