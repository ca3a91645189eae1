package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// The gc row (P8): a dry run of regfs gc over a registry of cfg.Repos
// repositories, five blobs each (a manifest, its config and two layers of
// its own, and one garbage blob), every manifest tagged and every image
// sharing one base layer, against the registry's own
// `garbage-collect --dry-run` on the same tree.

// gcRegistryBin is Debian's docker/distribution registry.
const gcRegistryBin = "docker-registry"

// writeGCRegistry writes the gc row's registry below root and returns how
// many blobs it holds.
func writeGCRegistry(ctx context.Context, root string, repos int) (int, error) {
	base, err := writeSmallBlob(root, []byte("regfs-bench gc shared base layer\n"))
	if err != nil {
		return 0, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0)*2)
	for i := range repos {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := writeGCRepository(root, fmt.Sprintf("gc%05d/app", i), base)
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return 1 + 5*repos, first
}

// writeGCRepository writes one repository: config and two layers linked,
// an OCI manifest over them and the base tagged "latest", and a blob that
// nothing links (garbage).
func writeGCRepository(root, repo string, base digest.Digest) error {
	cfg, err := writeSmallBlob(root, []byte(`{"architecture":"amd64","os":"linux","repo":"`+repo+`"}`))
	if err != nil {
		return err
	}
	l1, err := writeSmallBlob(root, []byte("layer one of "+repo+"\n"))
	if err != nil {
		return err
	}
	l2, err := writeSmallBlob(root, []byte("layer two of "+repo+"\n"))
	if err != nil {
		return err
	}
	if _, err := writeSmallBlob(root, []byte("garbage of "+repo+"\n")); err != nil {
		return err
	}
	for _, d := range []digest.Digest{base, cfg, l1, l2} {
		if err := writeLink(root, repo, d); err != nil {
			return err
		}
	}
	desc := func(mt string, d digest.Digest) string {
		return fmt.Sprintf(`{"mediaType":%q,"size":1,"digest":%q}`, mt, d)
	}
	const layer = "application/vnd.oci.image.layer.v1.tar+gzip"
	m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s,%s,%s]}`,
		desc("application/vnd.oci.image.config.v1+json", cfg), desc(layer, base), desc(layer, l1), desc(layer, l2)))
	md, err := writeSmallBlob(root, m)
	if err != nil {
		return err
	}
	repoDir := filepath.Join(repositoriesDir(root), repo, "_manifests")
	for _, p := range []string{
		filepath.Join(repoDir, "revisions/sha256", md.Encoded(), "link"),
		filepath.Join(repoDir, "tags/latest/current/link"),
		filepath.Join(repoDir, "tags/latest/index/sha256", md.Encoded(), "link"),
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(md.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// runRSS runs a command with its output discarded and returns its wall
// time and peak RSS in bytes.
func runRSS(ctx context.Context, name string, args ...string) (time.Duration, int64, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = io.Discard
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %v: %s", name, err, stderr.b)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10 // KiB on Linux
	}
	return d, rss, nil
}

// limitedBuffer keeps the first 4 KiB written, for an error message.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if n := 4096 - len(l.b); n > 0 {
		l.b = append(l.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

// gcDryRun measures P8.
func (b *bench) gcDryRun(ctx context.Context, rep *Report) error {
	if _, err := exec.LookPath(gcRegistryBin); err != nil {
		rep.add(Row{ID: "P8", What: "gc dry run", Text: "not measured", Against: gcRegistryBin + " not installed"})
		return nil
	}
	root := filepath.Join(b.tmp, "gc-registry")
	t := time.Now()
	blobs, err := writeGCRegistry(ctx, root, b.cfg.Repos)
	if err != nil {
		return err
	}
	b.log.Info("gc registry written", "repositories", b.cfg.Repos, "blobs", blobs, "took", time.Since(t).Round(time.Millisecond))
	conf := filepath.Join(b.tmp, "gc-registry.yml")
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n", root)
	if err := os.WriteFile(conf, []byte(yml), 0o644); err != nil {
		return err
	}
	s := samples{}
	for range b.cfg.Runs {
		// --grace 0: the tree was just written, and the registry's
		// collector has no grace window; both then report the same garbage.
		d, rss, err := runRSS(ctx, b.regfs, "gc", "--root", root, "--dry-run", "--grace", "0")
		if err != nil {
			return err
		}
		s.add("regfs", d.Seconds())
		s.add("regfs rss", float64(rss))
		d, rss, err = runRSS(ctx, gcRegistryBin, "garbage-collect", "--dry-run", conf)
		if err != nil {
			return err
		}
		s.add("registry", d.Seconds())
		s.add("registry rss", float64(rss))
	}
	v, cmp := s.median("regfs"), s.median("registry")
	rep.add(Row{ID: "P8", What: fmt.Sprintf("gc dry run, %d repositories, %d blobs", b.cfg.Repos, blobs),
		Value: v, Unit: unitSeconds, Against: gcRegistryBin + " garbage-collect --dry-run", Compare: cmp, Ratio: cmp / v,
		Target: ">= 5x", Goal: ratioAtLeast(5)})
	perMillion := s.median("regfs rss") / float64(blobs) * 1e6
	rep.add(Row{ID: "P8", What: "gc dry run peak RSS (per million blobs)",
		Text:        fmt.Sprintf("%.0f MiB (%.0f MiB)", s.median("regfs rss")/(1<<20), perMillion/(1<<20)),
		Against:     gcRegistryBin + " garbage-collect --dry-run",
		CompareText: fmt.Sprintf("%.0f MiB", s.median("registry rss")/(1<<20)),
		Target:      "bounded by the blobs", Met: "-"})
	return nil
}
