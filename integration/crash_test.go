package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCrashKillPoints SIGKILLs the daemon at many random moments while a
// layer is copied into _uploads or a manifest into _manifests, and after
// every kill checks what an operator relies on: the dead mount is cleared,
// a new mount comes up, `regfs fsck` finds nothing wrong, every blob hashes
// to its name, no link points at a missing blob, an interrupted upload
// resumes from the size the storage holds and commits with the right
// digest, and a manifest is either complete (revision readable, tag
// pointing at it) or absent, never a tag without its revision.
//
// Every state a kill can leave must be hit (see crashSteers): a state the
// random kills missed ("revision stored but not yet tagged" is a window of
// one link write) is reached by starting the daemon with its test-only
// REGFS_TEST_PAUSE hook, which stops it before the named storage write,
// and killing it there; the kill must leave the state it aimed at.
//
// The delays are drawn from a seeded generator; the seed is logged, and
// REGFS_CRASH_SEED=<seed> repeats a run. REGFS_CRASH_POINTS sets the number
// of kills (default 50).
func TestCrashKillPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("kills the daemon 50 times; skipped with -short")
	}
	points := 50
	if v := os.Getenv("REGFS_CRASH_POINTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("REGFS_CRASH_POINTS=%q: want a positive number", v)
		}
		points = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("REGFS_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("REGFS_CRASH_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (REGFS_CRASH_SEED=%d repeats the draws; delays scale with the measured undisturbed times), %d kill points", seed, seed, points)

	root := t.TempDir()
	c := &crashRun{
		t:      t,
		m:      startMount(t, "filesystem", mountOpts{Root: root}),
		root:   root,
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		hashed: map[string]bool{},
		tags:   map[string][]byte{},
		temps:  map[string]bool{},
	}
	c.setUp()
	start := time.Now()
	for i := 0; i < points; i++ {
		if c.rng.IntN(10) < 6 {
			c.killDuringLayer(i, nil)
		} else {
			c.killDuringManifest(i, nil)
		}
	}
	// Every state must be hit: those the random times missed are reached
	// by pausing the daemon at the write that leads to them (the daemon's
	// REGFS_TEST_PAUSE hook) and killing it there.
	for j, st := range crashSteers {
		if *st.hits(&c.stats) > 0 {
			continue
		}
		t.Logf("state %q not hit by the random kills: steering a kill to it (%s)", st.state, st.pause)
		i := points + j
		if st.layer {
			c.killDuringLayer(i, &st)
		} else {
			c.killDuringManifest(i, &st)
		}
		if *st.hits(&c.stats) == 0 {
			t.Errorf("the kill steered to %q (%s) did not reach it", st.state, st.pause)
		}
	}
	c.checkStorage("end of run")
	c.finalClean()
	if c.leftovers > 0 {
		t.Logf("%d leftover staging entries seen by fsck after restarts, all removed by a later start", c.leftovers)
	}
	left, inUploads := 0, 0
	for p := range c.temps {
		if exists(p) {
			left++
			if strings.Contains(p, "/_uploads/") {
				inUploads++
			} else {
				rel, _ := filepath.Rel(root, p)
				t.Logf("orphaned temporary file: %s", rel)
			}
		}
	}
	s := c.stats
	t.Logf("%d kills in %v: layer uploads %d (committed before the kill %d, of which %d left an empty upload directory; resumed from a partial upload %d, restarted from nothing %d), "+
		"manifest pushes %d (complete %d, revision stored but not yet tagged %d, absent %d); "+
		"%d fsck runs clean, %d blobs (%d MiB) hashed by the test, %d link files checked; "+
		"%d temporary files orphaned by kills, %d of them still there at the end (%d inside upload directories)",
		points, time.Since(start).Round(time.Second),
		s.layerKills, s.layerCommitted, s.layerLeftover, s.layerResumed, s.layerRestarted,
		s.manifestKills, s.manifestComplete, s.manifestRevisionOnly, s.manifestAbsent,
		s.fsckRuns, len(c.hashed), s.hashedBytes>>20, s.linksChecked, len(c.temps), left, inUploads)
}

// crashRepo is the repository every kill point writes to.
const crashRepo = "crash/app"

