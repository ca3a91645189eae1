package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver"
)

// layerService is the LayerService of one repository.
type layerService struct {
	repo *repository
}

// Stat implements LayerService: it stats the link and the blob's data (see
// stat); the blob itself is never read.
func (l *layerService) Stat(ctx context.Context, dgst digest.Digest) (Descriptor, error) {
	info, err := l.stat(ctx, dgst, 0)
	return info.Descriptor, err
}

// Lookup implements LayerService.
func (l *layerService) Lookup(ctx context.Context, dgst digest.Digest) (LayerInfo, error) {
	return l.stat(ctx, dgst, 0)
}

// LookupFirst implements FirstBytesLookuper.
func (l *layerService) LookupFirst(ctx context.Context, dgst digest.Digest, n int) (LayerInfo, error) {
	return l.stat(ctx, dgst, n)
}

// stat finds the blob dgst linked here: the size of its data, the link's
// modification time and the blob whose data is served, and with first > 0
// the data's first bytes where the driver tells the size with them (see
// blobFirst). The link and the data are asked for at once, so that on a
// remote driver a lookup waits for one round trip, not two. A link of 71
// bytes is not read: in the registry's layout a layer's link names its own
// directory's digest (fsck reports one that does not as a link-mismatch),
// and a listing takes it for that digest without reading it either. A
// link of any other size is read, with readLink's re-reads of a link being
// rewritten, and, like the registry, regfs then serves what it names.
func (l *layerService) stat(ctx context.Context, dgst digest.Digest, first int) (LayerInfo, error) {
	linkPath, err := pathFor(layerLinkPathSpec{name: l.repo.name, digest: dgst})
	if err != nil {
		return LayerInfo{}, err
	}
	type sized struct {
		size    int64
		first   []byte
		forgets int64
		err     error
	}
	data := make(chan sized, 1)
	go func() {
		var ds sized
		ds.forgets = l.repo.s.forgets.Load()
		if first > 0 {
			ds.first, ds.size, ds.err = l.repo.s.blobFirst(ctx, dgst, first)
		} else {
			ds.size, ds.err = l.repo.s.blobSize(ctx, dgst)
		}
		data <- ds
	}()
	fi, err := l.repo.s.driver.Stat(ctx, linkPath)
	ds := <-data
	notLinked := func(err error) error {
		if isNotFound(err) {
			return fmt.Errorf("%w: %s not linked in %s", ErrBlobUnknown, dgst, l.repo.name)
		}
		return err
	}
	if err != nil {
		return LayerInfo{}, notLinked(err)
	}
	target := dgst
	if fi.IsDir || fi.Size != int64(linkSize) {
		if target, err = l.repo.s.readLink(ctx, linkPath); err != nil {
			return LayerInfo{}, notLinked(err)
		}
		if target != dgst {
			n, err := l.repo.s.blobSize(ctx, target)
			ds = sized{size: n, err: err}
		}
	}
	if ds.err != nil {
		if errors.Is(ds.err, ErrBlobUnknown) {
			// Deleted by another process (a registry's gc): readers
			// still open on it must not be served its cached blocks.
			l.repo.s.forgetBlob(target)
		}
		return LayerInfo{}, ds.err
	}
	return LayerInfo{
		Descriptor: Descriptor{Digest: dgst, Size: ds.size},
		ModTime:    fi.ModTime,
		target:     target,
		first:      ds.first,
		forgets:    ds.forgets,
	}, nil
}

// blobFirst returns the first n bytes of a blob's data (all of it if it
// is shorter) and its size, in one request where the driver tells the size
// with the bytes (driver.WithSizeReport). Where it does not, it states the
// data as blobSize does and returns no bytes, and the store remembers that
// the driver does not, so that only its first lookup (on a local driver,
// where a request costs little) makes the two requests one after the
// other. ErrBlobUnknown when the data is missing.
func (s *storage) blobFirst(ctx context.Context, dgst digest.Digest, n int) ([]byte, int64, error) {
	if known := s.sizeReports.Load(); known >= 0 {
		b, size, err := s.readFirst(ctx, dgst, n)
		switch {
		case err == nil && size >= 0:
			return b, size, nil
		case err != nil && (known > 0 || errors.Is(err, ErrBlobUnknown)):
			return nil, 0, err
		}
		// A driver not known to tell sizes whose Reader failed (a local
		// driver's on a directory, say): its Stat answers as ever.
	}
	size, err := s.blobSize(ctx, dgst)
	return nil, size, err
}

