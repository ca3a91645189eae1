package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver/s3/s3test"
)

// s3ListRepos is how many repositories S4 lists (issue 15: 1,000), or
// -repos if that is fewer.
const s3ListRepos = 1000

// s3Prefix is the key prefix of the registry in the benchmark's bucket.
const s3Prefix = "regfs"

// s3Bench is a versitygw on loopback with one bucket, for S3 and S4.
type s3Bench struct {
	srv    *s3test.Server
	bucket string
	client *s3.Client
}

// startS3 mounts regfs on the benchmark's bucket, its cache empty.
func (b *bench) startS3(s *s3Bench) (*mount, error) {
	dir := b.newMountpoint("regfs-s3")
	argv := []string{
		b.regfs, "mount", "--driver", "s3", "--s3-bucket", s.bucket,
		"--s3-endpoint", s.srv.Endpoint, "--s3-region", s.srv.Region, "--s3-prefix", s3Prefix,
		"--cache-size", strconv.FormatInt(b.cfg.CacheSize, 10), dir,
	}
	return b.mounts.start("regfs-s3", dir, argv, s.srv.Env(), "msg=mounted")
}

// s3Writes measures S3 and S4 of issue 15 on a versitygw started for them
// (posix backend, in the temporary directory's parent like its own data):
// S3, cp of the upload file into _uploads/sha256:<hex> of an S3 mount
// against aws-sdk-go-v2's upload manager putting the same file; S4, ls -l
// of up to 1,000 repositories on a fresh S3 mount against ListObjectsV2 of
// the same prefix, with the blob reads it cost. Without versitygw the rows
// say so.
func (b *bench) s3Writes(ctx context.Context, rep *Report) error {
	srv, err := s3test.Launch()
	if errors.Is(err, s3test.ErrNotInstalled) {
		for _, id := range []string{"S3", "S4"} {
			rep.add(Row{ID: id, What: "S3 driver", Text: "not measured", Against: err.Error()})
		}
		return nil
	}
	if err != nil {
		return err
	}
	defer srv.Stop()
	s := &s3Bench{srv: srv, bucket: "regfs-bench", client: srv.Client()}
	if err := srv.CreateBucket(ctx, s.bucket); err != nil {
		return fmt.Errorf("creating the bucket: %w\n%s", err, srv.Log())
	}
	if err := b.s3Upload(ctx, rep, s); err != nil {
		return fmt.Errorf("S3: %w", err)
	}
	if err := b.s3List(ctx, rep, s); err != nil {
		return fmt.Errorf("S4: %w", err)
	}
	return nil
}

