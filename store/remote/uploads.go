package remote

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

// errNoStateDir refuses uploads on a store made without a state directory.
var errNoStateDir = fmt.Errorf("%w: uploads need a state directory (--state-dir)", store.ErrReadOnly)

// uploadService implements store.UploadService over the API's chunked
// uploads and the local state directory.
type uploadService struct{ r *repository }

// Create implements store.UploadService: POST starts a session.
func (u *uploadService) Create(ctx context.Context, expected digest.Digest) (store.Upload, error) {
	s := u.r.s
	if s.state == nil {
		return nil, errNoStateDir
	}
	if err := expected.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", store.ErrInvalidDigest, err)
	}
	st := &uploadState{Repo: u.r.name, ID: uuid.NewString(), Expected: expected, StartedAt: time.Now().UTC()}
	if err := u.start(ctx, st); err != nil {
		return nil, err
	}
	if err := s.state.save(st); err != nil {
		return nil, err
	}
	s.sawRepo(u.r.name)
	return newUpload(ctx, u.r, st, sha256.New()), nil
}

// start opens a session for st at offset 0.
func (u *uploadService) start(ctx context.Context, st *uploadState) error {
	resp, _, err := u.r.s.c.do(ctx, &request{method: http.MethodPost, path: u.r.path("blobs/uploads/"), body: []byte{},
		scopes: repoScopes(u.r.name), want: []int{http.StatusAccepted}})
	if err != nil {
		return notFound(err, store.ErrRepositoryUnknown, u.r.name)
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return &store.StorageError{Op: "POST", Path: u.r.path("blobs/uploads/"), Err: errors.New("registry sent no Location for the upload")}
	}
	st.Location, st.Offset, st.Hash, st.Pending, st.PendingHash, st.Earlier = loc, 0, nil, 0, nil, nil
	if n, err := strconv.ParseInt(resp.Header.Get("OCI-Chunk-Min-Length"), 10, 64); err == nil && n > 0 {
		st.MinChunk = n
	}
	return nil
}

// Resume implements store.UploadService: the registry's offset (GET of the
// session) against the saved one; regfs trusts the smaller. A session the
// registry no longer has, or one ahead of anything regfs can account for,
// is started again from zero.
func (u *uploadService) Resume(ctx context.Context, id string) (store.Upload, error) {
	s := u.r.s
	if s.state == nil {
		return nil, errNoStateDir
	}
	st, err := s.state.load(id)
	if err != nil {
		return nil, err
	}
	if st.Repo != u.r.name {
		return nil, fmt.Errorf("%w: %s", store.ErrUploadUnknown, id)
	}
	remote, err := u.sessionOffset(ctx, st.Location)
	if err != nil && !isNotFoundErr(err) && !isStatus(err, http.StatusBadRequest) {
		return nil, err
	}
	h := sha256.New()
	if err != nil {
		// The session is gone (expired, purged, or its state token is
		// older than the registry's offset): start over.
		s.log.Warn("upload session lost at the registry: starting it again from zero", "repository", u.r.name, "upload", id, "expected", st.Expected, "error", err)
		if err := u.restart(ctx, st); err != nil {
			return nil, err
		}
	} else if off, state, ok := st.resumeAt(remote); ok {
		if remote.location != "" {
			st.Location = remote.location
		}
		// The registry's offset, which regfs has a hash state for: the
		// chunk being sent when regfs died (the registry took it), what
		// was saved, or an earlier chunk (the registry is behind: the
		// smaller is trusted).
		if off > 0 {
			restoreHash(h, state)
		}
		if off != st.Offset {
			s.log.Info("upload resumed at the registry's offset", "repository", u.r.name, "upload", id, "saved_offset", st.Offset, "offset", off)
		}
		st.Offset, st.Hash = off, state
		for o := range st.Earlier {
			if o >= off {
				delete(st.Earlier, o)
			}
		}
	} else {
		s.log.Warn("upload session at an offset regfs has no hash state for: starting it again from zero", "repository", u.r.name, "upload", id,
			"expected", st.Expected, "registry_offset", remote.end+1, "saved_offset", st.Offset)
		_ = u.deleteSession(ctx, st.Location)
		if err := u.restart(ctx, st); err != nil {
			return nil, err
		}
	}
	st.Pending, st.PendingHash = 0, nil
	if err := s.state.save(st); err != nil {
		return nil, err
	}
	return newUpload(ctx, u.r, st, h), nil
}

