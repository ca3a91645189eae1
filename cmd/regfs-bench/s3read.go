package main

// The S rows of issue 15 that read: regfs mounted with --driver s3 on a
// versitygw on loopback, against what the same server gives a plain
// aws-sdk-go-v2 client.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	regfss3 "github.com/regfs/regfs/driver/s3"
	"github.com/regfs/regfs/driver/s3/s3test"
)

// s3Bucket is the bucket the S rows store the registry in.
const s3Bucket = "regfs-bench"

// s3Env is the S3 side of a run: a versitygw serving a temporary
// directory, with the layers the S rows read stored in the registry's
// layout.
type s3Env struct {
	srv    *s3test.Server
	client *s3.Client
	// stored are the blobs uploaded so far, by digest.
	stored map[digest.Digest]bool
	// err is why no server runs (versitygw not installed), for the report.
	err error
}

// s3 returns the run's S3 server, starting it on first use, with blobs
// stored in the first repository. It returns errNoS3 (wrapped) when
// versitygw is not installed: the S rows are then left out.
func (b *bench) s3(ctx context.Context, blobs ...blob) (*s3Env, error) {
	if b.s3env == nil {
		e := &s3Env{stored: map[digest.Digest]bool{}}
		b.s3env = e
		srv, err := s3test.Launch()
		if err != nil {
			e.err = err
			return nil, err
		}
		e.srv, e.client = srv, srv.Client()
		if err := srv.CreateBucket(ctx, s3Bucket); err != nil {
			return nil, fmt.Errorf("creating bucket: %w", err)
		}
	}
	e := b.s3env
	if e.srv == nil {
		return nil, e.err
	}
	for _, bl := range blobs {
		if e.stored[bl.dgst] {
			continue
		}
		start := time.Now()
		if err := e.putBlob(ctx, b.ds.repos[0], bl); err != nil {
			return nil, err
		}
		b.log.Info("stored on S3", "blob", formatBytes(bl.size), "took", time.Since(start).Round(time.Millisecond))
		e.stored[bl.dgst] = true
	}
	return e, nil
}

// closeS3 stops the S3 server, removing what it stored.
func (b *bench) closeS3() error {
	if b.s3env == nil || b.s3env.srv == nil {
		return nil
	}
	return b.s3env.srv.Stop()
}

// blobKey is the object key of blob d.
func blobKey(d digest.Digest) string {
	return path.Join(registryV2, "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

// putBlob stores bl and its link in repo, with the SDK (how it got there is
// not what is measured).
func (e *s3Env) putBlob(ctx context.Context, repo string, bl blob) error {
	f, err := os.Open(bl.path)
	if err != nil {
		return err
	}
	defer f.Close()
	link := path.Join(registryV2, "repositories", repo, "_layers", bl.dgst.Algorithm().String(), bl.dgst.Encoded(), "link")
	for _, o := range []struct {
		key  string
		body io.ReadSeeker
	}{{blobKey(bl.dgst), f}, {link, strings.NewReader(bl.dgst.String())}} {
		if _, err := e.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(o.key), Body: o.body}); err != nil {
			return fmt.Errorf("putting %s: %w", o.key, err)
		}
	}
	return nil
}

// startRegfsS3 mounts the bucket with regfs --driver s3, its cache empty.
func (b *bench) startRegfsS3(e *s3Env) (*mount, error) {
	dir := b.newMountpoint("regfs-s3")
	argv := []string{
		b.regfs, "mount", "--driver", "s3", "--s3-bucket", s3Bucket,
		"--s3-endpoint", e.srv.Endpoint, "--s3-region", e.srv.Region,
		"--cache-size", strconv.FormatInt(b.cfg.CacheSize, 10), dir,
	}
	return b.mounts.start("regfs", dir, argv, e.srv.Env(), "msg=mounted")
}

// rangedGETs reads the object key whole as ranged GETs of part bytes, at
// most parallel at a time, each into a buffer its worker reuses (the bytes
// go nowhere, as cat's go to /dev/null), and returns how long it took.
func (e *s3Env) rangedGETs(ctx context.Context, key string, size int64, part, parallel int) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	offs := make(chan int64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	var total int64
	start := time.Now()
	for range parallel {
		wg.Go(func() {
			buf := make([]byte, part)
			for off := range offs {
				end := min(off+int64(part), size)
				n, err := e.getRange(ctx, key, off, buf[:end-off])
				mu.Lock()
				total += int64(n)
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	for off := int64(0); off < size && ctx.Err() == nil; off += int64(part) {
		offs <- off
	}
	close(offs)
	wg.Wait()
	d := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	if total != size {
		return 0, fmt.Errorf("ranged GETs of %s read %d bytes, want %d", key, total, size)
	}
	return d, nil
}

// getRange reads len(buf) bytes of key at off with one ranged GET.
func (e *s3Env) getRange(ctx context.Context, key string, off int64, buf []byte) (int, error) {
	out, err := e.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s3Bucket),
		Key:    aws.String(key),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(buf))-1)),
	})
	if err != nil {
		return 0, fmt.Errorf("GET %s at %d: %w", key, off, err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, buf)
	if err != nil {
		return n, fmt.Errorf("GET %s at %d: %w", key, off, err)
	}
	return n, nil
}

