package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
)

// The image file rows (F3, F4): an image of cfg.ImageFiles small files in
// one gzip layer, pushed into the registry and written as an OCI layout
// for umoci. F3 is a warm `find` of _files/<tag>/ against `find` of the
// tree umoci unpacked; F4 `tar c` of _files/<tag>/ through a fresh mount
// with no index yet (the first access indexes the layer) against
// `umoci unpack` of the same image, what a user does today to see an
// image's files.

// imageRepo and imageTag name the image in the registry.
const (
	imageRepo = "files/bench"
	imageTag  = "latest"
)

// umociBin is the OCI image tool the rows compare with.
const umociBin = "umoci"

// benchImage is the image written for the F rows.
type benchImage struct {
	// layout is the OCI layout umoci reads; files counts the regular
	// files; bytes is their total size.
	layout       string
	files, dirs  int
	bytes        int64
	layerSize    int64
	layerDigest  digest.Digest
	manifestDgst digest.Digest
}

// writeBenchImage writes an image of n files (in directories of 50, each
// file 1-4 KiB of text) into the registry at root, tagged
// imageRepo:imageTag, and the same image as an OCI layout in dir.
func writeBenchImage(ctx context.Context, root, dir string, n int) (*benchImage, error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	img := &benchImage{layout: dir, files: n, dirs: 3} // usr, usr/share, usr/share/bench
	words := []string{"registry", "layer", "manifest", "index", "blob", "digest", "tag", "gzip", "tar", "file\n"}
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d := fmt.Sprintf("usr/share/bench/d%04d", i/50)
		if i%50 == 0 {
			img.dirs++
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
				return nil, err
			}
		}
		var content bytes.Buffer
		size := 1024 + rng.IntN(3072)
		for content.Len() < size {
			content.WriteString(words[rng.IntN(len(words))])
			content.WriteByte(' ')
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s/f%05d.txt", d, i), Mode: 0o644,
			Size: int64(content.Len()), ModTime: mtime}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(content.Bytes()); err != nil {
			return nil, err
		}
		img.bytes += int64(content.Len())
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	layer := gz.Bytes()
	img.layerDigest, img.layerSize = digest.FromBytes(layer), int64(len(layer))
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest.FromBytes(tb.Bytes()).String()}},
		"config": map[string]any{},
	})
	if err != nil {
		return nil, err
	}
	desc := func(mt string, b []byte) map[string]any {
		return map[string]any{"mediaType": mt, "digest": digest.FromBytes(b).String(), "size": len(b)}
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        desc("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{desc("application/vnd.oci.image.layer.v1.tar+gzip", layer)},
	})
	if err != nil {
		return nil, err
	}
	img.manifestDgst = digest.FromBytes(manifest)

	// The registry: blobs, their links, the revision and the tag.
	for _, b := range [][]byte{layer, config, manifest} {
		d, err := writeSmallBlob(root, b)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(b, manifest) {
			if err := writeLink(root, imageRepo, d); err != nil {
				return nil, err
			}
		}
	}
	m := filepath.Join(repositoriesDir(root), imageRepo, "_manifests")
	for _, p := range []string{
		filepath.Join(m, "revisions/sha256", img.manifestDgst.Encoded(), "link"),
		filepath.Join(m, "tags", imageTag, "current/link"),
		filepath.Join(m, "tags", imageTag, "index/sha256", img.manifestDgst.Encoded(), "link"),
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(img.manifestDgst.String()), 0o644); err != nil {
			return nil, err
		}
	}

	// The OCI layout.
	for _, b := range [][]byte{layer, config, manifest} {
		p := filepath.Join(dir, "blobs/sha256", digest.FromBytes(b).Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
	}
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"org.opencontainers.image.ref.name": imageTag}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{md}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644); err != nil {
		return nil, err
	}
	return img, os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// warmFinds is how many warm finds each run times: on a busy machine a
// single one varies by 10x (a FUSE round trip waits for a CPU).
const warmFinds = 5

// warmFind runs find on p once to warm the caches (it must list at least
// files entries), then warmFinds times, each time added to s as kind.
func warmFind(ctx context.Context, s samples, kind, p string, files int) error {
	var lines lineCounter
	if _, err := runCmd(ctx, &lines, "find", p); err != nil {
		return err
	}
	if lines.n < files {
		return fmt.Errorf("find %s listed %d entries, the image has %d files", p, lines.n, files)
	}
	for range warmFinds {
		d, err := runCmd(ctx, nil, "find", p)
		if err != nil {
			return err
		}
		s.add(kind, d.Seconds())
	}
	return nil
}