// restart opens a new session for st, from zero.
func (u *uploadService) restart(ctx context.Context, st *uploadState) error {
	return u.start(ctx, st)
}

// resumeAt picks the largest offset the registry's session may be at that
// st has a hash state for (0 needs none).
func (st *uploadState) resumeAt(remote rangeEnd) (int64, []byte, bool) {
	type cand struct {
		off   int64
		state []byte
	}
	cands := []cand{{st.Pending, st.PendingHash}, {st.Offset, st.Hash}}
	for o, h := range st.Earlier {
		cands = append(cands, cand{o, h})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].off > cands[j].off })
	for _, c := range cands {
		if c.off > 0 && remote.matches(c.off) && restoreHash(sha256.New(), c.state) {
			return c.off, c.state, true
		}
	}
	if remote.matches(0) {
		return 0, nil, true
	}
	return 0, nil, false
}

// maxEarlier is how many earlier hash states an upload keeps.
const maxEarlier = 8

// rangeEnd is a session's Range header: 0-<last byte>. "0-0" is what
// distribution sends for both an empty session and one byte.
type rangeEnd struct {
	end int64
	// location is the session's URL as the status gave it ("" if not):
	// some registries renew a state token in it.
	location string
}

func (r rangeEnd) matches(off int64) bool {
	if r.end == 0 {
		return off == 0 || off == 1
	}
	return off == r.end+1
}

// sessionOffset GETs the session's status.
func (u *uploadService) sessionOffset(ctx context.Context, location string) (rangeEnd, error) {
	resp, _, err := u.r.s.c.do(ctx, &request{method: http.MethodGet, path: location, scopes: repoScopes(u.r.name), want: []int{http.StatusNoContent, http.StatusOK}})
	if err != nil {
		return rangeEnd{}, err
	}
	rng := strings.TrimPrefix(resp.Header.Get("Range"), "bytes=")
	_, last, ok := strings.Cut(rng, "-")
	n, perr := strconv.ParseInt(last, 10, 64)
	if !ok || perr != nil {
		return rangeEnd{location: resp.Header.Get("Location")}, nil
	}
	return rangeEnd{end: n, location: resp.Header.Get("Location")}, nil
}

func (u *uploadService) deleteSession(ctx context.Context, location string) error {
	_, _, err := u.r.s.c.do(ctx, &request{method: http.MethodDelete, path: location, scopes: repoScopes(u.r.name),
		want: []int{http.StatusNoContent, http.StatusOK, http.StatusAccepted}})
	if isNotFoundErr(err) {
		return nil
	}
	return err
}

func restoreHash(h hash.Hash, state []byte) bool {
	if len(state) == 0 {
		return false
	}
	return h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state) == nil
}

func saveHash(h hash.Hash) []byte {
	b, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	return b
}

// List implements store.UploadService: the uploads with a state file.
func (u *uploadService) List(ctx context.Context) ([]store.UploadInfo, error) {
	if u.r.s.state == nil {
		return nil, nil
	}
	sts, err := u.r.s.state.list(u.r.name)
	if err != nil {
		return nil, err
	}
	out := make([]store.UploadInfo, len(sts))
	for i, st := range sts {
		out[i] = u.r.s.state.info(st)
	}
	return out, nil
}