// crashSteer is a kill point aimed at one state: the daemon is started
// with REGFS_TEST_PAUSE=pause, stops before the storage call it names, and
// is killed there; an empty pause kills it once cp has finished.
type crashSteer struct {
	state string
	layer bool // a layer upload, else a manifest push
	pause string
	hits  func(*crashStats) *int
}

// crashSteers lists every state TestCrashKillPoints must hit, with the
// pause that reaches it.
var crashSteers = []crashSteer{
	{"layer restarted from nothing", true, `* /_uploads/[^/]+/startedat$`,
		func(s *crashStats) *int { return &s.layerRestarted }},
	{"layer resumed from a partial upload", true, `Move /blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data$`,
		func(s *crashStats) *int { return &s.layerResumed }},
	{"layer committed, empty upload left", true, `Delete /repositories/crash/app/_uploads/[^/]+$`,
		func(s *crashStats) *int { return &s.layerLeftover }},
	{"layer committed", true, "",
		func(s *crashStats) *int { return &s.layerCommitted }},
	{"manifest absent", false, `PutContent /_manifests/revisions/sha256/[0-9a-f]{64}/link$`,
		func(s *crashStats) *int { return &s.manifestAbsent }},
	{"revision stored but not yet tagged", false, `PutContent /_manifests/tags/[^/]+/index/sha256/[0-9a-f]{64}/link$`,
		func(s *crashStats) *int { return &s.manifestRevisionOnly }},
	{"manifest complete", false, "",
		func(s *crashStats) *int { return &s.manifestComplete }},
}

// crashRun is the state of one TestCrashKillPoints.
type crashRun struct {
	t    *testing.T
	m    *mount
	root string
	rng  *rand.Rand

	// layerTime and manifestTime are how long an undisturbed 4 MiB layer
	// upload and manifest push took; kill delays are drawn around them.
	layerTime, manifestTime time.Duration
	// shared are the layers every manifest references: many references
	// make a manifest's verification, and so its push, long enough for
	// kills to land inside it.
	shared [][]byte
	// hashed holds the blob files already verified (path, size, mtime):
	// blobs never change, so each is hashed once.
	hashed map[string]bool
	// tags holds what each tag was last pushed with.
	tags map[string][]byte
	// temps holds the temporary files of the filesystem driver that
	// kills orphaned (seen by any check).
	temps map[string]bool
	// leftovers counts the leftover staging entries fsck saw after a
	// restart (finalClean checks that none stays).
	leftovers int
	stats     crashStats
}

// crashStats counts the kill points by the state each left.
type crashStats struct {
	layerKills, layerCommitted, layerResumed, layerRestarted, layerLeftover int
	manifestKills, manifestComplete, manifestRevisionOnly, manifestAbsent   int
	fsckRuns, linksChecked                                                  int
	hashedBytes                                                             int64
}