// s3Skipped logs why the S3 rows are left out and reports whether err is
// that reason (versitygw not installed) rather than a failure.
func (b *bench) s3Skipped(err error) bool {
	if errors.Is(err, s3test.ErrNotInstalled) {
		b.log.Warn("S3 rows left out", "reason", err)
		return true
	}
	return false
}

// s3SequentialReads measures S1 (cold read of the layer through a fresh
// --driver s3 mount, against ranged GETs of the same object with the part
// size and loads in flight regfs's cache uses on S3, and against the bare
// bazil file system over those GETs) and S2 (the second read on the same
// mount, against the second read of a filesystem driver mount). The kinds
// take turns in each run.
func (b *bench) s3SequentialReads(ctx context.Context, rep *Report) error {
	layer := b.ds.layer
	e, err := b.s3(ctx, layer)
	if err != nil {
		if b.s3Skipped(err) {
			return nil
		}
		return err
	}
	part, parallel := regfss3.CacheBlockSize, regfss3.CacheAheadLoads
	s := samples{}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.withMount(b.startRegfsS3(e))(func(m *mount) error {
			return s.read2(layerPath(m.dir, b.ds.repos[0], layer.dgst), layer.size, "s3 cold", "s3 warm")
		})
		if err != nil {
			return err
		}
		d, err := e.rangedGETs(ctx, blobKey(layer.dgst), layer.size, part, parallel)
		if err != nil {
			return err
		}
		s.add("get", rate(layer.size, d))
		err = b.withMount(b.startBareS3(e, blobKey(layer.dgst), layer.size, part, parallel))(func(m *mount) error {
			return s.read2(filepath.Join(m.dir, bareS3Name), layer.size, "bare cold", "bare warm")
		})
		if err != nil {
			return err
		}
		err = b.withMount(b.startRegfs(b.cfg.CacheSize))(func(m *mount) error {
			return s.read2(layerPath(m.dir, b.ds.repos[0], layer.dgst), layer.size, "fs cold", "fs warm")
		})
		if err != nil {
			return err
		}
	}
	what := fmt.Sprintf("cold sequential read of the %s layer, --driver s3 on versitygw (loopback), fresh mount", formatBytes(layer.size))
	v := s.median("s3 cold")
	rep.add(Row{ID: "S1", What: what, Value: v, Unit: unitRate,
		Against: fmt.Sprintf("ranged GETs of the object with aws-sdk-go-v2, %s parts, %d in flight (regfs's S3 block size and loads in flight)", formatBytes(int64(part)), parallel),
		Compare: s.median("get"), Ratio: v / s.median("get"), Target: ">= 0.80", Goal: ratioAtLeast(0.8)})
	// The ceiling: what bazil and the kernel let a file system over the
	// same GETs do (bares3.go), and what that costs against the GETs alone.
	bare := s.median("bare cold")
	rep.add(Row{ID: "S1", What: what, Value: v, Unit: unitRate,
		Against: "bare bazil file system over S3: the same ranged GETs behind each read, same mount options",
		Compare: bare, Ratio: v / bare})
	rep.add(Row{ID: "S1", What: fmt.Sprintf("cold sequential read of the %s layer through the bare bazil file system over S3, fresh mount", formatBytes(layer.size)),
		Value: bare, Unit: unitRate, Against: "the plain ranged GETs above (what bazil and the kernel cost)",
		Compare: s.median("get"), Ratio: bare / s.median("get")})
	rep.add(Row{ID: "S1", What: what, Value: v, Unit: unitRate,
		Against: "regfs on the filesystem driver, cold read (backing file in page cache)",
		Compare: s.median("fs cold"), Ratio: v / s.median("fs cold")})
	v = s.median("s3 warm")
	rep.add(Row{ID: "S2", What: "second read of the same layer, same --driver s3 mount", Value: v, Unit: unitRate,
		Against: "regfs on the filesystem driver, second read", Compare: s.median("fs warm"),
		Ratio: v / s.median("fs warm"), Target: ">= 0.90", Goal: ratioAtLeast(0.9)})
	return nil
}

