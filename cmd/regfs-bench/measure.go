package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// randomReadSize is the size of P6's reads.
const randomReadSize = 4 << 10

// rssSlack is what P5 allows above the cache budget.
const rssSlack = 64 << 20

// sequentialReads measures P1 (cold read: regfs, bare passthrough, rclone,
// direct) and P2 (second read on the same mount). The kinds take turns in
// each run, so a slow spell of the machine hits all of them alike.
func (b *bench) sequentialReads(ctx context.Context, rep *Report) error {
	layer := b.ds.layer
	bareDir := filepath.Join(b.tmp, "bare-read")
	if err := os.MkdirAll(bareDir, 0o755); err != nil {
		return err
	}
	// A hard link: the bare file system serves the very inode (and page
	// cache) regfs reads.
	if err := os.Link(layer.path, filepath.Join(bareDir, "layer")); err != nil {
		return err
	}
	s := samples{}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.withMount(b.startRegfs(b.cfg.CacheSize))(func(m *mount) error {
			p := layerPath(m.dir, b.ds.repos[0], layer.dgst)
			return s.read2(p, layer.size, "regfs cold", "regfs warm")
		})
		if err != nil {
			return err
		}
		err = b.withMount(b.startBare(bareDir))(func(m *mount) error {
			return s.read2(filepath.Join(m.dir, "layer"), layer.size, "bare cold", "bare warm")
		})
		if err != nil {
			return err
		}
		if b.rclone != "" {
			err = b.withMount(b.startRclone())(func(m *mount) error {
				rel, err := filepath.Rel(b.ds.root, layer.path)
				if err != nil {
					return err
				}
				return s.read2(filepath.Join(m.dir, rel), layer.size, "rclone cold", "rclone warm")
			})
			if err != nil {
				return err
			}
		}
		d, err := readSize(layer.path, layer.size)
		if err != nil {
			return err
		}
		s.add("direct", rate(layer.size, d))
	}

	what := fmt.Sprintf("cold sequential read of the %s layer (fresh mount, backing file in page cache)", formatBytes(layer.size))
	regfs := s.median("regfs cold")
	rep.add(Row{ID: "P1", What: what, Value: regfs, Unit: unitRate,
		Against: "bare bazil passthrough, same mount options", Compare: s.median("bare cold"),
		Ratio: regfs / s.median("bare cold"), Target: ">= 0.90", Goal: ratioAtLeast(0.9)})
	if b.rclone != "" {
		rep.add(Row{ID: "P1", What: what, Value: regfs, Unit: unitRate,
			Against: "rclone mount of the backing directory", Compare: s.median("rclone cold"),
			Ratio: regfs / s.median("rclone cold"), Target: "> 1 (ahead)", Goal: ratioAbove(1)})
	}
	rep.add(Row{ID: "P1", What: what, Value: regfs, Unit: unitRate,
		Against: "reading the blob file directly", Compare: s.median("direct"),
		Ratio: regfs / s.median("direct")})

	what = "second read of the same layer, same mount"
	regfs = s.median("regfs warm")
	rep.add(Row{ID: "P2", What: what, Value: regfs, Unit: unitRate,
		Against: "reading the blob file directly", Compare: s.median("direct"),
		Ratio: regfs / s.median("direct"), Target: ">= 0.80", Goal: ratioAtLeast(0.8)})
	rep.add(Row{ID: "P2", What: what, Value: regfs, Unit: unitRate,
		Against: "bare bazil passthrough, second read", Compare: s.median("bare warm"),
		Ratio: regfs / s.median("bare warm")})
	if b.rclone != "" {
		rep.add(Row{ID: "P2", What: what, Value: regfs, Unit: unitRate,
			Against: "rclone mount, second read", Compare: s.median("rclone warm"),
			Ratio: regfs / s.median("rclone warm")})
	}
	return nil
}