// byteCounter counts the bytes written to it.
type byteCounter struct{ n int64 }

func (c *byteCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// imageFiles measures F3 and F4.
func (b *bench) imageFiles(ctx context.Context, rep *Report) error {
	if _, err := exec.LookPath(umociBin); err != nil {
		rep.add(Row{ID: "F3", What: "image files", Text: "not measured", Against: umociBin + " not installed"})
		return nil
	}
	t := time.Now()
	img, err := writeBenchImage(ctx, b.ds.root, filepath.Join(b.tmp, "image-layout"), b.cfg.ImageFiles)
	if err != nil {
		return err
	}
	b.log.Info("image written", "files", img.files, "bytes", img.bytes, "layer", img.layerSize, "took", time.Since(t).Round(time.Millisecond))
	unpacked := filepath.Join(b.tmp, "image-unpacked")
	s := samples{}
	for i := range b.cfg.Runs {
		// F4: umoci unpack against tar c of a fresh mount with no index.
		if err := os.RemoveAll(unpacked); err != nil {
			return err
		}
		d, err := runCmd(ctx, nil, umociBin, "unpack", "--image", img.layout+":"+imageTag, unpacked)
		if err != nil {
			return err
		}
		s.add("umoci unpack", d.Seconds())
		index := filepath.Join(b.tmp, fmt.Sprintf("image-index-%d", i))
		err = b.withMount(b.startRegfs(b.cfg.CacheSize, "--index-dir", index))(func(m *mount) error {
			dir := filepath.Join(m.dir, imageRepo, "_files", imageTag)
			var out byteCounter
			d, err := runCmd(ctx, &out, "tar", "c", "-f", "-", "-C", dir, ".")
			if err != nil {
				return err
			}
			if out.n < img.bytes {
				return fmt.Errorf("tar c of %s wrote %d bytes, less than the image's %d bytes of files", dir, out.n, img.bytes)
			}
			s.add("tar c", d.Seconds())

			// F3: warm find, the kernel's caches and the index loaded.
			for _, kind := range []string{"find regfs", "find unpacked"} {
				p := dir
				if kind == "find unpacked" {
					p = filepath.Join(unpacked, "rootfs")
				}
				if err := warmFind(ctx, s, kind, p, img.files); err != nil {
					return err
				}
			}
			before, err := regfsStats(m.dir)
			if err != nil {
				return err
			}
			if _, err := runCmd(ctx, nil, "find", dir); err != nil {
				return err
			}
			after, err := regfsStats(m.dir)
			if err != nil {
				return err
			}
			s.add("find requests", float64(fuseRequests(before, after)))
			return nil
		})
		if err != nil {
			return err
		}
		// The ceiling: the bare bazil passthrough of the unpacked tree.
		err = b.withMount(b.startBare(filepath.Join(unpacked, "rootfs")))(func(m *mount) error {
			return warmFind(ctx, s, "find bare", m.dir, img.files)
		})
		if err != nil {
			return err
		}
		if err := os.RemoveAll(index); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(unpacked); err != nil {
		return err
	}
	what := fmt.Sprintf("%d files, %.0f MiB in a %.1f MiB gzip layer", img.files, float64(img.bytes)/(1<<20), float64(img.layerSize)/(1<<20))
	v, cmp := s.median("find regfs"), s.median("find unpacked")
	rep.add(Row{ID: "F3", What: "warm find of _files/<tag>, " + what, Value: v, Unit: unitSeconds,
		Against: "find of the tree umoci unpacked", Compare: cmp, Ratio: cmp / v,
		Target: "<= 3x its time", Goal: ratioAtLeast(1.0 / 3)})
	rep.add(Row{ID: "F3", What: "warm find of _files/<tag>: FUSE requests (directories)",
		Text: fmt.Sprintf("%.0f (%d)", s.median("find requests"), img.dirs), Target: "-", Met: "-"})
	cmp = s.median("find bare")
	rep.add(Row{ID: "F3", What: "warm find of _files/<tag>", Value: v, Unit: unitSeconds,
		Against: "find through the bare bazil passthrough of the unpacked tree", Compare: cmp, Ratio: cmp / v})
	v, cmp = s.median("tar c"), s.median("umoci unpack")
	rep.add(Row{ID: "F4", What: "tar c of _files/<tag>, fresh mount, no index, " + what, Value: v, Unit: unitSeconds,
		Against: "umoci unpack", Compare: cmp, Ratio: cmp / v,
		Target: ">= 1x", Goal: ratioAtLeast(1)})
	return nil
}
