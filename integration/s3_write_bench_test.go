package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The shapes of rows S3 and S4 (issue 15).
const (
	uploadBenchSize = 1 << 30 // S3: a 1 GiB layer
	listBenchRepos  = 1000    // S4: 1,000 repositories
)

// BenchmarkS3Upload (row S3) compares `cp` of a 1 GiB layer into
// `_uploads/sha256:<hex>` of a mount on the S3 driver (the close that
// verifies and commits it included) with aws-sdk-go-v2's upload manager
// (feature/s3/manager: multipart, its default part size and concurrency)
// putting the same file to the same versitygw. Both read the file from the
// page cache. Each iteration runs both once, alternately, into a
// repository of its own, and removes the blob afterwards, so that every
// commit stores the blob anew. The target is >= 0.7:
//
//	go test -run '^$' -bench BenchmarkS3Upload -benchtime 3x ./integration/
//
// The daemon is built without -race for this (the tests' binary has it).
func BenchmarkS3Upload(b *testing.B) {
	m := startMount(b, "s3", mountOpts{Bin: benchBinary(b), Prefix: "bench"})
	src, dgst := uploadSource(b, uploadBenchSize)
	var regfsTime, moveTime, mgrTime time.Duration
	b.SetBytes(uploadBenchSize)
	i := 0
	for b.Loop() {
		r, mv, u := uploadOnce(b, m, src, dgst, i)
		regfsTime += r
		moveTime += mv
		mgrTime += u
		i++
	}
	b.StopTimer()
	n := float64(b.N) * uploadBenchSize / 1e6
	regfsMBs, mgrMBs := n/regfsTime.Seconds(), n/mgrTime.Seconds()
	streamMBs := n / (regfsTime - moveTime).Seconds()
	b.ReportMetric(regfsMBs, "regfs-MB/s")
	b.ReportMetric(mgrMBs, "manager-MB/s")
	b.ReportMetric(regfsMBs/mgrMBs, "ratio")
	b.ReportMetric(streamMBs/mgrMBs, "ratio-without-copy")
	fmt.Printf("S3 upload: regfs cp %.0f MB/s (%.0f without the commit's copy, %.1f s of %.1f), upload manager %.0f MB/s, ratio %.2f (%.2f without the copy)\n",
		regfsMBs, streamMBs, moveTime.Seconds()/float64(b.N), regfsTime.Seconds()/float64(b.N), mgrMBs, regfsMBs/mgrMBs, streamMBs/mgrMBs)
}

