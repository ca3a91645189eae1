package remote

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store"
)

// layerService implements store.LayerService over blobs/<digest>.
type layerService struct{ r *repository }

// Stat implements store.LayerService with a HEAD.
func (l *layerService) Stat(ctx context.Context, dgst digest.Digest) (store.Descriptor, error) {
	resp, _, err := l.r.s.c.do(ctx, &request{method: http.MethodHead, path: l.r.path("blobs/" + dgst.String()),
		scopes: pullScopes(l.r.name), want: []int{http.StatusOK}})
	if err != nil {
		if isNotFoundErr(err) {
			l.r.s.forget(l.r.name, dgst, false)
		}
		return store.Descriptor{}, notFound(err, store.ErrBlobUnknown, dgst.String())
	}
	if resp.ContentLength < 0 {
		return store.Descriptor{}, &store.StorageError{Op: "HEAD", Path: l.r.path("blobs/" + dgst.String()), Err: fmt.Errorf("registry sent no Content-Length")}
	}
	l.r.s.note(l.r.name, dgst, false)
	return store.Descriptor{Digest: dgst, Size: resp.ContentLength}, nil
}

// Open implements store.LayerService: each block of the cache is one
// ranged GET (the cache should be Ranged; without it a load streams from
// its offset to the end).
func (l *layerService) Open(ctx context.Context, dgst digest.Digest) (store.BlobReader, error) {
	desc, err := l.Stat(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return l.openDesc(desc), nil
}

// openDesc returns a reader over the blob desc names, whose size is known.
// Each block load is a ranged GET of its bytes, or a part of one that a
// sequential reader's loads share (blobStreams).
func (l *layerService) openDesc(desc store.Descriptor) store.BlobReader {
	s, repo, dgst := l.r.s, l.r.name, desc.Digest
	get := func(ctx context.Context, off, end int64) (io.ReadCloser, error) {
		rng := "bytes=" + strconv.FormatInt(off, 10) + "-"
		if end > 0 {
			rng += strconv.FormatInt(end-1, 10)
		}
		resp, _, err := s.c.do(ctx, &request{method: http.MethodGet, path: "/v2/" + repo + "/blobs/" + dgst.String(),
			header: http.Header{"Range": {rng}}, scopes: pullScopes(repo), want: []int{http.StatusPartialContent, http.StatusOK}, stream: true})
		if err != nil {
			return nil, notFound(err, store.ErrBlobUnknown, dgst.String())
		}
		if resp.StatusCode == http.StatusOK && off > 0 {
			// The registry ignored the range: skip to the offset.
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				resp.Body.Close()
				return nil, &store.StorageError{Op: "GET", Path: "/v2/" + repo + "/blobs/" + dgst.String(), Err: err}
			}
		}
		return resp.Body, nil
	}
	var streams *blobStreams
	var once sync.Once
	open := func(ctx context.Context, offset int64) (io.ReadCloser, error) {
		n, ok := driver.ReadLength(ctx)
		if !ok || n <= 0 || offset+n > desc.Size {
			return get(ctx, offset, 0)
		}
		// The cache opens every stream under its Reader's context, which
		// ends when the Reader closes.
		once.Do(func() { streams = newBlobStreams(ctx, get) })
		return streams.open(ctx, offset, n, desc.Size)
	}
	key := "remote:" + dgst.String() + "@" + strconv.FormatInt(desc.Size, 10)
	cr := s.cache.NewReader(key, desc.Size, open)
	return &blobReader{SectionReader: io.NewSectionReader(cr, 0, desc.Size), cr: cr, desc: desc}
}

// Lookup implements store.LayerService: the HEAD of Stat (the API keeps
// no link times).
func (l *layerService) Lookup(ctx context.Context, dgst digest.Digest) (store.LayerInfo, error) {
	desc, err := l.Stat(ctx, dgst)
	if err != nil {
		return store.LayerInfo{}, err
	}
	return store.LayerInfo{Descriptor: desc}, nil
}

// OpenFound implements store.LayerService: a reader over the blob a Lookup
// found, with no request until its first block load.
func (l *layerService) OpenFound(info store.LayerInfo) store.BlobReader {
	return l.openDesc(info.Descriptor)
}

// blobReader gives a cache.Reader the BlobReader interface.
type blobReader struct {
	*io.SectionReader
	cr   *cache.Reader
	desc store.Descriptor
}

func (b *blobReader) ReadAt(p []byte, off int64) (int, error) { return b.cr.ReadAt(p, off) }
func (b *blobReader) Size() int64                             { return b.desc.Size }
func (b *blobReader) Digest() digest.Digest                   { return b.desc.Digest }
func (b *blobReader) Close() error                            { return b.cr.Close() }

