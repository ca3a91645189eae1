package main

// The bare bazil.org/fuse file system over S3: the ceiling of S1. It serves
// one file, the layer, whose reads are served by the plain client's ranged
// GETs (s3Env.getRange, the same SDK client and options, the same part size
// and as many in flight as the S1 baseline), so that S1 can tell what
// regfs costs from what bazil and the kernel cost on the way.

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"github.com/regfs/regfs/driver/s3/s3test"
)

// Set in the bare server's environment (with bareEnvMount), they make it
// serve the object bareEnvS3Key of bucket s3Bucket as the file "layer".
const (
	bareEnvS3Endpoint = "REGFS_BENCH_BARE_S3_ENDPOINT"
	bareEnvS3Key      = "REGFS_BENCH_BARE_S3_KEY"
	bareEnvS3Secret   = "REGFS_BENCH_BARE_S3_SECRET"
	bareEnvS3Access   = "REGFS_BENCH_BARE_S3_ACCESS"
	bareEnvS3Size     = "REGFS_BENCH_BARE_S3_SIZE"
	bareEnvS3Part     = "REGFS_BENCH_BARE_S3_PART"
	bareEnvS3Parallel = "REGFS_BENCH_BARE_S3_PARALLEL"
)

// bareS3Name is the one file of the bare file system over S3.
const bareS3Name = "layer"

// startBareS3 mounts the bare file system over S3 serving key (size bytes)
// through ranged GETs of part bytes, parallel in flight.
func (b *bench) startBareS3(e *s3Env, key string, size int64, part, parallel int) (*mount, error) {
	mnt := b.newMountpoint("bare-s3")
	env := []string{
		bareEnvMount + "=" + mnt,
		bareEnvS3Endpoint + "=" + e.srv.Endpoint,
		bareEnvS3Access + "=" + e.srv.AccessKey,
		bareEnvS3Secret + "=" + e.srv.SecretKey,
		bareEnvS3Key + "=" + key,
		bareEnvS3Size + "=" + strconv.FormatInt(size, 10),
		bareEnvS3Part + "=" + strconv.Itoa(part),
		bareEnvS3Parallel + "=" + strconv.Itoa(parallel),
	}
	return b.mounts.start("bare-s3", mnt, []string{b.self}, env, bareReady)
}

// bareS3FromEnv is the file the environment names, or nil when it names
// none (the bare passthrough of a directory).
func bareS3FromEnv() (*bareS3File, error) {
	endpoint := os.Getenv(bareEnvS3Endpoint)
	if endpoint == "" {
		return nil, nil
	}
	srv := &s3test.Server{Endpoint: endpoint, Region: s3test.Region,
		AccessKey: os.Getenv(bareEnvS3Access), SecretKey: os.Getenv(bareEnvS3Secret)}
	f := &bareS3File{e: &s3Env{client: srv.Client()}, key: os.Getenv(bareEnvS3Key)}
	var err error
	if f.size, err = strconv.ParseInt(os.Getenv(bareEnvS3Size), 10, 64); err != nil {
		return nil, err
	}
	if f.part, err = strconv.Atoi(os.Getenv(bareEnvS3Part)); err != nil {
		return nil, err
	}
	if f.parallel, err = strconv.Atoi(os.Getenv(bareEnvS3Parallel)); err != nil {
		return nil, err
	}
	if f.part <= 0 || f.parallel <= 0 {
		return nil, fmt.Errorf("part %d, parallel %d", f.part, f.parallel)
	}
	return f, nil
}

// serveBareS3 serves f at mnt as the file bareS3Name (serveBareFS).
func serveBareS3(mnt string, f *bareS3File) error {
	// Open the client's connection before the mount is ready, as regfs's
	// S3 driver does when it starts: S5 times a first byte, not a dial.
	if _, err := f.e.getRange(context.Background(), f.key, 0, make([]byte, 1)); err != nil {
		return err
	}
	return serveBareFS(mnt, bareOneFile{name: bareS3Name, file: f})
}

var (
	_ fs.NodeOpener     = (*bareS3File)(nil)
	_ fs.HandleReader   = (*bareS3Handle)(nil)
	_ fs.HandleReleaser = (*bareS3Handle)(nil)
)

