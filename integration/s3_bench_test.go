package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	regfss3 "github.com/regfs/regfs/driver/s3"
)

// The S3 read benchmark's shape: one 256 MiB layer; the plain client reads
// it as ranged GETs of regfs's S3 block size, as many in flight as regfs
// keeps (s3.CacheBlockSize, s3.CacheAheadLoads).
const (
	benchLayerSize = 256 << 20
	benchPart      = regfss3.CacheBlockSize
	benchParallel  = regfss3.CacheAheadLoads
)

// TestS3BenchmarksTiny runs what BenchmarkS3ColdCat and
// BenchmarkS3FirstByte measure once, on a 1 MiB layer and with the tests'
// regfs binary, so that the benchmarks cannot rot; speed is not checked.
func TestS3BenchmarksTiny(t *testing.T) {
	e := newS3Bench(t, regfsBin, 1<<20)
	regfsTime, getTime := e.coldCat(t)
	t.Logf("cold cat: regfs %v, ranged GETs %v", regfsTime, getTime)
	regfsTime, getTime = e.firstByte(t)
	t.Logf("first byte: regfs %v, 1-byte GET %v", regfsTime, getTime)
}

// s3Bench is a regfs mount on S3 with one layer stored in repository
// bench/app.
type s3Bench struct {
	m       *mount
	layer   []byte
	dgst    string
	blobKey string
	file    string // the layer's path in the mount
	// buf receives the ranged GETs, allocated once so that its page faults
	// are not measured.
	buf []byte
}

// newS3Bench mounts regfs (the binary bin) on S3 and stores a layer of
// size bytes.
func newS3Bench(tb testing.TB, bin string, size int) *s3Bench {
	m := startMount(tb, "s3", mountOpts{Bin: bin, Prefix: "bench"})
	layer, dgst := benchLayer(size)
	blobKey, err := putLayer(context.Background(), m.S3.Client(), m, "bench/app", layer, dgst)
	if err != nil {
		tb.Fatal(err)
	}
	return &s3Bench{m: m, layer: layer, dgst: dgst, blobKey: blobKey, file: m.path("bench/app/_layers", dgst)}
}

// coldCat remounts, then runs `cat` of the layer through the mount and
// reads the object with ranged GETs, and returns how long each took; both
// must read the layer's bytes.
func (e *s3Bench) coldCat(tb testing.TB) (regfsTime, getTime time.Duration) {
	e.m.restart()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer devNull.Close()
	start := time.Now()
	var stderr bytes.Buffer
	cat := exec.Command("cat", e.file)
	cat.Stdout = devNull // straight to the file: no pipe copy measured
	cat.Stderr = &stderr
	if err := cat.Run(); err != nil {
		tb.Fatalf("cat: %v\n%s", err, stderr.String())
	}
	regfsTime = time.Since(start)

	if e.buf == nil {
		e.buf = make([]byte, len(e.layer))
		clear(e.buf) // fault it in
	}
	start = time.Now()
	if err := rangedGET(context.Background(), e.m.S3.Client(), e.m.Bucket, e.blobKey, e.buf); err != nil {
		tb.Fatal(err)
	}
	getTime = time.Since(start)
	if !bytes.Equal(e.buf, e.layer) {
		tb.Fatal("the ranged GETs read other bytes than the layer's")
	}
	return regfsTime, getTime
}

// checkCat checks, outside any timing, that the mount serves the layer's
// bytes.
func (e *s3Bench) checkCat(tb testing.TB) {
	out, err := exec.Command("sha256sum", e.file).Output()
	if err != nil || "sha256:"+string(out[:64]) != e.dgst {
		tb.Fatalf("sha256sum through the mount: %q, %v; want %s", out, err, e.dgst)
	}
}

// firstByte remounts, then times `head -c1` of the layer and one ranged GET
// of its first byte.
func (e *s3Bench) firstByte(tb testing.TB) (regfsTime, getTime time.Duration) {
	e.m.restart()
	start := time.Now()
	out, err := exec.Command("head", "-c1", e.file).Output()
	regfsTime = time.Since(start)
	if err != nil || len(out) != 1 || out[0] != e.layer[0] {
		tb.Fatalf("head -c1: %q, %v; want %q", out, err, e.layer[:1])
	}
	client := e.m.S3.Client()
	ctx := context.Background()
	// The plain client's connection is open, as regfs's is after mounting.
	for i := range 2 {
		start = time.Now()
		got, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &e.m.Bucket, Key: &e.blobKey, Range: aws.String("bytes=0-0")})
		if err == nil {
			out, err = io.ReadAll(got.Body)
			got.Body.Close()
		}
		if i == 1 {
			getTime = time.Since(start)
		}
		if err != nil || len(out) != 1 || out[0] != e.layer[0] {
			tb.Fatalf("1-byte GET: %q, %v", out, err)
		}
	}
	return regfsTime, getTime
}