// List implements store.LayerService. The API lists no blobs: these are
// the blobs the repository's manifests reference, plus those this process
// uploaded, linked or stat'ed there.
func (l *layerService) List(ctx context.Context) ([]digest.Digest, error) {
	_, blobs, err := l.r.s.reachable(ctx, l.r.name)
	if err != nil {
		return nil, err
	}
	blobs = append(blobs, l.r.s.noted(l.r.name, false)...)
	slices.Sort(blobs)
	return slices.Compact(blobs), nil
}

// Linked implements store.LayerService; the API has no times.
func (l *layerService) Linked(ctx context.Context) ([]store.Linked, error) {
	ds, err := l.List(ctx)
	if err != nil {
		return nil, err
	}
	return linked(ds), nil
}

// LinkTime implements store.LayerService: zero (the API has no times).
func (l *layerService) LinkTime(ctx context.Context, dgst digest.Digest) (time.Time, error) {
	_, err := l.Stat(ctx, dgst)
	return time.Time{}, err
}

// Link implements store.LayerService: a cross-repository mount
// (POST ?mount=&from=) from a repository the blob was seen in; where the
// registry refuses (202: it opened an upload instead), the blob is copied
// through that upload.
func (l *layerService) Link(ctx context.Context, dgst digest.Digest) error {
	s := l.r.s
	if _, err := l.Stat(ctx, dgst); err == nil {
		return nil
	} else if !isNotFoundErr(err) {
		return err
	}
	s.mu.Lock()
	from := s.from[dgst]
	s.mu.Unlock()
	if from == "" || from == l.r.name {
		return fmt.Errorf("%w: %s (not seen in another repository of this mount to mount it from)", store.ErrBlobUnknown, dgst)
	}
	scopes := []string{pushScope(l.r.name), pullScope(from)}
	resp, _, err := s.c.do(ctx, &request{method: http.MethodPost, path: l.r.path("blobs/uploads/"),
		query:  map[string][]string{"mount": {dgst.String()}, "from": {from}},
		scopes: scopes, want: []int{http.StatusCreated, http.StatusAccepted}, body: []byte{}})
	if err != nil {
		return notFound(err, store.ErrBlobUnknown, dgst.String())
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := l.copyFrom(ctx, from, dgst, resp.Header.Get("Location"), scopes); err != nil {
			return err
		}
	}
	s.note(l.r.name, dgst, false)
	return nil
}

// copyFrom copies blob dgst from repository from into the upload session
// at location, in one PUT streamed from a GET.
func (l *layerService) copyFrom(ctx context.Context, from string, dgst digest.Digest, location string, scopes []string) error {
	s := l.r.s
	src := &layerService{&repository{s: s, name: from}}
	desc, err := src.Stat(ctx, dgst)
	if err != nil {
		return err
	}
	_, _, err = s.c.do(ctx, &request{method: http.MethodPut, path: location, query: map[string][]string{"digest": {dgst.String()}},
		header: http.Header{"Content-Type": {"application/octet-stream"}}, scopes: scopes, want: []int{http.StatusCreated, http.StatusNoContent},
		bodyFn: func() (io.Reader, int64, error) {
			resp, _, err := s.c.do(ctx, &request{method: http.MethodGet, path: "/v2/" + from + "/blobs/" + dgst.String(),
				scopes: pullScopes(from), want: []int{http.StatusOK}, stream: true})
			if err != nil {
				return nil, 0, err
			}
			return readCloserReader{resp.Body}, desc.Size, nil
		}})
	if err != nil {
		return rejectedBlob(err, dgst, desc.Size)
	}
	return nil
}

// readCloserReader hands a GET's body to the PUT, whose transport closes
// it once sent.
type readCloserReader struct{ rc io.ReadCloser }

func (r readCloserReader) Read(p []byte) (int, error) { return r.rc.Read(p) }
func (r readCloserReader) Close() error               { return r.rc.Close() }

// Unlink implements store.LayerService: DELETE of the blob in the
// repository, where the registry allows deletes.
func (l *layerService) Unlink(ctx context.Context, dgst digest.Digest) error {
	_, _, err := l.r.s.c.do(ctx, &request{method: http.MethodDelete, path: l.r.path("blobs/" + dgst.String()),
		scopes: writeScopes(l.r.name), want: []int{http.StatusAccepted, http.StatusOK, http.StatusNoContent}})
	if err != nil {
		if isStatus(err, http.StatusMethodNotAllowed) {
			return fmt.Errorf("%w: the registry does not allow deletes: %v", store.ErrUnsupported, httpErr(err))
		}
		return notFound(err, store.ErrBlobUnknown, dgst.String())
	}
	l.r.s.forget(l.r.name, dgst, false)
	return nil
}