// read2 reads path twice, as kind cold and warm.
func (s samples) read2(path string, size int64, cold, warm string) error {
	for _, k := range []string{cold, warm} {
		d, err := readSize(path, size)
		if err != nil {
			return err
		}
		s.add(k, rate(size, d))
	}
	return nil
}

// upload measures P3: cp of a new layer into _uploads/sha256:<hex> until
// cp returns (close commits: the digest is verified, the blob moved and
// linked), against hashing the same file with crypto/sha256 alone and
// against cp to the bare passthrough.
func (b *bench) upload(ctx context.Context, rep *Report) error {
	up, repo := b.ds.upload, b.ds.repos[0]
	bareDir := filepath.Join(b.tmp, "bare-write")
	if err := os.MkdirAll(bareDir, 0o755); err != nil {
		return err
	}
	s := samples{}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := removeBlob(b.ds.root, repo, up.dgst); err != nil {
			return err
		}
		err := b.withMount(b.startRegfs(b.cfg.CacheSize))(func(m *mount) error {
			dst := filepath.Join(m.dir, repo, "_uploads", up.dgst.String())
			d, err := runCmd(ctx, nil, "cp", up.path, dst)
			if err != nil {
				return err
			}
			s.add("regfs", rate(up.size, d))
			return nil
		})
		if err != nil {
			return err
		}
		if fi, err := os.Stat(blobDataPath(b.ds.root, up.dgst)); err != nil || fi.Size() != up.size {
			return fmt.Errorf("the upload did not commit a %d-byte blob: %v", up.size, err)
		}
		if err := removeBlob(b.ds.root, repo, up.dgst); err != nil {
			return err
		}

		// The same cp to the bare passthrough, without and with the
		// writeback cache; each checks and removes what it wrote.
		for _, bare := range []struct {
			kind  string
			start func(string) (*mount, error)
		}{{"bare", b.startBare}, {"bare writeback", b.startBareWriteback}} {
			err = b.withMount(bare.start(bareDir))(func(m *mount) error {
				d, err := runCmd(ctx, nil, "cp", up.path, filepath.Join(m.dir, "upload"))
				if err != nil {
					return err
				}
				s.add(bare.kind, rate(up.size, d))
				return nil
			})
			if err != nil {
				return err
			}
			if err := checkBareUpload(bareDir, up.size); err != nil {
				return err
			}
		}

		d, err := hashFile(up.path)
		if err != nil {
			return err
		}
		s.add("sha256", rate(up.size, d))
	}
	what := fmt.Sprintf("cp of a %s layer into _uploads/sha256:<hex>, verification and commit included", formatBytes(up.size))
	regfs := s.median("regfs")
	rep.add(Row{ID: "P3", What: what, Value: regfs, Unit: unitRate,
		Against: "Go crypto/sha256 over the same file alone", Compare: s.median("sha256"),
		Ratio: regfs / s.median("sha256"), Target: ">= 0.70", Goal: ratioAtLeast(0.7)})
	rep.add(Row{ID: "P3", What: what, Value: regfs, Unit: unitRate,
		Against: "cp to the bare bazil passthrough (no hashing)", Compare: s.median("bare"),
		Ratio: regfs / s.median("bare")})
	rep.add(Row{ID: "P3", What: what, Value: regfs, Unit: unitRate,
		Against: "cp to the bare passthrough with the FUSE writeback cache (no hashing)", Compare: s.median("bare writeback"),
		Ratio: regfs / s.median("bare writeback")})
	return nil
}

// checkBareUpload checks that a cp to the bare passthrough wrote size
// bytes to dir/upload, and removes it.
func checkBareUpload(dir string, size int64) error {
	p := filepath.Join(dir, "upload")
	if fi, err := os.Stat(p); err != nil || fi.Size() != size {
		return fmt.Errorf("the bare write did not write %d bytes: %v", size, err)
	}
	return os.Remove(p)
}

// hashFile hashes the file at path and returns how long reading and
// hashing took.
func hashFile(path string) (time.Duration, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, readBuf)); err != nil {
		return 0, err
	}
	_ = h.Sum(nil)
	return time.Since(start), nil
}