// BenchmarkS3UploadFullCache compares the same cp of a 512 MiB layer into
// _uploads/ on a fresh mount (block cache empty) and on one whose cache a
// cat of a 256 MiB layer filled, alternately: regfs's Go memory limit is
// the cache budget plus a headroom, and an upload's part buffers beyond it
// made the collector run back to back (the S3 writer raises the limit by
// what it holds). It reports the time of each without the commit's copy:
//
//	go test -run '^$' -bench BenchmarkS3UploadFullCache -benchtime 2x ./integration/
func BenchmarkS3UploadFullCache(b *testing.B) {
	e := newS3Bench(b, buildBenchRegfs(b), 256<<20)
	m, dgst := e.m, e.dgst
	src, udg := uploadSource(b, 512<<20)
	var times [2]time.Duration
	i := 0
	for b.Loop() {
		for full := range 2 {
			b.StopTimer()
			m.restart()
			if full == 1 {
				if out, err := exec.Command("sh", "-c", "cat "+m.path("bench/app/_layers", dgst)+" > /dev/null").CombinedOutput(); err != nil {
					b.Fatal(err, string(out))
				}
			}
			b.StartTimer()
			r, mv, _ := uploadOnce(b, m, src, udg, i)
			times[full] += r - mv
			i++
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(times[0].Seconds()/n, "empty-s")
	b.ReportMetric(times[1].Seconds()/n, "full-s")
	fmt.Printf("S3 upload of 512 MiB without the commit's copy: cache empty %.1f s, cache full %.1f s\n", times[0].Seconds()/n, times[1].Seconds()/n)
}

// BenchmarkS3List (row S4) compares `ls -l` of a mount on the S3 driver
// holding 1,000 repositories, cold (a fresh mount every iteration), with
// ListObjectsV2 of the same prefix (repositories/, delimiter "/", every
// page) by the SDK alone, and with the same ls -l of a mount on the
// filesystem driver holding the same repositories (what the FUSE round
// trips alone cost: a lookup per entry, bazil.org/fuse has no
// READDIRPLUS). It fails if the listing read any blob (a block cache load
// or a driver Reader). The target is >= 0.5:
//
//	go test -run '^$' -bench BenchmarkS3List -benchtime 5x ./integration/
func BenchmarkS3List(b *testing.B) {
	bin := benchBinary(b)
	m := startMount(b, "s3", mountOpts{Bin: bin, Prefix: "bench"})
	putRepos(b, m, listBenchRepos)
	local := startMount(b, "filesystem", mountOpts{Bin: bin})
	writeRepos(b, local.Root, listBenchRepos)
	var regfsTime, listTime, localTime time.Duration
	var calls map[string]int64
	for b.Loop() {
		b.StopTimer()
		m.restart()
		local.restart()
		b.StartTimer()
		r, l, c := listOnce(b, m, listBenchRepos)
		regfsTime += r
		listTime += l
		calls = c
		r, _, _ = listOnce(b, local, listBenchRepos)
		localTime += r
	}
	b.StopTimer()
	n := float64(b.N)
	regfsMs, listMs, localMs := regfsTime.Seconds()*1e3/n, listTime.Seconds()*1e3/n, localTime.Seconds()*1e3/n
	b.ReportMetric(regfsMs, "regfs-ms")
	b.ReportMetric(listMs, "list-ms")
	b.ReportMetric(localMs, "filesystem-ms")
	b.ReportMetric(listMs/regfsMs, "ratio")
	fmt.Printf("S3 ls -l of %d repositories, cold: regfs %.1f ms, ListObjectsV2 %.1f ms, ratio %.2f; regfs on the filesystem driver %.1f ms; driver calls %v\n",
		listBenchRepos, regfsMs, listMs, listMs/regfsMs, localMs, calls)
}

// TestS3WriteBenchTiny runs the bodies of BenchmarkS3Upload and
// BenchmarkS3List once on tiny data (a 12 MiB layer, more than one
// multipart part; 30 repositories, on S3 and on the filesystem driver), so
// that they cannot rot. No time is
// checked; what is checked is that the upload commits the right bytes and
// that the listing lists every repository without reading a blob.
func TestS3WriteBenchTiny(t *testing.T) {
	m := startMount(t, "s3", mountOpts{Prefix: "bench"})
	src, dgst := uploadSource(t, 12<<20)
	uploadOnce(t, m, src, dgst, 0)
	m = startMount(t, "s3", mountOpts{Prefix: "bench"})
	putRepos(t, m, 30)
	m.restart()
	listOnce(t, m, 30)
	local := startMount(t, "filesystem", mountOpts{})
	writeRepos(t, local.Root, 30)
	local.restart()
	listOnce(t, local, 30)
}

// benchBinary builds regfs without -race for a benchmark.
func benchBinary(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "regfs")
	build := exec.Command("go", "build", "-o", bin, "../cmd/regfs")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("building regfs: %v\n%s", err, out)
	}
	return bin
}