// s3FirstByte measures S5: head -c1 of a layer on a fresh --driver s3
// mount against one ranged GET of 1 byte on an open connection, and, to
// show what that time is made of, against what regfs's design cannot go
// below on the same server: the two requests it makes in a row (the
// repository's List, then the layer's first 64 KiB) one after the other
// on an open connection, and head -c1 of the layer's file on local disk
// (the process's start). The kinds take turns in each run.
// bareFirstPart is the bare file system's part in S5: one GET answers the
// kernel's first read of a file (at most 128 KiB, bazil's largest).
const bareFirstPart = 128 << 10

func (b *bench) s3FirstByte(ctx context.Context, rep *Report) error {
	layer := b.ds.layer
	e, err := b.s3(ctx, layer)
	if err != nil {
		if b.s3Skipped(err) {
			return nil
		}
		return err
	}
	key := blobKey(layer.dgst)
	one := make([]byte, 1)
	if _, err := e.getRange(ctx, key, 0, one); err != nil { // opens the connection
		return err
	}
	first := make([]byte, min(64<<10, layer.size))
	repoPrefix := path.Join(registryV2, "repositories", b.ds.repos[0]) + "/"
	s := samples{}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.withMount(b.startRegfsS3(e))(func(m *mount) error {
			d, err := runCmd(ctx, nil, "head", "-c1", layerPath(m.dir, b.ds.repos[0], layer.dgst))
			if err != nil {
				return err
			}
			s.add("regfs", d.Seconds())
			return nil
		})
		if err != nil {
			return err
		}
		// The same head -c1 through a fresh bare bazil file system over
		// S3 that knows the size and makes one ranged GET for the read:
		// what FUSE, head's start and one GET cost with no lookup at all.
		err = b.withMount(b.startBareS3(e, key, layer.size, bareFirstPart, 1))(func(m *mount) error {
			d, err := runCmd(ctx, nil, "head", "-c1", filepath.Join(m.dir, bareS3Name))
			if err != nil {
				return err
			}
			s.add("bare", d.Seconds())
			return nil
		})
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := e.getRange(ctx, key, 0, one); err != nil {
			return err
		}
		s.add("get", time.Since(start).Seconds())
		start = time.Now()
		if _, err := e.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket), Prefix: aws.String(repoPrefix), Delimiter: aws.String("/")}); err != nil {
			return err
		}
		if _, err := e.getRange(ctx, key, 0, first); err != nil {
			return err
		}
		s.add("two", time.Since(start).Seconds())
		d, err := runCmd(ctx, nil, "head", "-c1", layer.path)
		if err != nil {
			return err
		}
		s.add("local", d.Seconds())
	}
	v := s.median("regfs")
	const what = "time to first byte: head -c1 of a layer, fresh --driver s3 mount"
	rep.add(Row{ID: "S5", What: what,
		Value: v, Unit: unitSeconds, Against: "one ranged GET of 1 byte (connection open)", Compare: s.median("get"),
		Ratio: s.median("get") / v, Target: "<= 2x (ratio >= 0.50)", Goal: ratioAtLeast(0.5)})
	bare := s.median("bare")
	rep.add(Row{ID: "S5", What: what,
		Value: v, Unit: unitSeconds, Against: "head -c1 through a fresh bare bazil.org/fuse file system over S3 (size known, one ranged GET for the read, connection open)", Compare: bare,
		Ratio: bare / v, Target: "-"})
	rep.add(Row{ID: "S5", What: "time to first byte: head -c1 through the bare bazil.org/fuse file system over S3, fresh mount",
		Value: bare, Unit: unitSeconds, Against: "one ranged GET of 1 byte (the ceiling FUSE and head's start put on the S5 ratio)", Compare: s.median("get"),
		Ratio: s.median("get") / bare, Target: "-"})
	rep.add(Row{ID: "S5", What: what,
		Value: v, Unit: unitSeconds, Against: "a List, then a ranged GET of 64 KiB, one after the other (connection open): the requests regfs makes in a row", Compare: s.median("two"),
		Ratio: s.median("two") / v, Target: "-"})
	rep.add(Row{ID: "S5", What: what,
		Value: v, Unit: unitSeconds, Against: "head -c1 of the layer's file on local disk (process start-up)", Compare: s.median("local"),
		Ratio: s.median("local") / v, Target: "-"})
	return nil
}

// s3Memory measures S6: regfs's peak RSS on a --driver s3 mount while two
// readers read the big layer at once, against the cache budget.
func (b *bench) s3Memory(ctx context.Context, rep *Report) error {
	big := b.ds.big
	e, err := b.s3(ctx, big)
	if err != nil {
		if b.s3Skipped(err) {
			return nil
		}
		return err
	}
	return b.rssRow(ctx, rep, "S6", ", --driver s3", func() (*mount, error) { return b.startRegfsS3(e) })
}