// bytes returns n bytes from the seeded generator.
func (c *crashRun) bytes(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := c.rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// setUp pushes the shared layers and times uploads and pushes the way the
// kill points run them: cp started directly, on a mount just restarted
// (the first requests of a new daemon are slower than a warm one's).
func (c *crashRun) setUp() {
	t := c.t
	sh(t, "mkdir -p "+c.m.path(crashRepo))
	for i := 0; i < 24; i++ {
		l := c.bytes(1000 + i)
		pushLayer(t, c.m, crashRepo, l)
		c.shared = append(c.shared, l)
	}
	var layerTimes, manifestTimes []time.Duration
	for i := 0; i < 3; i++ {
		probe := c.bytes(4 << 20)
		c.m.restart()
		layerTimes = append(layerTimes, c.timedCp(writeFile(t, probe), c.m.path(crashRepo, "_uploads", sha(probe))))
		config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"crash":"probe%d"}`, i))
		pushLayer(t, c.m, crashRepo, config)
		mf := writeFile(t, imageManifest(t, config, c.shared...))
		c.m.restart()
		manifestTimes = append(manifestTimes, c.timedCp(mf, c.m.path(crashRepo, "_manifests", fmt.Sprintf("probe%d", i))))
	}
	slices.Sort(layerTimes)
	slices.Sort(manifestTimes)
	c.layerTime, c.manifestTime = layerTimes[1], manifestTimes[1]
	t.Logf("on a fresh mount (median of 3): 4 MiB layer upload %v, manifest push %v", c.layerTime, c.manifestTime)
}

// learn moves an estimate a quarter of the way towards a new measurement,
// so the kill delays follow the machine's pace through the run.
func learn(est *time.Duration, measured time.Duration) {
	*est += (measured - *est) / 4
}

// timedCp runs cp src dst and returns how long it took.
func (c *crashRun) timedCp(src, dst string) time.Duration {
	start := time.Now()
	if out, err := exec.Command("cp", src, dst).CombinedOutput(); err != nil {
		c.t.Fatalf("cp %s: %v\n%s", dst, err, out)
	}
	return time.Since(start)
}

// delay draws a kill delay in [0, 1.3*d): mostly inside the operation,
// sometimes just after it.
func (c *crashRun) delay(d time.Duration) time.Duration {
	return time.Duration(c.rng.Int64N(int64(d)*13/10 + 1))
}

// cpThenKill starts cp src dst, kills the daemon after delay (or where
// steer says), waits for cp and mounts again. It returns whether cp
// succeeded.
func (c *crashRun) cpThenKill(src, dst string, delay time.Duration, steer *crashSteer) bool {
	t := c.t
	t.Helper()
	if steer != nil && steer.pause != "" {
		env := c.m.env
		c.m.env = append(slices.Clone(env), "REGFS_TEST_PAUSE="+steer.pause)
		c.m.restart()
		c.m.env = env
	}
	cp := exec.Command("cp", src, dst)
	var out bytes.Buffer
	cp.Stdout, cp.Stderr = &out, &out
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Wait() }()
	switch {
	case steer == nil:
		time.Sleep(delay)
	case steer.pause == "":
		err := <-done
		done <- err
	default:
		c.waitPaused(steer, done)
	}
	c.m.kill()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cp.Process.Kill()
		<-done
		t.Fatalf("cp %s did not end within 30 s of the daemon's death", dst)
	}
	c.m.restart()
	return err == nil
}

// waitPaused waits until the daemon says it paused where steer asked. cp
// ending first means the pause was never reached: the hook's pattern no
// longer matches how the daemon writes, and the steering must be updated.
func (c *crashRun) waitPaused(steer *crashSteer, done chan error) {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(c.m.logText(), "msg=test-pause ") {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("steering to %q: cp ended (%v) without the daemon pausing at %q; update crashSteers\n%s", steer.state, err, steer.pause, c.m.logText())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("steering to %q: no pause at %q within 30s\n%s", steer.state, steer.pause, c.m.logText())
		}
	}
}

// killDuringLayer copies a layer of 0.5 to 4.5 MiB into _uploads, kills the
// daemon at a random moment (or where steer says), and finishes the upload
// after the restart.
func (c *crashRun) killDuringLayer(i int, steer *crashSteer) {
	t := c.t
	c.stats.layerKills++
	content := c.bytes(512<<10 + c.rng.IntN(4<<20))
	d := sha(content)
	src := writeFile(t, content)
	up := c.m.path(crashRepo, "_uploads", d)
	layer := c.m.path(crashRepo, "_layers", d)
	delay := c.delay(c.layerTime * time.Duration(len(content)) / (4 << 20))
	where := fmt.Sprintf("kill %d: %d-byte layer %s, killed after %v", i, len(content), d, delay)
	if steer != nil {
		where = fmt.Sprintf("kill %d: %d-byte layer %s, steered to %q", i, len(content), d, steer.state)
	}
	cpOK := c.cpThenKill(src, up, delay, steer)
	c.checkStorage(where)

	how := "nothing"
	switch {
	case exists(layer):
		c.stats.layerCommitted++
		if exists(up) {
			// Killed between the commit's link and its removal of the
			// upload directory (the registry's own order): the data is
			// in the blob, and the directory left behind is an empty
			// upload that rm cancels and gc would purge.
			if size := strings.TrimSpace(sh(t, "stat -c %s "+up)); size != "0" {
				t.Fatalf("%s: layer committed, yet its upload holds %s bytes", where, size)
			}
			c.stats.layerLeftover++
			sh(t, "rm "+up)
		}
	case exists(up):
		size, err := strconv.ParseInt(strings.TrimSpace(sh(t, "stat -c %s "+up)), 10, 64)
		if err != nil || size < 0 || size > int64(len(content)) {
			t.Fatalf("%s: partial upload size %d (%v)", where, size, err)
		}
		if cpOK {
			t.Fatalf("%s: cp succeeded before the kill, but the layer is an upload of %d bytes", where, size)
		}
		c.stats.layerResumed++
		how = fmt.Sprintf("resuming at %d", size)
		sh(t, fmt.Sprintf("tail -c +%d %q >> %q", size+1, src, up))
	default:
		if cpOK {
			t.Fatalf("%s: cp succeeded before the kill, but neither the layer nor the upload exists", where)
		}
		c.stats.layerRestarted++
		how = "copying again"
		learn(&c.layerTime, c.timedCp(src, up)*(4<<20)/time.Duration(len(content)))
	}
	if !exists(layer) {
		t.Fatalf("%s: after %s the layer is not there; uploads: %s\ndaemon log:\n%s", where, how, sh(t, "ls -la "+c.m.path(crashRepo, "_uploads")), c.m.logText())
	}
	if got := "sha256:" + strings.Fields(sh(t, "sha256sum "+layer))[0]; got != d {
		t.Fatalf("%s: layer reads back as %s", where, got)
	}
	if exists(up) {
		t.Fatalf("%s: upload still listed after its commit", where)
	}
}

// killDuringManifest pushes a manifest referencing every shared layer,
// tagged "latest" (moving an existing tag) or a new tag, and kills the
// daemon at a random moment (or where steer says).
func (c *crashRun) killDuringManifest(i int, steer *crashSteer) {
	t := c.t
	c.stats.manifestKills++
	config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"crash":%d}`, i))
	pushLayer(t, c.m, crashRepo, config)
	mf := imageManifest(t, config, c.shared...)
	d := sha(mf)
	tag := "latest"
	if c.rng.IntN(2) == 0 {
		tag = fmt.Sprintf("t%d", i)
	}
	prev := c.tags[tag]
	src := writeFile(t, mf)
	delay := c.delay(c.manifestTime)
	where := fmt.Sprintf("kill %d: manifest %s tagged %s, killed after %v", i, d, tag, delay)
	if steer != nil {
		where = fmt.Sprintf("kill %d: manifest %s tagged %s, steered to %q", i, d, tag, steer.state)
	}
	cpOK := c.cpThenKill(src, c.m.path(crashRepo, "_manifests", tag), delay, steer)
	c.checkStorage(where)

	rev, revErr := os.ReadFile(c.m.path(crashRepo, "_manifests", d))
	if revErr == nil && !bytes.Equal(rev, mf) {
		t.Fatalf("%s: revision reads %d bytes that are not the manifest pushed", where, len(rev))
	}
	if revErr != nil && !errors.Is(revErr, fs.ErrNotExist) {
		t.Fatalf("%s: reading the revision: %v", where, revErr)
	}
	tagged, tagErr := os.ReadFile(c.m.path(crashRepo, "_manifests", tag))
	if tagErr != nil && !errors.Is(tagErr, fs.ErrNotExist) {
		t.Fatalf("%s: reading the tag: %v", where, tagErr)
	}
	isNew := tagErr == nil && bytes.Equal(tagged, mf)
	switch {
	case tagErr == nil && !isNew && !bytes.Equal(tagged, prev):
		t.Fatalf("%s: tag reads neither the new manifest nor the one it had", where)
	case tagErr != nil && prev != nil:
		t.Fatalf("%s: tag %s, which existed before, is gone", where, tag)
	case isNew && revErr != nil:
		t.Fatalf("%s: the tag points at the new manifest but its revision is not readable: %v", where, revErr)
	case cpOK && !isNew:
		t.Fatalf("%s: cp succeeded before the kill, but the tag does not read the new manifest", where)
	case isNew:
		c.stats.manifestComplete++
	case revErr == nil:
		// Stored, not yet tagged: the state a push by digest leaves,
		// which the next push completes.
		c.stats.manifestRevisionOnly++
	default:
		c.stats.manifestAbsent++
	}
	if !isNew {
		learn(&c.manifestTime, c.timedCp(src, c.m.path(crashRepo, "_manifests", tag)))
		if got := readFile(t, c.m.path(crashRepo, "_manifests", tag)); !bytes.Equal(got, mf) {
			t.Fatalf("%s: re-pushed tag reads %d other bytes", where, len(got))
		}
	}
	c.tags[tag] = mf
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// crashProblem is one problem regfs fsck --json reports.
type crashProblem struct {
	Kind, Path, Detail string
}