// readFirst reads the first n bytes of a blob's data with the data's size
// if the driver tells it (-1 if it does not, and then no bytes), and
// records in sizeReports whether it did.
func (s *storage) readFirst(ctx context.Context, dgst digest.Digest, n int) ([]byte, int64, error) {
	p, err := pathFor(blobDataPathSpec{digest: dgst})
	if err != nil {
		return nil, 0, err
	}
	var size atomic.Int64
	size.Store(-1)
	rctx := driver.WithSizeReport(driver.WithReadLength(ctx, int64(n)), func(n int64) { size.Store(n) })
	rc, err := s.driver.Reader(rctx, p, 0)
	if err != nil {
		if isNotFound(err) {
			return nil, 0, fmt.Errorf("%w: data of %s missing", ErrBlobUnknown, dgst)
		}
		return nil, 0, err
	}
	defer rc.Close()
	total := size.Load()
	if total < 0 {
		s.sizeReports.Store(-1)
		return nil, -1, nil
	}
	s.sizeReports.Store(1)
	b := make([]byte, min(int64(n), total))
	if _, err := io.ReadFull(rc, b); err != nil {
		// The size stands; the reads go to the block cache, which
		// retries and reports a blob gone since.
		return nil, total, nil
	}
	return b, total, nil
}

// blobSize stats a blob's data; ErrBlobUnknown when it is missing.
func (s *storage) blobSize(ctx context.Context, dgst digest.Digest) (int64, error) {
	p, err := pathFor(blobDataPathSpec{digest: dgst})
	if err != nil {
		return 0, err
	}
	fi, err := s.driver.Stat(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return 0, fmt.Errorf("%w: data of %s missing", ErrBlobUnknown, dgst)
		}
		return 0, err
	}
	if fi.IsDir {
		return 0, fmt.Errorf("%w: data of %s is a directory", ErrBlobUnknown, dgst)
	}
	return fi.Size, nil
}

// Linked implements LayerService.
func (l *layerService) Linked(ctx context.Context) ([]Linked, error) {
	return l.repo.s.listLinkedTimes(ctx, mustPath(layersPathSpec{name: l.repo.name}))
}

// LinkTime implements LayerService.
func (l *layerService) LinkTime(ctx context.Context, dgst digest.Digest) (time.Time, error) {
	p, err := pathFor(layerLinkPathSpec{name: l.repo.name, digest: dgst})
	if err != nil {
		return time.Time{}, err
	}
	t, err := l.repo.s.linkTime(ctx, p)
	if isNotFound(err) {
		return t, fmt.Errorf("%w: %s not linked in %s", ErrBlobUnknown, dgst, l.repo.name)
	}
	return t, err
}

// Open implements LayerService.
func (l *layerService) Open(ctx context.Context, dgst digest.Digest) (BlobReader, error) {
	info, err := l.stat(ctx, dgst, 0)
	if err != nil {
		return nil, err
	}
	return l.OpenFound(info), nil
}

// OpenFound implements LayerService.
func (l *layerService) OpenFound(info LayerInfo) BlobReader {
	target := info.target
	if target == "" {
		target = info.Digest
	}
	r := l.repo.s.openBlob(info.Descriptor, target)
	if len(info.first) > 0 {
		r.first, r.forgets = info.first, info.forgets
	}
	return r
}