// BenchmarkS3ColdCat compares a cold `cat` of a 256 MiB layer through regfs
// on the S3 driver with a plain ranged-GET client reading the same object
// from the same versitygw. Every iteration remounts, so regfs's block cache
// and the kernel's page cache of the mount are empty, and then runs both
// readers once, alternately, so that drift on the machine hits both alike.
// It reports both throughputs and their ratio (the target is >= 0.8):
//
//	go test -run '^$' -bench BenchmarkS3ColdCat -benchtime 3x ./integration/
//
// The daemon is built without -race for this (the tests' binary has it).
func BenchmarkS3ColdCat(b *testing.B) {
	e := newS3Bench(b, buildBenchRegfs(b), benchLayerSize)
	var regfsTime, getTime time.Duration
	for b.Loop() {
		r, g := e.coldCat(b)
		regfsTime += r
		getTime += g
	}
	e.checkCat(b)
	n := float64(b.N)
	regfsMBs := n * benchLayerSize / 1e6 / regfsTime.Seconds()
	getMBs := n * benchLayerSize / 1e6 / getTime.Seconds()
	b.ReportMetric(regfsMBs, "regfs-MB/s")
	b.ReportMetric(getMBs, "rangedGET-MB/s")
	b.ReportMetric(regfsMBs/getMBs, "ratio")
	fmt.Printf("S3 cold cat: regfs %.0f MB/s, ranged GET %.0f MB/s, ratio %.2f\n", regfsMBs, getMBs, regfsMBs/getMBs)
}

// buildBenchRegfs builds regfs without -race (the tests' binary has it).
func buildBenchRegfs(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "regfs")
	build := exec.Command("go", "build", "-o", bin, "../cmd/regfs")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building regfs: %v\n%s", err, out)
	}
	return bin
}

// BenchmarkS3FirstByte (row S5) compares the first byte of a layer on a
// fresh mount, `head -c1` of it (the lookups of its path included), with
// one ranged GET of 1 byte by the SDK over a connection already open. Every
// iteration remounts; the two run alternately. The target is <= 2x:
//
//	go test -run '^$' -bench BenchmarkS3FirstByte -benchtime 10x ./integration/
func BenchmarkS3FirstByte(b *testing.B) {
	e := newS3Bench(b, buildBenchRegfs(b), benchLayerSize)
	var regfsTime, getTime time.Duration
	for b.Loop() {
		r, g := e.firstByte(b)
		regfsTime += r
		getTime += g
	}
	n := float64(b.N)
	regfsMs := regfsTime.Seconds() * 1e3 / n
	getMs := getTime.Seconds() * 1e3 / n
	b.ReportMetric(regfsMs, "regfs-ms")
	b.ReportMetric(getMs, "rangedGET-ms")
	b.ReportMetric(regfsMs/getMs, "ratio")
	fmt.Printf("S3 first byte: regfs %.2f ms, 1-byte GET %.2f ms, ratio %.2f\n", regfsMs, getMs, regfsMs/getMs)
}

// benchLayer returns size seeded pseudo-random bytes (incompressible, the
// same every run) and their digest.
func benchLayer(size int) ([]byte, string) {
	b := make([]byte, size)
	rand.NewChaCha8([32]byte{'r', 'e', 'g', 'f', 's'}).Read(b)
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}

// putLayer stores layer as a blob linked into repo, in the registry's layout
// under m's prefix, with the SDK directly (pushing 256 MiB through the mount
// is not what is measured). It returns the blob's key.
func putLayer(ctx context.Context, c *s3.Client, m *mount, repo string, layer []byte, dgst string) (string, error) {
	v2 := path.Join(m.Prefix, "docker/registry/v2")
	hexd := dgst[len("sha256:"):]
	blobKey := path.Join(v2, "blobs/sha256", hexd[:2], hexd, "data")
	objects := []struct {
		key  string
		body []byte
	}{
		{blobKey, layer},
		{path.Join(v2, "repositories", repo, "_layers/sha256", hexd, "link"), []byte(dgst)},
	}
	for _, o := range objects {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &m.Bucket, Key: aws.String(o.key), Body: bytes.NewReader(o.body)}); err != nil {
			return "", fmt.Errorf("putting %s: %w", o.key, err)
		}
	}
	return blobKey, nil
}

// rangedGET reads the object into buf as benchPart ranged GETs, at most
// benchParallel at a time.
func rangedGET(ctx context.Context, c *s3.Client, bucket, key string, buf []byte) error {
	var wg sync.WaitGroup
	sem := make(chan struct{}, benchParallel)
	errs := make(chan error, len(buf)/benchPart+1)
	for off := 0; off < len(buf); off += benchPart {
		end := min(off+benchPart, len(buf))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out, err := c.GetObject(ctx, &s3.GetObjectInput{
				Bucket: &bucket,
				Key:    &key,
				Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, end-1)),
			})
			if err == nil {
				_, err = io.ReadFull(out.Body, buf[off:end])
				out.Body.Close()
			}
			if err != nil {
				errs <- fmt.Errorf("GET %s bytes %d-%d: %w", key, off, end-1, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