// crashFsckReport is the part of regfs fsck --json the test reads.
type crashFsckReport struct {
	Blobs    int            `json:"blobs"`
	Links    int            `json:"links"`
	Problems []crashProblem `json:"problems"`
	Uploads  []struct {
		ID   string `json:"id"`
		Size int64  `json:"size"`
	} `json:"uploads"`
	Complete bool `json:"complete"`
}

// checkStorage runs regfs fsck on the root and checks the blobs and links
// itself, without regfs code: every blob hashes to its name and every link
// is a well-formed digest of an existing blob.
func (c *crashRun) checkStorage(where string) {
	t := c.t
	t.Helper()
	rep, err := c.fsck(where)
	// A kill may leave a staging entry of the driver's behind (a leftover:
	// hidden, it only takes space). The next mount's start removes those,
	// in the background; one it misses while the dead daemon's lock on it
	// is still being released is removed by a later start, which the end
	// of the run checks (finalClean).
	var bad []crashProblem
	for _, p := range rep.Problems {
		if p.Kind == "leftover" {
			c.leftovers++
			continue
		}
		bad = append(bad, p)
	}
	if len(bad) > 0 || !rep.Complete || (err != nil && len(rep.Problems) == 0) {
		t.Fatalf("%s: regfs fsck: %v: %+v\ndaemon log:\n%s", where, err, rep.Problems, c.m.logText())
	}
	c.stats.fsckRuns++

	v2 := filepath.Join(c.root, "docker/registry/v2")
	blobs := filepath.Join(v2, "blobs/sha256")
	err = filepath.WalkDir(v2, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), ".#") {
			c.temps[p] = true // the filesystem driver's, orphaned by a kill
			return nil
		}
		if e.IsDir() {
			return nil
		}
		switch {
		case strings.HasPrefix(p, blobs+"/"):
			return c.checkBlob(where, p, e)
		case e.Name() == "link":
			c.checkLinkFile(where, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: walking %s: %v", where, v2, err)
	}
}

