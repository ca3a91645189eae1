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
)

// The S3 read benchmark's shape: one 256 MiB layer; the plain client reads
// it as 8 MiB ranged GETs, 8 in flight, as a tuned S3 downloader does.
const (
	benchLayerSize = 256 << 20
	benchPart      = 8 << 20
	benchParallel  = 8
)

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
	m, layer, dgst, blobKey := s3BenchMount(b)
	client := m.S3.Client()
	ctx := context.Background()
	file := m.path("bench/app/_layers", dgst)

	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devNull.Close()

	var regfsTime, getTime time.Duration
	buf := make([]byte, benchLayerSize)
	b.SetBytes(benchLayerSize)
	for b.Loop() {
		b.StopTimer()
		m.restart()
		b.StartTimer()

		start := time.Now()
		var stderr bytes.Buffer
		cat := exec.Command("cat", file)
		cat.Stdout = devNull // straight to the file: no pipe copy measured
		cat.Stderr = &stderr
		if err := cat.Run(); err != nil {
			b.Fatalf("cat: %v\n%s", err, stderr.String())
		}
		regfsTime += time.Since(start)

		start = time.Now()
		if err := rangedGET(ctx, client, m.Bucket, blobKey, buf); err != nil {
			b.Fatal(err)
		}
		getTime += time.Since(start)
	}
	b.StopTimer()
	if !bytes.Equal(buf, layer) {
		b.Fatal("the ranged GETs read other bytes than the layer's")
	}
	// The bytes cat read are the layer's (checked once, outside the timing).
	out, err := exec.Command("sha256sum", file).Output()
	if err != nil || "sha256:"+string(out[:64]) != dgst {
		b.Fatalf("sha256sum through the mount: %q, %v; want %s", out, err, dgst)
	}

	n := float64(b.N)
	regfsMBs := n * benchLayerSize / 1e6 / regfsTime.Seconds()
	getMBs := n * benchLayerSize / 1e6 / getTime.Seconds()
	b.ReportMetric(regfsMBs, "regfs-MB/s")
	b.ReportMetric(getMBs, "rangedGET-MB/s")
	b.ReportMetric(regfsMBs/getMBs, "ratio")
	fmt.Printf("S3 cold cat: regfs %.0f MB/s, ranged GET %.0f MB/s, ratio %.2f\n", regfsMBs, getMBs, regfsMBs/getMBs)
}

// s3BenchMount builds regfs without -race, mounts it on S3 and stores the
// benchmark's layer in repository bench/app. It returns the mount, the
// layer, its digest and its object key.
func s3BenchMount(b *testing.B) (*mount, []byte, string, string) {
	bin := filepath.Join(b.TempDir(), "regfs")
	build := exec.Command("go", "build", "-o", bin, "../cmd/regfs")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building regfs: %v\n%s", err, out)
	}
	m := startMount(b, "s3", mountOpts{Bin: bin, Prefix: "bench"})
	layer, dgst := benchLayer()
	blobKey, err := putLayer(context.Background(), m.S3.Client(), m, "bench/app", layer, dgst)
	if err != nil {
		b.Fatal(err)
	}
	return m, layer, dgst, blobKey
}

// BenchmarkS3FirstByte (row S5) compares the first byte of a layer on a
// fresh mount, `head -c1` of it (the lookups of its path included), with
// one ranged GET of 1 byte by the SDK over a connection already open. Every
// iteration remounts; the two run alternately. The target is <= 2x:
//
//	go test -run '^$' -bench BenchmarkS3FirstByte -benchtime 10x ./integration/
func BenchmarkS3FirstByte(b *testing.B) {
	m, layer, dgst, blobKey := s3BenchMount(b)
	client := m.S3.Client()
	ctx := context.Background()
	file := m.path("bench/app/_layers", dgst)
	var regfsTime, getTime time.Duration
	for b.Loop() {
		b.StopTimer()
		m.restart()
		b.StartTimer()

		start := time.Now()
		out, err := exec.Command("head", "-c1", file).Output()
		regfsTime += time.Since(start)
		if err != nil || len(out) != 1 || out[0] != layer[0] {
			b.Fatalf("head -c1: %q, %v; want %q", out, err, layer[:1])
		}

		start = time.Now()
		got, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &m.Bucket, Key: &blobKey, Range: aws.String("bytes=0-0")})
		if err == nil {
			out, err = io.ReadAll(got.Body)
			got.Body.Close()
		}
		getTime += time.Since(start)
		if err != nil || len(out) != 1 || out[0] != layer[0] {
			b.Fatalf("1-byte GET: %q, %v", out, err)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	regfsMs := regfsTime.Seconds() * 1e3 / n
	getMs := getTime.Seconds() * 1e3 / n
	b.ReportMetric(regfsMs, "regfs-ms")
	b.ReportMetric(getMs, "rangedGET-ms")
	b.ReportMetric(regfsMs/getMs, "ratio")
	fmt.Printf("S3 first byte: regfs %.2f ms, 1-byte GET %.2f ms, ratio %.2f\n", regfsMs, getMs, regfsMs/getMs)
}

// benchLayer returns 256 MiB of seeded pseudo-random bytes (incompressible,
// the same every run) and their digest.
func benchLayer() ([]byte, string) {
	b := make([]byte, benchLayerSize)
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