// s3Upload measures S3. Each run pushes the file into a repository of its
// own through a fresh mount, then with the upload manager, alternately,
// and removes both objects after checking their size.
func (b *bench) s3Upload(ctx context.Context, rep *Report, s *s3Bench) error {
	up := b.ds.upload
	smp := samples{}
	for run := range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		repo := fmt.Sprintf("bench/up%d", run)
		err := b.withMount(b.startS3(s))(func(m *mount) error {
			if err := os.MkdirAll(filepath.Join(m.dir, repo), 0o755); err != nil {
				return err
			}
			before, err := regfsStats(m.dir)
			if err != nil {
				return err
			}
			d, err := runCmd(ctx, nil, "cp", up.path, filepath.Join(m.dir, repo, "_uploads", up.dgst.String()))
			if err != nil {
				return err
			}
			after, err := regfsStats(m.dir)
			if err != nil {
				return err
			}
			smp.add("regfs", rate(up.size, d))
			smp.add("moves", float64(after.DriverCalls["Move"]-before.DriverCalls["Move"]))
			return nil
		})
		if err != nil {
			return err
		}
		f, err := os.Open(up.path)
		if err != nil {
			return err
		}
		key := path.Join(s3Prefix, "manager", up.dgst.Encoded())
		//lint:ignore SA1019 the baseline issue 15 names (docs/decisions.md)
		uploader := manager.NewUploader(s.client)
		start := time.Now()
		//lint:ignore SA1019 the baseline issue 15 names
		_, err = uploader.Upload(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: f})
		d := time.Since(start)
		f.Close()
		if err != nil {
			return fmt.Errorf("upload manager: %w", err)
		}
		smp.add("manager", rate(up.size, d))
		blobKey := path.Join(s3Prefix, registryV2, "blobs/sha256", up.dgst.Encoded()[:2], up.dgst.Encoded(), "data")
		for _, k := range []string{blobKey, key} {
			head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(k)})
			if err != nil {
				return fmt.Errorf("HEAD %s: %w", k, err)
			}
			if n := aws.ToInt64(head.ContentLength); n != up.size {
				return fmt.Errorf("%s has %d bytes, want %d", k, n, up.size)
			}
			if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(k)}); err != nil {
				return err
			}
		}
	}
	regfs, mgr := smp.median("regfs"), smp.median("manager")
	what := fmt.Sprintf("cp of a %s layer into _uploads/sha256:<hex> of an S3 mount (versitygw on loopback), commit included", formatBytes(up.size))
	rep.add(Row{ID: "S3", What: what,
		Value: regfs, Unit: unitRate,
		Against: "aws-sdk-go-v2's upload manager (feature/s3/manager, defaults) putting the same file", Compare: mgr,
		Ratio: regfs / mgr, Target: ">= 0.70", Goal: ratioAtLeast(0.7)})
	// The upload is staged at the blob's key: the commit moves nothing
	// (a Move on S3 is a server-side copy of every byte).
	moves := smp.median("moves")
	rep.add(Row{ID: "S3", What: what + ": server-side copies", Text: fmt.Sprintf("%.0f", moves),
		Against: "driver Moves (a CopyObject of the upload each)", CompareText: "-", Target: "0 copies", Met: metText(moves == 0)})
	return nil
}

// s3List measures S4: the repositories are stored with the SDK directly
// (putRepos), then each run lists them with ls -l on a fresh S3 mount, with
// the blob reads it cost, against ListObjectsV2 of the same prefix alone
// and against a bare bazil.org/fuse file system listing the same names
// from memory (barelist.go), which shows what FUSE itself costs: its ls -l
// against the ListObjectsV2 is the ceiling of the S4 ratio. The three take
// turns in each run.
func (b *bench) s3List(ctx context.Context, rep *Report, s *s3Bench) error {
	n := min(b.cfg.Repos, s3ListRepos)
	if err := s.putRepos(ctx, n); err != nil {
		return err
	}
	names, _, err := s.listRepos(ctx)
	if err != nil {
		return err
	}
	if len(names) < n {
		return fmt.Errorf("ListObjectsV2 listed %d prefixes, want at least %d", len(names), n)
	}
	smp := samples{}
	lsl := func(m *mount) (time.Duration, string, error) {
		var out bytes.Buffer
		d, err := runCmd(ctx, &out, "ls", "-l", m.dir)
		if got := strings.Count(out.String(), " r0"); err == nil && got != n {
			err = fmt.Errorf("ls -l of %s listed %d repositories, want %d", m.dir, got, n)
		}
		return d, out.String(), err
	}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.withMount(b.startS3(s))(func(m *mount) error {
			before, err := regfsStats(m.dir)
			if err != nil {
				return err
			}
			d, _, err := lsl(m)
			if err != nil {
				return err
			}
			after, err := regfsStats(m.dir)
			if err != nil {
				return err
			}
			var reads int64
			if after.Cache != nil && before.Cache != nil {
				reads = after.Cache.Loads - before.Cache.Loads
			}
			reads += after.DriverCalls["Reader"] - before.DriverCalls["Reader"]
			smp.add("regfs", d.Seconds())
			smp.add("blob reads", float64(reads))
			return nil
		})
		if err != nil {
			return err
		}
		err = b.withMount(b.startBareList(names))(func(m *mount) error {
			d, _, err := lsl(m)
			smp.add("bare", d.Seconds())
			return err
		})
		if err != nil {
			return err
		}
		_, d, err := s.listRepos(ctx)
		if err != nil {
			return err
		}
		smp.add("list", d.Seconds())
	}
	regfs, bare, list := smp.median("regfs"), smp.median("bare"), smp.median("list")
	what := fmt.Sprintf("ls -l of %d repositories on an S3 mount, cold (fresh mount)", n)
	rep.add(Row{ID: "S4", What: what, Value: regfs, Unit: unitSeconds,
		Against: "ListObjectsV2 of the same prefix with delimiter, every page, by the SDK alone", Compare: list,
		Ratio: list / regfs, Target: ">= 0.50", Goal: ratioAtLeast(0.5)})
	reads := smp.median("blob reads")
	rep.add(Row{ID: "S4", What: what + ": blob reads", Text: fmt.Sprintf("%.0f", reads),
		Against: "driver Readers and block cache loads", CompareText: "-",
		Target: "0 blob reads", Met: metText(reads == 0)})
	rep.add(Row{ID: "S4", What: what, Value: regfs, Unit: unitSeconds,
		Against: "a bare bazil.org/fuse file system's ls -l of the same names, from memory, same mount options", Compare: bare,
		Ratio: bare / regfs, Target: "-"})
	rep.add(Row{ID: "S4", What: fmt.Sprintf("ls -l of the %d names of a bare bazil.org/fuse file system, from memory (FUSE alone)", len(names)), Value: bare, Unit: unitSeconds,
		Against: "the same ListObjectsV2 (the ceiling FUSE puts on the S4 ratio)", Compare: list,
		Ratio: list / bare, Target: "-"})
	return nil
}