// fsck runs regfs fsck --json on the storage root.
func (c *crashRun) fsck(where string) (crashFsckReport, error) {
	c.t.Helper()
	out, err := exec.Command(regfsBin, "fsck", "--root", c.root, "--json").Output()
	var rep crashFsckReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		c.t.Fatalf("%s: regfs fsck: %v, output does not parse: %v\n%s", where, err, jerr, out)
	}
	return rep, err
}

// finalClean restarts the daemon and checks that its start leaves the
// storage without a single problem, leftovers included: what every kill
// left behind is gone.
func (c *crashRun) finalClean() {
	t := c.t
	t.Helper()
	c.m.restart()
	var rep crashFsckReport
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		rep, err = c.fsck("after the last restart")
		if err == nil && len(rep.Problems) == 0 && rep.Complete {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("after the last restart: regfs fsck: %v: %+v\ndaemon log:\n%s", err, rep.Problems, c.m.logText())
}

var crashLinkRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func (c *crashRun) checkBlob(where, p string, e fs.DirEntry) error {
	t := c.t
	fi, err := e.Info()
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%s %d %d", p, fi.Size(), fi.ModTime().UnixNano())
	if c.hashed[key] {
		return nil
	}
	if e.Name() != "data" {
		t.Fatalf("%s: unexpected file in the blob store: %s", where, p)
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if name := filepath.Base(filepath.Dir(p)); hex.EncodeToString(h.Sum(nil)) != name {
		t.Fatalf("%s: blob %s does not hash to its name (%d bytes)", where, p, n)
	}
	c.hashed[key] = true
	c.stats.hashedBytes += n
	return nil
}

func (c *crashRun) checkLinkFile(where, p string) {
	t := c.t
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if len(b) != 71 || !crashLinkRE.Match(b) {
		t.Fatalf("%s: link %s holds %q", where, p, b)
	}
	hx := string(b[len("sha256:"):])
	if !exists(filepath.Join(c.root, "docker/registry/v2/blobs/sha256", hx[:2], hx, "data")) {
		t.Fatalf("%s: link %s points at missing blob %s", where, p, b)
	}
	c.stats.linksChecked++
}

// TestCrashCompleteUploadCommits covers the kill that lands after an
// upload's last byte reached storage and before its commit: the upload
// holds every byte, so "the rest" to append is empty. Appending nothing
// (`tail -c +N` of the whole file, or `: >>`) must still commit it; an
// incomplete upload closed without a write stays, with no error.
func TestCrashCompleteUploadCommits(t *testing.T) {
	root := t.TempDir()
	m := startMount(t, "filesystem", mountOpts{Root: root})
	full := randomBytes(t, 3<<20)
	half := randomBytes(t, 1<<20)
	src, halfSrc := writeFile(t, full), writeFile(t, half)
	d, hd := sha(full), sha(half)
	sh(t, "mkdir -p "+m.path("done"))
	// Every byte, through a pipe that never closes the upload's write
	// end before the kill.
	fifo := filepath.Join(t.TempDir(), "fifo")
	sh(t, "mkfifo "+fifo)
	hold := exec.Command("bash", "-c", fmt.Sprintf("exec 3>%q; exec sleep 60", fifo))
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Process.Kill(); _ = hold.Wait() })
	writer := exec.Command("bash", "-c", fmt.Sprintf("(cat %q; cat %q) >> %q", src, fifo, m.path("done/_uploads", d)))
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Process.Kill(); _ = writer.Wait() })
	// And half of another layer; its close fails (EBADMSG) and it stays.
	if out, err := shErr(t, fmt.Sprintf("head -c %d %q >> %q", len(half)/2, halfSrc, m.path("done/_uploads", hd))); err == nil {
		t.Fatalf("half a layer committed: %s", out)
	}
	upFile := filepath.Join(root, "docker/registry/v2/repositories/done/_uploads")
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := shErr(t, fmt.Sprintf("find %q -name data -size %dc", upFile, len(full)))
		if strings.TrimSpace(out) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload never reached %d bytes", len(full))
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.kill()
	_ = hold.Process.Kill()
	m.restart()

	up := m.path("done/_uploads", d)
	if size := strings.TrimSpace(sh(t, "stat -c %s "+up)); size != strconv.Itoa(len(full)) {
		t.Fatalf("upload size after the kill = %s, want %d", size, len(full))
	}
	// An incomplete upload opened and closed without a write stays, and
	// the close reports nothing (the restart emptied .regfs/errors).
	sh(t, ": >> "+m.path("done/_uploads", hd))
	if size := strings.TrimSpace(sh(t, "stat -c %s "+m.path("done/_uploads", hd))); size != strconv.Itoa(len(half)/2) {
		t.Fatalf("half upload size = %s after an empty append", size)
	}
	if errs := sh(t, "cat "+m.path(".regfs/errors")); strings.Contains(errs, hd) {
		t.Errorf("an empty append to an incomplete upload was recorded as a rejection:\n%s", errs)
	}
	// The rest of the complete one is empty; appending it commits.
	sh(t, fmt.Sprintf("tail -c +%d %q >> %q", len(full)+1, src, up))
	if exists(up) {
		t.Fatal("a complete upload is still an upload after an empty append")
	}
	if got := "sha256:" + strings.Fields(sh(t, "sha256sum "+m.path("done/_layers", d)))[0]; got != d {
		t.Fatalf("layer reads back as %s", got)
	}
	sh(t, fmt.Sprintf("tail -c +%d %q >> %q", len(half)/2+1, halfSrc, m.path("done/_uploads", hd)))
	if !exists(m.path("done/_layers", hd)) {
		t.Fatal("the half upload did not commit once its rest was appended")
	}
	out, err := exec.Command(regfsBin, "fsck", "--root", root).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck after the resumes: %v\n%s", err, out)
	}
}