// listingCacheTime is regfs's --dir-cache-time for P4: far longer than a
// cold listing takes on any machine, so that the warm rows measure a
// second listing within the directory cache time (what a user who lists
// twice within the default minute gets), never a machine too slow for it.
// A run that outlasts it fails rather than report a warm row that is not.
const listingCacheTime = 10 * time.Minute

// listing measures P4: ls -l of the top directory (every repository) and
// find over the whole tree, each cold (fresh mount) then warm (again on the
// same mount), against the same commands on the backing directory, with
// the driver calls and blob reads they cost.
func (b *bench) listing(ctx context.Context, rep *Report) error {
	backing := repositoriesDir(b.ds.root)
	s := samples{}
	for range b.cfg.Runs {
		for _, c := range []struct {
			name string
			args []string
		}{{"ls", []string{"-l"}}, {"find", nil}} {
			if err := ctx.Err(); err != nil {
				return err
			}
			err := b.withMount(b.startRegfs(b.cfg.CacheSize, "--dir-cache-time", listingCacheTime.String()))(func(m *mount) error {
				start := time.Now()
				for _, temp := range []string{"cold", "warm"} {
					before, err := regfsStats(m.dir)
					if err != nil {
						return err
					}
					var lines lineCounter
					d, err := runCmd(ctx, &lines, c.name, append(c.args, m.dir)...)
					if err != nil {
						return err
					}
					after, err := regfsStats(m.dir)
					if err != nil {
						return err
					}
					k := c.name + " " + temp
					s.add(k, d.Seconds())
					entries := lines.n
					if c.name == "ls" {
						entries-- // the "total" line
					} else {
						entries-- // the mountpoint itself
					}
					if time.Since(start) >= listingCacheTime {
						return fmt.Errorf("%s took longer than regfs --dir-cache-time %v: the warm row would not measure the cache", k, listingCacheTime)
					}
					s.add(k+" entries", float64(entries))
					// Blob bytes are read through the cache, by block
					// loads. (bytes_read counts the reads of
					// .regfs/stats itself.)
					var blobReads int64
					if after.Cache != nil && before.Cache != nil {
						blobReads = after.Cache.Loads - before.Cache.Loads
					}
					s.add(k+" blob reads", float64(blobReads))
					if calls, ok := driverCalls(before, after); ok {
						s.add(k+" driver calls", float64(calls)/float64(max(entries, 1)))
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			var lines lineCounter
			d, err := runCmd(ctx, &lines, c.name, append(c.args, backing)...)
			if err != nil {
				return err
			}
			s.add(c.name+" backing", d.Seconds())
			if c.name != "find" {
				continue
			}
			// The ceiling for find through bazil: the bare passthrough of
			// a plain directory tree of the same shape as regfs's view
			// (same directories, same names, empty files), its listings
			// cached by the kernel too.
			mirror, err := b.regfsViewMirror()
			if err != nil {
				return err
			}
			err = b.withMount(b.startBare(mirror))(func(m *mount) error {
				for _, temp := range []string{"cold", "warm"} {
					var lines lineCounter
					d, err := runCmd(ctx, &lines, "find", m.dir)
					if err != nil {
						return err
					}
					s.add("find bare "+temp, d.Seconds())
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	n := b.cfg.Repos
	for _, c := range []struct {
		name, what, target string
		goal               func(Row) bool
	}{
		{"ls cold", fmt.Sprintf("ls -l of %d repositories, cold (fresh mount)", n), "<= 2 s", valueAtMost(2)},
		{"ls warm", fmt.Sprintf("ls -l of %d repositories, warm (again, same mount)", n), "<= 0.2 s", valueAtMost(0.2)},
		{"find cold", fmt.Sprintf("find over %d repositories, cold (fresh mount)", n), "within 5x (ratio >= 0.2)", ratioAtLeast(0.2)},
		{"find warm", fmt.Sprintf("find over %d repositories, warm (again, same mount)", n), "within 2x (ratio >= 0.5)", ratioAtLeast(0.5)},
	} {
		cmd := c.name[:len(c.name)-5]
		against := "ls -l of the backing directory"
		if cmd == "find" {
			against = "find on the backing directory"
		}
		v, cmp := s.median(c.name), s.median(cmd+" backing")
		rep.add(Row{ID: "P4", What: c.what, Value: v, Unit: unitSeconds,
			Against: against, Compare: cmp, Ratio: cmp / v, Target: c.target, Goal: c.goal})
		note := fmt.Sprintf("%.0f entries listed, %.0f blob reads", s.median(c.name+" entries"), s.median(c.name+" blob reads"))
		calls := "n/a (.regfs/stats has no driver counters)"
		if len(s[c.name+" driver calls"]) > 0 {
			calls = fmt.Sprintf("%.2f", s.median(c.name+" driver calls"))
		}
		if cmd == "find" {
			// Against the bare bazil passthrough: what bazil and the
			// kernel allow a FUSE find of this tree (no READDIRPLUS).
			temp := c.name[len(cmd)+1:]
			bare := s.median("find bare " + temp)
			rep.add(Row{ID: "P4", What: c.what + ", against bare bazil", Value: v, Unit: unitSeconds,
				Against: "find on the bare bazil passthrough of a tree shaped as regfs's view, " + temp,
				Compare: bare, Ratio: bare / v, Target: "ceiling (ratio near 1)", Goal: nil})
		}
		rep.add(Row{ID: "P4", What: c.what + ": driver calls per listed entry", Text: calls,
			Against: "blob reads (block cache loads)", CompareText: note,
			Target: "0 blob reads", Goal: nil, Met: metText(s.median(c.name+" blob reads") == 0)})
	}
	return nil
}

// regfsViewMirror makes, once, a plain directory tree with the shape of
// regfs's view of the registry: every directory and file a find through a
// regfs mount lists (files empty), so that a find through the bare
// passthrough of it does the same lookups and listings.
func (b *bench) regfsViewMirror() (string, error) {
	mirror := filepath.Join(b.tmp, "regfs-view")
	if _, err := os.Stat(mirror); err == nil {
		return mirror, nil
	}
	err := b.withMount(b.startRegfs(b.cfg.CacheSize))(func(m *mount) error {
		return filepath.WalkDir(m.dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(m.dir, p)
			if err != nil {
				return err
			}
			dst := filepath.Join(mirror, rel)
			if e.IsDir() {
				return os.MkdirAll(dst, 0o755)
			}
			return os.WriteFile(dst, nil, 0o644)
		})
	})
	if err != nil {
		os.RemoveAll(mirror)
		return "", fmt.Errorf("mirroring regfs's view: %w", err)
	}
	return mirror, nil
}

// driverCalls is the number of driver calls between two stats snapshots,
// when regfs counts them.
func driverCalls(before, after statsSnapshot) (int64, bool) {
	if after.DriverCalls == nil {
		return 0, false
	}
	var n int64
	for op, v := range after.DriverCalls {
		n += v - before.DriverCalls[op]
	}
	return n, true
}

// memory measures P5: regfs's peak RSS while two readers read the big layer
// at once, from start to end, against the cache budget.
func (b *bench) memory(ctx context.Context, rep *Report) error {
	return b.rssRow(ctx, rep, "P5", "", func() (*mount, error) { return b.startRegfs(b.cfg.CacheSize) })
}

// rssRow measures, in each run, regfs's peak RSS (VmHWM) on a fresh mount
// that start makes while two readers read the big layer at once, and adds
// row id (suffix follows its description) against the cache
// budget.
func (b *bench) rssRow(ctx context.Context, rep *Report, id, suffix string, start func() (*mount, error)) error {
	big := b.ds.big
	s := samples{}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.withMount(start())(func(m *mount) error {
			p := layerPath(m.dir, b.ds.repos[0], big.dgst)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i := range errs {
				wg.Go(func() { _, errs[i] = readSize(p, big.size) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return err
			}
			rss, err := peakRSS(m.pid())
			if err != nil {
				return err
			}
			s.add("rss", float64(rss))
			return nil
		})
		if err != nil {
			return err
		}
	}
	budget := float64(b.cfg.CacheSize)
	v := s.median("rss")
	rep.add(Row{ID: id, What: fmt.Sprintf("peak RSS of regfs (VmHWM) while reading a %s layer twice in parallel%s", formatBytes(big.size), suffix),
		Value: v, Unit: unitBytes, Against: "the cache budget (--cache-size)", Compare: budget,
		Ratio:  v / budget,
		Target: "<= budget + 64 MiB", Goal: func(r Row) bool { return r.Value <= budget+rssSlack }})
	return nil
}

// randomReads measures P6: 4 KiB preads at random offsets of the layer on a
// fresh mount, against the same preads of the blob file.
func (b *bench) randomReads(ctx context.Context, rep *Report) error {
	layer := b.ds.layer
	rng := rand.New(rand.NewPCG(6, 6))
	offsets := make([]int64, b.cfg.RandomReads)
	for i := range offsets {
		offsets[i] = rng.Int64N(layer.size - randomReadSize)
	}
	s := samples{}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.withMount(b.startRegfs(b.cfg.CacheSize))(func(m *mount) error {
			d, err := preads(layerPath(m.dir, b.ds.repos[0], layer.dgst), offsets)
			if err != nil {
				return err
			}
			s.add("regfs", d.Seconds()/float64(len(offsets)))
			return nil
		})
		if err != nil {
			return err
		}
		d, err := preads(layer.path, offsets)
		if err != nil {
			return err
		}
		s.add("direct", d.Seconds()/float64(len(offsets)))
	}
	v, cmp := s.median("regfs"), s.median("direct")
	rep.add(Row{ID: "P6", What: fmt.Sprintf("4 KiB reads at %d random offsets of the layer, fresh mount (time per read)", len(offsets)),
		Value: v, Unit: unitSeconds, Against: "the same reads of the blob file directly", Compare: cmp, Ratio: cmp / v})
	return nil
}

// preads opens path and reads randomReadSize bytes at each offset.
func preads(path string, offsets []int64) (time.Duration, error) {
	buf := make([]byte, randomReadSize)
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	for _, off := range offsets {
		if _, err := f.ReadAt(buf, off); err != nil {
			return 0, fmt.Errorf("pread %s at %d: %w", path, off, err)
		}
	}
	return time.Since(start), nil
}

// firstByte measures P7: head -c1 of a layer on a fresh mount (lookups,
// open and the first read), against head -c1 of the blob file, which shows
// what starting head costs.
func (b *bench) firstByte(ctx context.Context, rep *Report) error {
	layer := b.ds.layer
	s := samples{}
	for range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.withMount(b.startRegfs(b.cfg.CacheSize))(func(m *mount) error {
			var lines lineCounter
			d, err := runCmd(ctx, &lines, "head", "-c1", layerPath(m.dir, b.ds.repos[0], layer.dgst))
			if err != nil {
				return err
			}
			s.add("regfs", d.Seconds())
			return nil
		})
		if err != nil {
			return err
		}
		d, err := runCmd(ctx, nil, "head", "-c1", layer.path)
		if err != nil {
			return err
		}
		s.add("direct", d.Seconds())
	}
	v, cmp := s.median("regfs"), s.median("direct")
	rep.add(Row{ID: "P7", What: "time to first byte: head -c1 of a layer, fresh mount",
		Value: v, Unit: unitSeconds, Against: "head -c1 of the blob file (process start-up)", Compare: cmp,
		Ratio: cmp / v, Target: "<= 5 ms", Goal: valueAtMost(0.005)})
	return nil
}