// openBlob returns a reader over the data of blob target through the shared
// block cache, keyed by the digest (a blob's bytes are the same in every
// repository), the size and the times this store replaced a damaged copy
// of it: blocks read from the damaged copy must not be served as blocks of
// the verified one.
func (s *storage) openBlob(desc Descriptor, target digest.Digest) *blobReader {
	p := mustPath(blobDataPathSpec{digest: target})
	d := s.driver
	open := func(ctx context.Context, offset int64) (io.ReadCloser, error) {
		rc, err := d.Reader(ctx, p, offset)
		if isNotFound(err) {
			// Deleted behind the cache's back: no reader of it may be
			// served what the cache holds of it any more.
			s.forgetBlob(target)
		}
		return rc, err
	}
	key := target.String() + "@" + strconv.FormatInt(desc.Size, 10)
	if g, ok := s.healed.Load(target); ok {
		key += "#" + strconv.FormatInt(g.(*atomic.Int64).Load(), 10)
	}
	b := &blobReader{s: s, cr: s.cache.NewReader(key, desc.Size, open), desc: desc}
	b.SectionReader = io.NewSectionReader(b, 0, desc.Size)
	return b
}

// replaced records that the blob dgst was replaced by verified bytes, so
// that readers opened from now on do not get blocks cached from the
// damaged copy.
func (s *storage) replaced(dgst digest.Digest) {
	s.forgets.Add(1)
	g, _ := s.healed.LoadOrStore(dgst, new(atomic.Int64))
	g.(*atomic.Int64).Add(1)
}

// blobReader gives a cache.Reader the BlobReader interface. ReadAt goes
// straight to the cache (safe for concurrent use), but for a read within
// the first bytes a lookup fetched; Read and Seek come from the
// SectionReader's cursor.
type blobReader struct {
	*io.SectionReader
	s    *storage
	cr   *cache.Reader
	desc Descriptor
	// first are the blob's first bytes, fetched by the lookup that found
	// it (LayerInfo.first), served while s.forgets is still forgets. Never
	// changed after OpenFound.
	first   []byte
	forgets int64
}

// ReadAt implements io.ReaderAt.
func (b *blobReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= 0 && off < int64(len(b.first)) && b.s.forgets.Load() == b.forgets {
		q, atEOF := p, error(nil)
		if rest := b.desc.Size - off; int64(len(q)) > rest {
			q, atEOF = q[:rest], io.EOF
		}
		if off+int64(len(q)) <= int64(len(b.first)) {
			return copy(q, b.first[off:]), atEOF
		}
	}
	return b.cr.ReadAt(p, off)
}

func (b *blobReader) Size() int64           { return b.desc.Size }
func (b *blobReader) Digest() digest.Digest { return b.desc.Digest }
func (b *blobReader) Close() error          { return b.cr.Close() }

// Lend reads as ReadAt does, sharing the cache's bytes where it can
// (cache.Reader.Lend).
func (b *blobReader) Lend(p []byte, off int64) ([]byte, func(), error) { return b.cr.Lend(p, off) }

// List implements LayerService.
func (l *layerService) List(ctx context.Context) ([]digest.Digest, error) {
	return l.repo.s.listLinked(ctx, mustPath(layersPathSpec{name: l.repo.name}))
}

// Link implements LayerService. The blob's data must exist (it is written
// before any link to it); the link's creation makes the directory a
// repository if it was not one.
func (l *layerService) Link(ctx context.Context, dgst digest.Digest) error {
	linkPath, err := pathFor(layerLinkPathSpec{name: l.repo.name, digest: dgst})
	if err != nil {
		return err
	}
	defer l.repo.s.writes.hold(dgst)()
	if _, err := l.repo.s.blobSize(ctx, dgst); err != nil {
		return err
	}
	if err := l.repo.s.writeLink(ctx, linkPath, dgst); err != nil {
		return err
	}
	l.repo.s.log.Debug("blob linked", "repository", l.repo.name, "digest", dgst)
	return nil
}

// Unlink implements LayerService.
func (l *layerService) Unlink(ctx context.Context, dgst digest.Digest) error {
	dir, err := pathFor(layerPathSpec{name: l.repo.name, digest: dgst})
	if err != nil {
		return err
	}
	if err := l.repo.s.driver.Delete(ctx, dir); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: %s not linked in %s", ErrBlobUnknown, dgst, l.repo.name)
		}
		return err
	}
	l.repo.s.log.Debug("blob unlinked", "repository", l.repo.name, "digest", dgst)
	return nil
}
