package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

// The bare remote file system (R1's baseline): the least a bazil.org/fuse
// file system can do to serve one blob of a registry. Its one file, "blob",
// is read through one GET of the whole blob per open file (the request curl
// makes), each FUSE read copied straight from the response body into the
// kernel's buffer; a read that is not where the stream is waits briefly for
// the reads before it, and is otherwise a ranged GET of its own bytes. It
// runs as a child process of this program, as the bare passthrough does
// (bare.go), selected by its own environment variables.
const (
	bareRemoteEnvMount = "REGFS_BENCH_BAREREMOTE_MOUNT"
	// bareRemoteEnvURL is the blob's URL (http://HOST/v2/REPO/blobs/DIGEST).
	bareRemoteEnvURL = "REGFS_BENCH_BAREREMOTE_URL"
	// bareRemoteEnvSize is the blob's size in bytes.
	bareRemoteEnvSize = "REGFS_BENCH_BAREREMOTE_SIZE"
)

// bareRemoteFile is the name of the blob in the bare remote file system.
const bareRemoteFile = "blob"

// bareRemoteWait is how long a read ahead of the stream waits for the reads
// before it (FUSE serves concurrent reads in any order) before fetching its
// bytes with a GET of its own.
const bareRemoteWait = 200 * time.Millisecond

// init serves the bare remote file system when this program (or its test
// binary) was started as one; main.go's selector is the bare passthrough's.
func init() {
	if os.Getenv(bareRemoteEnvMount) != "" {
		os.Exit(bareRemoteMain())
	}
}

func bareRemoteMain() int {
	size, err := strconv.ParseInt(os.Getenv(bareRemoteEnvSize), 10, 64)
	if err == nil {
		err = serveBareRemote(os.Getenv(bareRemoteEnvMount), os.Getenv(bareRemoteEnvURL), size)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bare remote: %v\n", err)
		return 1
	}
	return 0
}

func serveBareRemote(mnt, url string, size int64) error {
	// One connection per stream, kept between requests, and no transparent
	// gzip (blobs are compressed already), as curl.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}}
	return serveBareFS(mnt, bareOneFile{name: bareRemoteFile, file: bareRemoteBlob{client: client, url: url, size: size}})
}

var (
	_ fs.NodeOpener     = bareRemoteBlob{}
	_ fs.HandleReader   = (*bareRemoteHandle)(nil)
	_ fs.HandleReleaser = (*bareRemoteHandle)(nil)
)

type bareRemoteBlob struct {
	bareNoXattr
	client *http.Client
	url    string
	size   int64
}

func (f bareRemoteBlob) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = 2
	a.Mode = 0o444
	a.Size = uint64(f.size)
	a.Valid = bareValid
	return nil
}

func (f bareRemoteBlob) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsReadOnly() {
		return nil, fuse.Errno(syscall.EROFS)
	}
	resp.Flags |= fuse.OpenKeepCache
	h := &bareRemoteHandle{f: f}
	h.moved = sync.NewCond(&h.mu)
	return h, nil
}

// bareRemoteHandle is an open file: its stream (a GET from offset 0 to the
// end, opened by the read at 0) and where the stream is.
type bareRemoteHandle struct {
	f     bareRemoteBlob
	mu    sync.Mutex
	moved *sync.Cond // broadcast when pos moves or the stream ends
	body  io.ReadCloser
	pos   int64
	busy  bool // a read is copying from body; guarded by mu
	done  bool // the stream failed or was closed; guarded by mu
}

func (h *bareRemoteHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	n := int(min(int64(req.Size), h.f.size-req.Offset))
	if n <= 0 {
		resp.Data = resp.Data[:0]
		return nil
	}
	buf := resp.Data[:n]
	if ok, err := h.fromStream(buf, req.Offset); ok {
		resp.Data = buf
		return err
	}
	if err := h.ranged(ctx, buf, req.Offset); err != nil {
		return fuse.Errno(syscall.EIO)
	}
	resp.Data = buf
	return nil
}

// bareRemoteMaxSkip is the largest gap a stream skips (reads and
// discards) for a read whose predecessors never came.
const bareRemoteMaxSkip = 16 << 20

// fromStream reads buf at off from the stream (opened by the read at its
// start), waiting a little for the reads before off; it reports false when
// the stream cannot serve it.
func (h *bareRemoteHandle) fromStream(buf []byte, off int64) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	deadline := time.Now().Add(bareRemoteWait)
	for !h.done && (h.busy || off > h.pos) && time.Now().Before(deadline) {
		// sync.Cond has no timeout: a timer wakes the waiters.
		t := time.AfterFunc(time.Until(deadline), h.moved.Broadcast)
		h.moved.Wait()
		t.Stop()
	}
	if h.done || h.busy || off < h.pos || off-h.pos > bareRemoteMaxSkip {
		return false, nil
	}
	h.busy = true
	defer func() {
		h.busy = false
		h.moved.Broadcast()
	}()
	if h.body == nil {
		h.mu.Unlock()
		resp, err := h.f.client.Get(h.f.url)
		h.mu.Lock()
		if err != nil {
			h.done = true
			return false, nil
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			h.done = true
			return false, nil
		}
		h.body = resp.Body
	}
	body, gap := h.body, off-h.pos
	h.mu.Unlock()
	_, err := io.CopyN(io.Discard, body, gap)
	m := 0
	if err == nil {
		m, err = io.ReadFull(body, buf)
	}
	h.mu.Lock()
	h.pos += gap + int64(m)
	if err != nil {
		h.done = true
		body.Close()
		return true, fuse.Errno(syscall.EIO)
	}
	return true, nil
}

// ranged reads buf at off with a GET of just those bytes.
func (h *bareRemoteHandle) ranged(ctx context.Context, buf []byte, off int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.f.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+int64(len(buf))-1, 10))
	resp, err := h.f.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return errors.New(resp.Status)
	}
	_, err = io.ReadFull(resp.Body, buf)
	return err
}

func (h *bareRemoteHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.body != nil && !h.done {
		h.body.Close()
	}
	h.done = true
	h.moved.Broadcast()
	return nil
}

// startBareRemote mounts the bare remote file system serving the blob at
// url, size bytes long.
func (b *bench) startBareRemote(url string, size int64) (*mount, error) {
	mnt := b.newMountpoint("bare-remote")
	return b.mounts.start("bare", mnt, []string{b.self},
		[]string{bareRemoteEnvMount + "=" + mnt, bareRemoteEnvURL + "=" + url, bareRemoteEnvSize + "=" + strconv.FormatInt(size, 10)}, bareReady)
}