// info describes st; ModTime is its file's.
func (d *stateDir) info(st *uploadState) store.UploadInfo {
	in := store.UploadInfo{ID: st.ID, Expected: st.Expected, Size: st.Offset, StartedAt: st.StartedAt, ModTime: st.StartedAt}
	if fi, err := os.Stat(d.path(st.ID)); err == nil {
		in.ModTime = fi.ModTime()
	}
	return in
}

// Stat implements store.UploadService.
func (u *uploadService) Stat(ctx context.Context, id string) (store.UploadInfo, error) {
	if u.r.s.state == nil {
		return store.UploadInfo{}, fmt.Errorf("%w: %s", store.ErrUploadUnknown, id)
	}
	st, err := u.r.s.state.load(id)
	if err != nil {
		return store.UploadInfo{}, err
	}
	if st.Repo != u.r.name {
		return store.UploadInfo{}, fmt.Errorf("%w: %s", store.ErrUploadUnknown, id)
	}
	return u.r.s.state.info(st), nil
}

// Cancel implements store.UploadService: DELETE of the session.
func (u *uploadService) Cancel(ctx context.Context, id string) error {
	if u.r.s.state == nil {
		return fmt.Errorf("%w: %s", store.ErrUploadUnknown, id)
	}
	st, err := u.r.s.state.load(id)
	if err != nil {
		return err
	}
	if err := u.deleteSession(ctx, st.Location); err != nil && !isStatus(err, http.StatusBadRequest) {
		return err
	}
	return u.r.s.state.remove(id)
}

// upload is one open upload. A write only copies into the chunk being
// filled; a full chunk (the store's chunk size, at least the registry's
// minimum) is hashed by one goroutine and PATCHed by another while the next
// fills, so the FUSE write that fills it does not wait for the hash.
// Commit sends the rest with the final PUT.
type upload struct {
	r   *repository
	ctx context.Context
	svc *uploadService

	// Fields below belong to the caller (not safe for concurrent use).
	st *uploadState // offsets in it are the sender's once started
	// h is the hash of the bytes handed to the hasher; the hasher owns it
	// while chunks are queued (hashed tells when none is).
	h     hash.Hash
	size  int64
	buf   []byte
	chunk int
	// id and expected are the state's, copied: the sender rewrites st.
	id       string
	expected digest.Digest
	// minChunk is the registry's OCI-Chunk-Min-Length (0: none).
	minChunk int64
	sent     int64 // bytes handed to the sender
	done     bool

	hashq chan chunk // chunks to hash, then to queue
	// spare holds a chunk buffer the registry took, for the next chunk:
	// a fresh 16 MiB buffer costs a page fault per 4 KiB and garbage.
	spare  chan []byte
	hashed sync.WaitGroup // the chunks handed to the hasher and not yet hashed
	queue  chan chunk
	wg     sync.WaitGroup // the chunks queued and not yet sent
	mu     sync.Mutex
	err    error // the sender's failure; guarded by mu
	stop   chan struct{}
	ended  chan struct{}
}

type chunk struct {
	data []byte
	off  int64
	hash []byte // the hash state after data
}

func newUpload(ctx context.Context, r *repository, st *uploadState, h hash.Hash) *upload {
	size := max(int64(r.s.chunk), st.MinChunk)
	up := &upload{r: r, ctx: ctx, svc: &uploadService{r}, st: st, h: h, size: st.Offset, sent: st.Offset, chunk: int(size), minChunk: st.MinChunk, id: st.ID, expected: st.Expected,
		hashq: make(chan chunk), spare: make(chan []byte, 1), queue: make(chan chunk, 1), stop: make(chan struct{}), ended: make(chan struct{})}
	go up.hasher()
	go up.sender()
	return up
}

func (up *upload) ID() string              { return up.id }
func (up *upload) Expected() digest.Digest { return up.expected }
func (up *upload) Size() int64             { return up.size }

func (up *upload) failure() error {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.err
}

// WriteAt implements store.Upload.
func (up *upload) WriteAt(p []byte, off int64) (int, error) {
	if off != up.size {
		if err := up.failure(); err != nil && off > up.size {
			return 0, err
		}
		return 0, fmt.Errorf("%w: at %d, the upload has %d bytes", store.ErrInvalidOffset, off, up.size)
	}
	return up.Write(p)
}