// bareS3File is the object served as a file.
type bareS3File struct {
	bareNoXattr
	e        *s3Env
	key      string
	size     int64
	part     int
	parallel int
}

func (f *bareS3File) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = 2
	a.Mode = 0o444
	a.Size = uint64(f.size)
	a.Valid = bareValid
	return nil
}

func (f *bareS3File) Open(_ context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsReadOnly() {
		return nil, fuse.Errno(syscall.EROFS)
	}
	resp.Flags |= fuse.OpenKeepCache
	ctx, cancel := context.WithCancel(context.Background())
	return &bareS3Handle{f: f, ctx: ctx, cancel: cancel, parts: map[int64]*bareS3Part{}}, nil
}

// bareS3Handle reads the object ahead of a sequential reader: the part
// being read and the ones after it, parallel in all, each one ranged GET
// into a buffer of its own (reused once read past); a read below the
// parts held (out of order) is one ranged GET of its bytes.
type bareS3Handle struct {
	f      *bareS3File
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// parts are the parts loaded or loading, by index; guarded by mu.
	parts map[int64]*bareS3Part
	// next is the first part not yet started; guarded by mu.
	next int64
	// free are buffers of parts read past; guarded by mu.
	free [][]byte
	// wg tracks the GETs, for Release.
	wg sync.WaitGroup
}

// bareS3Part is one part's GET; buf and err are set before done closes.
type bareS3Part struct {
	done chan struct{}
	buf  []byte
	err  error
	// readers counts the reads copying from buf, which is not reused
	// while any does; guarded by bareS3Handle.mu.
	readers int
}

func (h *bareS3Handle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	size := h.f.size
	if req.Offset >= size {
		resp.Data = resp.Data[:0]
		return nil
	}
	end := min(req.Offset+int64(req.Size), size)
	dst := resp.Data[:end-req.Offset]
	part := int64(h.f.part)
	for off := req.Offset; off < end; {
		idx := off / part
		p := h.want(idx)
		n := int(min(end, (idx+1)*part) - off)
		if p == nil { // behind the parts held: fetch just these bytes
			if _, err := h.f.e.getRange(h.ctx, h.f.key, off, dst[off-req.Offset:][:n]); err != nil {
				return errno(err)
			}
		} else {
			<-p.done
			if p.err != nil {
				h.mu.Lock()
				p.readers--
				h.mu.Unlock()
				fmt.Fprintf(os.Stderr, "bare: %v\n", p.err)
				return fuse.Errno(syscall.EIO)
			}
			copy(dst[off-req.Offset:][:n], p.buf[off-idx*part:])
			h.mu.Lock()
			p.readers--
			h.mu.Unlock()
		}
		off += int64(n)
	}
	resp.Data = dst
	return nil
}

// want returns part idx, counted as read until the caller uncounts it,
// having started the parts from idx on up to parallel in all, and dropped
// those more than one behind it that nobody reads; nil when idx was
// dropped already.
func (h *bareS3Handle) want(idx int64) *bareS3Part {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, p := range h.parts {
		if i < idx-1 && p.readers == 0 && isDone(p) {
			delete(h.parts, i)
			h.free = append(h.free, p.buf)
		}
	}
	if idx >= h.next {
		h.next = idx
		last := (h.f.size - 1) / int64(h.f.part)
		for ; h.next < idx+int64(h.f.parallel) && h.next <= last; h.next++ {
			h.start(h.next)
		}
	}
	p := h.parts[idx] // nil when dropped
	if p != nil {
		p.readers++
	}
	return p
}

// start starts the GET of part i; h.mu is held.
func (h *bareS3Handle) start(i int64) {
	p := &bareS3Part{done: make(chan struct{})}
	if k := len(h.free); k > 0 {
		p.buf, h.free = h.free[k-1], h.free[:k-1]
	} else {
		p.buf = make([]byte, h.f.part)
	}
	off := i * int64(h.f.part)
	p.buf = p.buf[:min(int64(h.f.part), h.f.size-off)]
	h.parts[i] = p
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		_, p.err = h.f.e.getRange(h.ctx, h.f.key, off, p.buf)
		close(p.done)
	}()
}

func isDone(p *bareS3Part) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (h *bareS3Handle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	h.cancel()
	h.wg.Wait()
	return nil
}