// startBareList mounts the bare listing of names (barelist.go).
func (b *bench) startBareList(names []string) (*mount, error) {
	mnt := b.newMountpoint("bare-list")
	return b.mounts.start("bare", mnt, []string{b.self},
		[]string{bareEnvMount + "=" + mnt, bareEnvList + "=" + strings.Join(names, ",")}, bareReady)
}

// listRepos lists the repositories' prefix with delimiter "/", every page,
// and returns the names of the directories in it and how long it took.
func (s *s3Bench) listRepos(ctx context.Context) ([]string, time.Duration, error) {
	prefix := path.Join(s3Prefix, registryV2, "repositories") + "/"
	start := time.Now()
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix, Delimiter: aws.String("/")})
	var names []string
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, 0, err
		}
		for _, cp := range page.CommonPrefixes {
			names = append(names, strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), prefix), "/"))
		}
	}
	return names, time.Since(start), nil
}

// putRepos stores n repositories r0000 to rNNNN in the registry's layout
// (a layer, a config and a tagged revision: 5 link keys each), 8 requests
// at a time.
func (s *s3Bench) putRepos(ctx context.Context, n int) error {
	type kv struct{ key, body string }
	keys := make(chan kv)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range 8 {
		wg.Go(func() {
			for k := range keys {
				_, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(k.key), Body: strings.NewReader(k.body)})
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	v2 := path.Join(s3Prefix, registryV2, "repositories")
	for i := range n {
		repo := path.Join(v2, fmt.Sprintf("r%04d", i))
		dg := func(what string) (string, string) {
			sum := sha256.Sum256(fmt.Appendf(nil, "%s %d", what, i))
			h := hex.EncodeToString(sum[:])
			return "sha256:" + h, h
		}
		layer, lh := dg("layer")
		config, ch := dg("config")
		mf, mh := dg("manifest")
		for _, k := range []kv{
			{path.Join(repo, "_layers/sha256", lh, "link"), layer},
			{path.Join(repo, "_layers/sha256", ch, "link"), config},
			{path.Join(repo, "_manifests/revisions/sha256", mh, "link"), mf},
			{path.Join(repo, "_manifests/tags/latest/current/link"), mf},
			{path.Join(repo, "_manifests/tags/latest/index/sha256", mh, "link"), mf},
		} {
			keys <- k
		}
	}
	close(keys)
	wg.Wait()
	return firstErr
}