// Write implements store.Upload: the bytes are buffered; a full chunk goes
// to the hasher, then the sender.
func (up *upload) Write(p []byte) (int, error) {
	if up.done {
		return 0, fmt.Errorf("%w: upload %s is finished", store.ErrUploadUnknown, up.id)
	}
	if err := up.failure(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		if up.buf == nil {
			select {
			case b := <-up.spare:
				up.buf = b[:0]
			default:
				up.buf = make([]byte, 0, up.chunk)
			}
		}
		k := min(len(p), up.chunk-len(up.buf))
		up.buf = append(up.buf, p[:k]...)
		up.size += int64(k)
		p = p[k:]
		if len(up.buf) == up.chunk {
			up.enqueue()
		}
	}
	return n, nil
}

// enqueue hands the buffer to the hasher, which hands it to the sender.
func (up *upload) enqueue() {
	if len(up.buf) == 0 {
		return
	}
	c := chunk{data: up.buf, off: up.sent}
	up.sent += int64(len(up.buf))
	up.buf = nil
	up.wg.Add(1)
	up.hashed.Add(1)
	up.hashq <- c
}

// hasher adds the queued chunks to the hash, in order, records the hash
// state after each (what a resume at its end restores) and queues it for
// the sender.
func (up *upload) hasher() {
	for {
		select {
		case <-up.stop:
			return
		case c := <-up.hashq:
			up.h.Write(c.data)
			c.hash = saveHash(up.h)
			up.hashed.Done()
			select {
			case up.queue <- c:
			case <-up.stop:
				up.wg.Done()
				return
			}
		}
	}
}

// digest is the digest of every byte written: the hasher's, after it
// hashed what is queued, with the buffer added (to a copy, so that more
// bytes may follow a mismatch).
func (up *upload) digest() digest.Digest {
	up.hashed.Wait()
	h := sha256.New()
	restoreHash(h, saveHash(up.h))
	h.Write(up.buf)
	return digest.NewDigest(digest.SHA256, h)
}

// sender PATCHes the queued chunks in order. After a failure it drops the
// rest (they are counted as not stored; Size falls back on the next call).
func (up *upload) sender() {
	defer close(up.ended)
	for {
		select {
		case <-up.stop:
			return
		case c := <-up.queue:
			if up.failure() == nil {
				if err := up.patch(c); err != nil {
					up.mu.Lock()
					up.err = err
					up.mu.Unlock()
				} else if cap(c.data) == up.chunk {
					// Sent and answered: the transport is done with it.
					select {
					case up.spare <- c.data:
					default:
					}
				}
			}
			up.wg.Done()
		}
	}
}

// patch sends one chunk: the state file first records it as pending, then
// the PATCH, then the file records it as acknowledged.
func (up *upload) patch(c chunk) error {
	s := up.r.s
	up.mu.Lock()
	st := *up.st
	up.mu.Unlock()
	st.Pending, st.PendingHash = c.off+int64(len(c.data)), c.hash
	if err := s.state.save(&st); err != nil {
		return err
	}
	resp, _, err := s.c.do(up.ctx, &request{method: http.MethodPatch, path: st.Location, body: c.data,
		header: http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {contentRange(c.off, int64(len(c.data)))}},
		scopes: repoScopes(up.r.name), want: []int{http.StatusAccepted, http.StatusNoContent}})
	if err != nil {
		if isStatus(err, http.StatusRequestedRangeNotSatisfiable) {
			// A retried PATCH the registry had taken: ask where it is.
			if r, serr := up.svc.sessionOffset(up.ctx, st.Location); serr == nil && r.matches(st.Pending) {
				err = nil
			}
		}
		if err != nil {
			return notFound(err, store.ErrUploadUnknown, up.id)
		}
	}
	if resp != nil {
		if loc := resp.Header.Get("Location"); loc != "" {
			st.Location = loc
		}
	}
	if st.Offset > 0 && len(st.Hash) > 0 {
		earlier := make(map[int64][]byte, maxEarlier)
		keep := []int64{st.Offset}
		for o := range st.Earlier {
			keep = append(keep, o)
		}
		sort.Slice(keep, func(i, j int) bool { return keep[i] > keep[j] })
		for _, o := range keep[:min(len(keep), maxEarlier)] {
			if o == st.Offset {
				earlier[o] = st.Hash
			} else {
				earlier[o] = st.Earlier[o]
			}
		}
		st.Earlier = earlier
	}
	st.Offset, st.Hash, st.Pending, st.PendingHash = st.Pending, c.hash, 0, nil
	up.mu.Lock()
	*up.st = st
	up.mu.Unlock()
	return s.state.save(&st)
}