// uploadSource writes size seeded pseudo-random bytes to a file and
// returns its path and digest. The file is read once, so both uploaders
// read it from the page cache.
func uploadSource(tb testing.TB, size int) (string, string) {
	tb.Helper()
	f, err := os.CreateTemp(tb.TempDir(), "layer")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{'u', 'p'})
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for left := size; left > 0; left -= len(buf) {
		buf = buf[:min(left, len(buf))]
		rng.Read(buf)
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	return f.Name(), "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// uploadOnce pushes src through the mount with cp into a new repository
// (bench/upN) and with the upload manager to a key of its own, checks the
// commit, then removes both objects and the blob (outside the timing). It
// returns the two durations, and the part of the cp that the commit's
// server-side copy of the data to the blob's key took (the driver's Move).
func uploadOnce(tb testing.TB, m *mount, src, dgst string, i int) (regfsTime, moveTime, mgrTime time.Duration) {
	tb.Helper()
	ctx := context.Background()
	client := m.S3.Client()
	if b, ok := tb.(*testing.B); ok {
		b.StopTimer()
		defer b.StartTimer()
	}
	repo := fmt.Sprintf("bench/up%d", i)
	if err := os.MkdirAll(m.path(repo), 0o755); err != nil {
		tb.Fatal(err)
	}

	before := mountStats(tb, m)
	start := time.Now()
	var stderr bytes.Buffer
	cp := exec.Command("cp", src, m.path(repo, "_uploads", dgst))
	cp.Stderr = &stderr
	if err := cp.Run(); err != nil {
		tb.Fatalf("cp into _uploads: %v\n%s\n%s", err, stderr.String(), m.logText())
	}
	regfsTime = time.Since(start)
	after := mountStats(tb, m)
	moveTime = time.Duration((after.DriverLatency["Move"].Seconds - before.DriverLatency["Move"].Seconds) * float64(time.Second))
	if testing.Verbose() {
		var ops []string
		for op, l := range after.DriverLatency {
			if d := l.Seconds - before.DriverLatency[op].Seconds; d > 0.001 {
				ops = append(ops, fmt.Sprintf("%s %d calls %.0f ms", op, after.DriverCalls[op]-before.DriverCalls[op], d*1e3))
			}
		}
		tb.Logf("cp %.0f ms; driver: %s", regfsTime.Seconds()*1e3, strings.Join(ops, ", "))
	}
	if _, err := os.Stat(m.path(repo, "_layers", dgst)); err != nil {
		tb.Fatalf("the upload did not become a layer: %v", err)
	}

	f, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	key := path.Join(m.Prefix, "manager", dgst[len("sha256:"):])
	// Issue 15 names the upload manager as row S3's baseline; its makers
	// deprecated it for feature/s3/transfermanager (docs/decisions.md).
	//lint:ignore SA1019 the baseline the issue names
	up := manager.NewUploader(client)
	start = time.Now()
	//lint:ignore SA1019 the baseline the issue names
	if _, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &m.Bucket, Key: &key, Body: f}); err != nil {
		tb.Fatalf("upload manager: %v", err)
	}
	mgrTime = time.Since(start)

	hexd := dgst[len("sha256:"):]
	blobKey := path.Join(m.Prefix, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
	for _, k := range []string{key, blobKey} {
		head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &m.Bucket, Key: aws.String(k)})
		if err != nil {
			tb.Fatalf("HEAD %s: %v", k, err)
		}
		if fi, _ := os.Stat(src); aws.ToInt64(head.ContentLength) != fi.Size() {
			tb.Fatalf("%s has %d bytes, want %d", k, aws.ToInt64(head.ContentLength), fi.Size())
		}
		if _, err := client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &m.Bucket, Key: aws.String(k)}); err != nil {
			tb.Fatal(err)
		}
	}
	return regfsTime, moveTime, mgrTime
}

// repoKeys returns the keys, below docker/registry/v2/repositories/, and
// contents of n repositories r0000 to rNNNN (top-level) in the registry's
// layout: each has a layer, a config and a tagged manifest revision, which
// is 5 link files (their blobs are not needed to list them).
func repoKeys(n int) [][2]string {
	var out [][2]string
	for i := range n {
		repo := fmt.Sprintf("r%04d", i)
		dg := func(what string) (string, string) {
			s := sha256.Sum256(fmt.Appendf(nil, "%s %d", what, i))
			h := hex.EncodeToString(s[:])
			return "sha256:" + h, h
		}
		layer, lh := dg("layer")
		config, ch := dg("config")
		mf, mh := dg("manifest")
		out = append(out,
			[2]string{path.Join(repo, "_layers/sha256", lh, "link"), layer},
			[2]string{path.Join(repo, "_layers/sha256", ch, "link"), config},
			[2]string{path.Join(repo, "_manifests/revisions/sha256", mh, "link"), mf},
			[2]string{path.Join(repo, "_manifests/tags/latest/current/link"), mf},
			[2]string{path.Join(repo, "_manifests/tags/latest/index/sha256", mh, "link"), mf},
		)
	}
	return out
}

