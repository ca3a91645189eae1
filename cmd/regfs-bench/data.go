package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/opencontainers/go-digest"
)

// The benchmark writes its registry the way docker/distribution lays it
// out on disk, directly, as a registry (or another tool) would have left
// it: regfs must mount such a directory as is.
const registryV2 = "docker/registry/v2"

// genChunk is the unit of generated data.
const genChunk = 1 << 20

// blob is a generated blob: its digest, size and the file holding it.
type blob struct {
	dgst digest.Digest
	size int64
	path string
}

// dataset is the generated data.
type dataset struct {
	// root is the registry's root directory (what regfs --root takes).
	root string
	// layer is the random layer P1, P2, P6 and P7 read.
	layer blob
	// big is the larger layer P5 reads.
	big blob
	// upload is a random file outside the registry that P3 pushes.
	upload blob
	// repos are the repository names, the first holding layer and big.
	repos []string
}

// blobDataPath is where a blob's bytes live below root.
func blobDataPath(root string, d digest.Digest) string {
	return filepath.Join(root, registryV2, "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

// repositoriesDir is the directory holding the repositories.
func repositoriesDir(root string) string { return filepath.Join(root, registryV2, "repositories") }

// layerLinkPath is the link that puts blob d in repository repo.
func layerLinkPath(root, repo string, d digest.Digest) string {
	return filepath.Join(repositoriesDir(root), repo, "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

// layerPath is the path of a linked blob inside a regfs mount.
func layerPath(mnt, repo string, d digest.Digest) string {
	return filepath.Join(mnt, repo, "_layers", d.String())
}

// makeDataset writes the registry below dir/registry and the upload source
// beside it.
func makeDataset(ctx context.Context, dir string, cfg Config) (*dataset, error) {
	ds := &dataset{root: filepath.Join(dir, "registry")}
	for i := range cfg.Repos {
		ds.repos = append(ds.repos, fmt.Sprintf("repo%05d", i))
	}
	var err error
	if ds.layer, err = writeRandomBlob(ctx, ds.root, dir, cfg.LayerSize, 1); err != nil {
		return nil, err
	}
	if ds.big, err = writeRandomBlob(ctx, ds.root, dir, cfg.BigSize, 2); err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "upload.src")
	if ds.upload, err = writeRandomFile(ctx, src, cfg.LayerSize, 3); err != nil {
		return nil, err
	}
	if err := writeRepositories(ctx, ds); err != nil {
		return nil, err
	}
	return ds, nil
}

// writeRandomBlob stores size random bytes (from seed) as a blob of the
// registry at root, writing through a temporary file in tmp and renaming
// it into place once its digest is known.
func writeRandomBlob(ctx context.Context, root, tmp string, size int64, seed uint64) (blob, error) {
	tmpPath := filepath.Join(tmp, fmt.Sprintf("blob-%d.tmp", seed))
	b, err := writeRandomFile(ctx, tmpPath, size, seed)
	if err != nil {
		return blob{}, err
	}
	b.path = blobDataPath(root, b.dgst)
	if err := os.MkdirAll(filepath.Dir(b.path), 0o755); err != nil {
		return blob{}, err
	}
	return b, os.Rename(tmpPath, b.path)
}

// writeRandomFile writes size bytes of a ChaCha8 stream seeded by seed to
// path and returns their digest. Generation runs on its own goroutine,
// ahead of hashing and writing.
func writeRandomFile(ctx context.Context, path string, size int64, seed uint64) (blob, error) {
	f, err := os.Create(path)
	if err != nil {
		return blob{}, err
	}
	defer f.Close()
	chunks := make(chan []byte, 4)
	free := make(chan []byte, 6)
	for range cap(free) {
		free <- make([]byte, genChunk)
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(chunks)
		var key [32]byte
		binary.LittleEndian.PutUint64(key[:], seed)
		rng := rand.NewChaCha8(key)
		for left := size; left > 0; {
			var buf []byte
			select {
			case buf = <-free:
			case <-gctx.Done():
				return
			}
			buf = buf[:min(int64(genChunk), left)]
			_, _ = rng.Read(buf) // ChaCha8.Read never fails
			left -= int64(len(buf))
			chunks <- buf
		}
	}()
	h := sha256.New()
	var werr error
	for buf := range chunks {
		if werr == nil {
			h.Write(buf)
			_, werr = f.Write(buf)
		}
		free <- buf[:cap(buf)]
	}
	cancel()
	wg.Wait()
	if werr != nil {
		return blob{}, werr
	}
	if err := ctx.Err(); err != nil {
		return blob{}, err
	}
	if err := f.Close(); err != nil {
		return blob{}, err
	}
	return blob{dgst: digest.NewDigest(digest.SHA256, h), size: size, path: path}, nil
}

// writeRepositories makes the repositories: each links one base blob all
// share and one small blob of its own, as images built on a common base
// do; the first also links the benchmark's layers.
func writeRepositories(ctx context.Context, ds *dataset) error {
	base, err := writeSmallBlob(ds.root, []byte("regfs-bench shared base layer\n"))
	if err != nil {
		return err
	}
	if err := writeLink(ds.root, ds.repos[0], ds.layer.dgst); err != nil {
		return err
	}
	if err := writeLink(ds.root, ds.repos[0], ds.big.dgst); err != nil {
		return err
	}
	// Two writers per core: the files are small, so the time is in system
	// calls that overlap well.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0)*2)
	for _, repo := range ds.repos {
		if err := ctx.Err(); err != nil {
			return err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := writeRepository(ds.root, repo, base)
			mu.Lock()
			first = cmp.Or(first, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return first
}

// writeRepository makes repo with a link to base and one to a small blob of
// its own.
func writeRepository(root, repo string, base digest.Digest) error {
	own, err := writeSmallBlob(root, []byte("regfs-bench layer of "+repo+"\n"))
	if err != nil {
		return err
	}
	if err := writeLink(root, repo, base); err != nil {
		return err
	}
	return writeLink(root, repo, own)
}

// writeSmallBlob stores content as a blob (if not already there).
func writeSmallBlob(root string, content []byte) (digest.Digest, error) {
	d := digest.FromBytes(content)
	p := blobDataPath(root, d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return d, os.WriteFile(p, content, 0o644)
}

// writeLink links blob d into repo: a link file holding the digest, 71
// bytes, no newline.
func writeLink(root, repo string, d digest.Digest) error {
	p := layerLinkPath(root, repo, d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(d.String()), 0o644)
}

// removeBlob removes a blob's directory and its link from repo, so that
// the next push of it is a new one.
func removeBlob(root, repo string, d digest.Digest) error {
	if err := os.RemoveAll(filepath.Dir(blobDataPath(root, d))); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Dir(layerLinkPath(root, repo, d))); err != nil {
		return err
	}
	// An upload left behind by a failed run would be resumed by the next.
	return os.RemoveAll(filepath.Join(repositoriesDir(root), repo, "_uploads"))
}