// drain sends what is buffered (when the registry takes a chunk that
// small) and waits for the sender.
func (up *upload) drain(final bool) error {
	if !final && int64(len(up.buf)) >= up.minChunk {
		up.enqueue()
	}
	up.wg.Wait()
	if err := up.failure(); err != nil {
		up.mu.Lock()
		up.size, up.sent, up.buf = up.st.Offset, up.st.Offset, nil
		up.mu.Unlock()
		return err
	}
	return nil
}

// Flush implements store.Upload.
func (up *upload) Flush(ctx context.Context) error {
	if up.done {
		return nil
	}
	return up.drain(false)
}

// Commit implements store.Upload: the digest is checked here first; on a
// match the rest goes with the final PUT ?digest=.
func (up *upload) Commit(ctx context.Context) (store.Descriptor, error) {
	if up.done {
		return store.Descriptor{}, fmt.Errorf("%w: upload %s is finished", store.ErrUploadUnknown, up.id)
	}
	if err := up.failure(); err != nil {
		_ = up.drain(true)
		return store.Descriptor{}, err
	}
	got := up.digest()
	if got != up.expected {
		return store.Descriptor{}, &store.DigestMismatchError{Expected: up.expected, Actual: got, Size: up.size}
	}
	if err := up.drain(true); err != nil {
		return store.Descriptor{}, err
	}
	s := up.r.s
	rest := up.buf
	if rest == nil {
		rest = []byte{}
	}
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	if len(rest) > 0 {
		hdr.Set("Content-Range", contentRange(up.sent, int64(len(rest))))
	}
	up.mu.Lock()
	location := up.st.Location
	up.mu.Unlock()
	_, _, err := s.c.do(ctx, &request{method: http.MethodPut, path: location, query: map[string][]string{"digest": {up.expected.String()}},
		body: rest, header: hdr, scopes: repoScopes(up.r.name), want: []int{http.StatusCreated, http.StatusNoContent}})
	if err != nil {
		return store.Descriptor{}, rejectedBlob(notFound(err, store.ErrUploadUnknown, up.id), up.expected, up.size)
	}
	up.finish()
	if err := s.state.remove(up.id); err != nil {
		s.log.Warn("removing a committed upload's state", "error", err)
	}
	s.note(up.r.name, up.expected, false)
	return store.Descriptor{Digest: up.expected, Size: up.size}, nil
}

// finish stops the sender.
func (up *upload) finish() {
	if up.done {
		return
	}
	up.done = true
	close(up.stop)
	<-up.ended
}

// Close implements store.Upload: what the registry takes is sent and the
// state saved; bytes short of its minimum chunk are dropped (the upload
// resumes before them).
func (up *upload) Close() error {
	if up.done {
		return nil
	}
	err := up.drain(false)
	up.finish()
	return err
}

// Cancel implements store.Upload: DELETE of the session.
func (up *upload) Cancel(ctx context.Context) error {
	if !up.done {
		up.wg.Wait()
		up.finish()
	}
	return up.svc.Cancel(ctx, up.id)
}