// putRepos stores the n repositories of repoKeys in m's bucket with the
// SDK directly, 8 requests at a time.
func putRepos(tb testing.TB, m *mount, n int) {
	tb.Helper()
	ctx := context.Background()
	client := m.S3.Client()
	v2 := path.Join(m.Prefix, "docker/registry/v2/repositories")
	keys := make(chan [2]string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 8 {
		wg.Go(func() {
			for k := range keys {
				_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: &m.Bucket, Key: aws.String(path.Join(v2, k[0])), Body: strings.NewReader(k[1])})
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range repoKeys(n) {
		keys <- k
	}
	close(keys)
	wg.Wait()
	if firstErr != nil {
		tb.Fatal(firstErr)
	}
}

// writeRepos writes the n repositories of repoKeys under a filesystem
// driver's root.
func writeRepos(tb testing.TB, root string, n int) {
	tb.Helper()
	for _, k := range repoKeys(n) {
		p := filepath.Join(root, "docker/registry/v2/repositories", k[0])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(k[1]), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// listOnce runs `ls -l` of the mount, which must list n repositories and
// read no blob, then lists the repositories/ prefix with ListObjectsV2 and
// the delimiter, every page. It returns both durations and the driver
// calls the ls cost.
func listOnce(tb testing.TB, m *mount, n int) (regfsTime, listTime time.Duration, calls map[string]int64) {
	tb.Helper()
	b, isBench := tb.(*testing.B)
	pause := func() {
		if isBench {
			b.StopTimer()
		}
	}
	resume := func() {
		if isBench {
			b.StartTimer()
		}
	}
	pause()
	before := mountStats(tb, m)
	resume()

	start := time.Now()
	out, err := exec.Command("ls", "-l", m.Dir).CombinedOutput()
	regfsTime = time.Since(start)
	if err != nil {
		tb.Fatalf("ls -l: %v\n%s", err, out)
	}

	pause()
	after := mountStats(tb, m)
	if got := strings.Count(string(out), " r0"); got != n {
		tb.Fatalf("ls -l listed %d repositories, want %d:\n%s", got, n, out)
	}
	calls = map[string]int64{}
	for op, c := range after.DriverCalls {
		if d := c - before.DriverCalls[op]; d != 0 {
			calls[op] = d
		}
	}
	if testing.Verbose() {
		for op, o := range after.FuseOps {
			if d := o.Requests - before.FuseOps[op].Requests; d > 0 {
				tb.Logf("FUSE %s: %d requests, %.1f ms", op, d, (o.Seconds-before.FuseOps[op].Seconds)*1e3)
			}
		}
		tb.Logf("driver Walk %.1f ms", (after.DriverLatency["Walk"].Seconds-before.DriverLatency["Walk"].Seconds)*1e3)
	}
	if calls["Reader"] != 0 || after.Cache.Loads != before.Cache.Loads {
		tb.Fatalf("ls -l read blobs: %d driver Readers, %d block loads", calls["Reader"], after.Cache.Loads-before.Cache.Loads)
	}
	resume()

	if m.S3 == nil {
		return regfsTime, 0, calls
	}
	ctx := context.Background()
	client := m.S3.Client()
	prefix := path.Join(m.Prefix, "docker/registry/v2/repositories") + "/"
	start = time.Now()
	pages := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: &m.Bucket, Prefix: &prefix, Delimiter: aws.String("/")})
	listed := 0
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		listed += len(page.CommonPrefixes)
	}
	listTime = time.Since(start)
	if listed != n {
		tb.Fatalf("ListObjectsV2 listed %d prefixes, want %d", listed, n)
	}
	return regfsTime, listTime, calls
}

// benchStats is the part of .regfs/stats the benchmarks read.
type benchStats struct {
	DriverCalls map[string]int64 `json:"driver_calls"`
	Cache       struct {
		Loads int64 `json:"loads"`
	} `json:"cache"`
	DriverLatency map[string]struct {
		Seconds float64 `json:"seconds"`
	} `json:"driver_latency"`
	FuseOps map[string]struct {
		Requests int64   `json:"requests"`
		Seconds  float64 `json:"seconds"`
	} `json:"fuse_ops"`
}

func mountStats(tb testing.TB, m *mount) benchStats {
	tb.Helper()
	b, err := os.ReadFile(m.path(".regfs/stats"))
	if err != nil {
		tb.Fatal(err)
	}
	var s benchStats
	if err := json.Unmarshal(b, &s); err != nil {
		tb.Fatalf(".regfs/stats: %v", err)
	}
	return s
}
