package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// loadedLayers is how many layer indexes an Indexer keeps in memory.
const loadedLayers = 256

// idleReaders is how many paused decoders an Indexer keeps (about 400 KiB
// each), so that reads that continue where an earlier one stopped (a
// sequential cat, read in kernel-sized pieces) do not start again from a
// checkpoint.
const idleReaders = 16

// Indexer builds, keeps and loads layer indexes.
type Indexer struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	loaded   *simplelru.LRU[digest.Digest, *Layer] // guarded by mu
	building map[digest.Digest]*buildCall          // guarded by mu
	files    map[string]*indexFile                 // index files in Dir by name; guarded by mu
	total    int64                                 // their sizes added up; guarded by mu

	idleMu sync.Mutex
	idle   []idleReader // paused decoders, most recent last; guarded by idleMu

	builds atomic.Int64 // completed builds, for tests
}

type idleReader struct {
	l *Layer
	r streamReader
}

// indexFile is one file of Dir, for the LRU bound.
type indexFile struct {
	size    int64
	lastUse time.Time
}

// buildCall is one load-or-build of a layer that callers wait for.
type buildCall struct {
	done    chan struct{}
	layer   *Layer
	err     error
	waiters int // guarded by Indexer.mu
	cancel  context.CancelFunc
}

// NewIndexer returns an Indexer; it creates opts.Dir if needed and removes
// temporary files an interrupted build left there.
func NewIndexer(opts Options) (*Indexer, error) {
	if opts.Blobs == nil {
		return nil, errors.New("image: Options.Blobs is nil")
	}
	ix := &Indexer{
		opts:     opts,
		log:      opts.Log,
		building: map[digest.Digest]*buildCall{},
		files:    map[string]*indexFile{},
	}
	if ix.log == nil {
		ix.log = slog.Default()
	}
	ix.loaded, _ = simplelru.NewLRU[digest.Digest, *Layer](loadedLayers, nil)
	if opts.Dir == "" {
		return ix, nil
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("image: index directory: %w", err)
	}
	des, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("image: index directory: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		switch {
		case strings.HasSuffix(name, ".idx"):
			ix.files[name] = &indexFile{size: fi.Size(), lastUse: fi.ModTime()}
			ix.total += fi.Size()
		case strings.HasPrefix(name, ".tmp-") && time.Since(fi.ModTime()) > time.Minute:
			// Another process may be writing a fresh one; an old one
			// is what an interrupted build left.
			os.Remove(filepath.Join(opts.Dir, name))
		}
	}
	ix.mu.Lock()
	ix.evictLocked("")
	ix.mu.Unlock()
	return ix, nil
}

// Close closes the paused decoders (and the blobs they hold). Layers and
// trees stay readable; a read after Close starts a new decoder.
func (ix *Indexer) Close() error {
	ix.idleMu.Lock()
	idle := ix.idle
	ix.idle = nil
	ix.idleMu.Unlock()
	for _, e := range idle {
		e.r.close()
	}
	return nil
}

func fileName(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".idx"
}

// Layer returns the index of the layer desc names: loaded from Dir when a
// sound index file is there, else built by reading the blob once (one build
// however many callers ask at once) and saved. A caller whose ctx ends stops
// waiting; the build stops when no caller waits for it any more.
func (ix *Indexer) Layer(ctx context.Context, desc ocispec.Descriptor) (*Layer, error) {
	comp, err := CompressionOf(desc.MediaType)
	if err != nil {
		return nil, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("image: layer digest: %w", err)
	}
	d := desc.Digest
	ix.mu.Lock()
	if l, ok := ix.loaded.Get(d); ok {
		ix.mu.Unlock()
		return l, nil
	}
	c, ok := ix.building[d]
	if !ok {
		bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &buildCall{done: make(chan struct{}), cancel: cancel}
		ix.building[d] = c
		go ix.run(bctx, c, d, comp)
	}
	c.waiters++
	ix.mu.Unlock()
	select {
	case <-c.done:
		return c.layer, c.err
	case <-ctx.Done():
		ix.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			c.cancel()
			if ix.building[d] == c {
				delete(ix.building, d)
			}
		}
		ix.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (ix *Indexer) run(ctx context.Context, c *buildCall, d digest.Digest, comp Compression) {
	defer c.cancel()
	l, err := ix.loadOrBuild(ctx, d, comp)
	ix.mu.Lock()
	if ix.building[d] == c {
		delete(ix.building, d)
	}
	if err == nil {
		ix.loaded.Add(d, l)
	}
	ix.mu.Unlock()
	c.layer, c.err = l, err
	close(c.done)
}

func (ix *Indexer) loadOrBuild(ctx context.Context, d digest.Digest, comp Compression) (*Layer, error) {
	name := fileName(d)
	if ix.opts.Dir != "" {
		p := filepath.Join(ix.opts.Dir, name)
		idx, f, err := readIndex(p)
		if err == nil && idx.digest != d {
			f.Close()
			err = fmt.Errorf("%w: it indexes %s", ErrIndexDamaged, idx.digest)
		}
		if err == nil {
			ix.used(name)
			return ix.newLayer(idx, f), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			ix.log.Warn("image: rebuilding a layer index", "layer", d, "file", p, "err", err)
			ix.forget(name)
		}
	}
	blob, err := ix.opts.Blobs.Open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("image: layer %s: %w", d, err)
	}
	idx, err := buildIndex(ctx, blob, d, comp)
	blob.Close()
	if err != nil {
		return nil, err
	}
	ix.builds.Add(1)
	if ix.opts.Dir == "" {
		return ix.newLayer(idx, nil), nil
	}
	f, err := ix.save(idx, name)
	if err != nil {
		ix.log.Warn("image: cannot save a layer index; it is kept in memory", "layer", d, "err", err)
		return ix.newLayer(idx, nil), nil
	}
	if f != nil {
		// The windows are read from the file from now on.
		for i := range idx.cps {
			idx.cps[i].win = nil
		}
	}
	return ix.newLayer(idx, f), nil
}

// save writes idx to a temporary file and renames it into place, then
// bounds Dir. It returns the file open for reading its windows, or nil
// when the file was over the bound by itself and was removed.
func (ix *Indexer) save(idx *index, name string) (*os.File, error) {
	tmp, err := os.CreateTemp(ix.opts.Dir, ".tmp-"+name+"-")
	if err != nil {
		return nil, err
	}
	err = writeIndex(tmp, idx)
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	final := filepath.Join(ix.opts.Dir, name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	st, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return nil, err
	}
	ix.mu.Lock()
	if old, ok := ix.files[name]; ok {
		ix.total -= old.size
	}
	ix.files[name] = &indexFile{size: st.Size(), lastUse: time.Now()}
	ix.total += st.Size()
	ix.evictLocked(name)
	_, kept := ix.files[name]
	ix.mu.Unlock()
	if !kept {
		tmp.Close()
		return nil, nil
	}
	return tmp, nil
}

// used marks an index file as just used, in memory and in its mtime (the
// order the next process starts from).
func (ix *Indexer) used(name string) {
	now := time.Now()
	ix.mu.Lock()
	if f, ok := ix.files[name]; ok {
		f.lastUse = now
	} else if st, err := os.Stat(filepath.Join(ix.opts.Dir, name)); err == nil {
		ix.files[name] = &indexFile{size: st.Size(), lastUse: now}
		ix.total += st.Size()
		ix.evictLocked(name)
	}
	ix.mu.Unlock()
	os.Chtimes(filepath.Join(ix.opts.Dir, name), now, now)
}

// forget removes an index file that is damaged.
func (ix *Indexer) forget(name string) {
	ix.mu.Lock()
	if f, ok := ix.files[name]; ok {
		ix.total -= f.size
		delete(ix.files, name)
	}
	ix.mu.Unlock()
	os.Remove(filepath.Join(ix.opts.Dir, name))
}

// evictLocked removes the least recently used index files until Dir is
// within MaxBytes; keep goes last (it is removed only if it alone is over).
func (ix *Indexer) evictLocked(keep string) {
	if ix.opts.MaxBytes <= 0 {
		return
	}
	for ix.total > ix.opts.MaxBytes && len(ix.files) > 0 {
		names := make([]string, 0, len(ix.files))
		for n := range ix.files {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool {
			a, b := names[i], names[j]
			if (a == keep) != (b == keep) {
				return b == keep
			}
			if !ix.files[a].lastUse.Equal(ix.files[b].lastUse) {
				return ix.files[a].lastUse.Before(ix.files[b].lastUse)
			}
			return a < b
		})
		for _, n := range names {
			if ix.total <= ix.opts.MaxBytes {
				break
			}
			ix.total -= ix.files[n].size
			delete(ix.files, n)
			os.Remove(filepath.Join(ix.opts.Dir, n))
		}
	}
}

// damaged is called when a window read from an index file fails its
// checksum: the file is removed and the layer dropped, so the next Layer
// call rebuilds it.
func (ix *Indexer) damaged(l *Layer, err error) {
	if l.bad.Swap(true) {
		return // reported already (the file may be a rebuilt one by now)
	}
	ix.log.Warn("image: a layer index is damaged; it is rebuilt at the next access", "layer", l.Digest(), "err", err)
	ix.mu.Lock()
	if cur, ok := ix.loaded.Peek(l.Digest()); ok && cur == l {
		ix.loaded.Remove(l.Digest())
	}
	ix.mu.Unlock()
	if ix.opts.Dir != "" {
		ix.forget(fileName(l.Digest()))
	}
}

func (ix *Indexer) newLayer(idx *index, f *os.File) *Layer {
	return &Layer{ix: ix, idx: idx, file: f}
}

// Layer is one indexed layer. It is safe for concurrent use.
type Layer struct {
	ix   *Indexer
	idx  *index
	file *os.File    // holds the checkpoint windows; nil when they are in memory
	bad  atomic.Bool // a window failed its checksum
}

// Digest returns the layer blob's digest.
func (l *Layer) Digest() digest.Digest { return l.idx.digest }

// Compression returns how the layer's tar stream is stored.
func (l *Layer) Compression() Compression { return l.idx.comp }

// Size returns the size of the uncompressed tar stream.
func (l *Layer) Size() int64 { return l.idx.tarSize }

// Checkpoints returns the number of gzip checkpoints (zstd: frames) that a
// read can start from, besides the start of the stream.
func (l *Layer) Checkpoints() int {
	if l.idx.comp == Zstd {
		return len(l.idx.frames)
	}
	return len(l.idx.cps)
}

// Entries returns the layer's tar entries in stream order. The slice and
// its entries must not be modified.
func (l *Layer) Entries() []Entry { return l.idx.entries }

// streamReader is a decoder positioned somewhere in the stream.
type streamReader interface {
	io.Reader
	skip(n int64) (int64, error)
	pos() int64
	close()
}

// gzipReader is an inflater with the blob it reads.
type gzipReader struct {
	*inflater
	blob Blob
}

func (g *gzipReader) close() { g.blob.Close() }

type zstdReader struct {
	*zstdFrames
	blob Blob
}

func (z *zstdReader) close() { z.zstdFrames.close(); z.blob.Close() }

// ReadAt reads the uncompressed tar stream at off. It returns io.EOF at the
// end of the stream, and a *LayerError when the blob is damaged.
func (l *Layer) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("image: negative offset %d", off)
	}
	if off >= l.idx.tarSize {
		return 0, io.EOF
	}
	want := p
	if rest := l.idx.tarSize - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	var n int
	var err error
	if l.idx.comp == Uncompressed {
		n, err = l.readPlain(ctx, want, off)
	} else {
		n, err = l.readStream(ctx, want, off)
	}
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = io.ErrUnexpectedEOF
		}
		if ctx.Err() == nil {
			var le *LayerError
			if !errors.As(err, &le) {
				err = &LayerError{Digest: l.idx.digest, Err: err}
			}
		}
		return n, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (l *Layer) readPlain(ctx context.Context, p []byte, off int64) (int, error) {
	b, err := l.ix.opts.Blobs.Open(ctx, l.idx.digest)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	n, err := b.ReadAt(p, off)
	if n == len(p) {
		err = nil
	}
	return n, err
}

func (l *Layer) readStream(ctx context.Context, p []byte, off int64) (int, error) {
	r, err := l.reader(ctx, off)
	if err != nil {
		return 0, err
	}
	if at := r.pos(); at < off {
		if _, err := r.skip(off - at); err != nil {
			r.close()
			return 0, err
		}
	}
	n, err := io.ReadFull(r, p)
	if err != nil {
		// Nothing from a stream that failed is returned: a damaged
		// stream can decode to wrong bytes before the damage shows.
		r.close()
		return 0, err
	}
	l.putIdle(r)
	return n, nil
}

// restart returns the stream offset of the last place before off where
// decoding can start.
func (l *Layer) restart(off int64) int64 {
	if l.idx.comp == Zstd {
		i := sort.Search(len(l.idx.frames), func(i int) bool { return l.idx.frames[i].Out > off })
		if i == 0 {
			return 0
		}
		return l.idx.frames[i-1].Out
	}
	i := sort.Search(len(l.idx.cps), func(i int) bool { return l.idx.cps[i].Out > off })
	if i == 0 {
		return 0
	}
	return l.idx.cps[i-1].Out
}

// reader returns a decoder at or before off: a paused one that stands
// between the last restart point and off, else a new one started there.
func (l *Layer) reader(ctx context.Context, off int64) (streamReader, error) {
	from := l.restart(off)
	ix := l.ix
	ix.idleMu.Lock()
	best := -1
	for i, e := range ix.idle {
		if p := e.r.pos(); e.l == l && p >= from && p <= off && (best < 0 || p > ix.idle[best].r.pos()) {
			best = i
		}
	}
	if best >= 0 {
		r := ix.idle[best].r
		ix.idle = append(ix.idle[:best], ix.idle[best+1:]...)
		ix.idleMu.Unlock()
		return r, nil
	}
	ix.idleMu.Unlock()
	blob, err := l.ix.opts.Blobs.Open(ctx, l.idx.digest)
	if err != nil {
		return nil, err
	}
	size := blob.Size()
	if size != l.idx.blobSize {
		blob.Close()
		return nil, fmt.Errorf("blob is %d bytes, the index was built from %d", size, l.idx.blobSize)
	}
	if l.idx.comp == Zstd {
		fr := frame{}
		i := sort.Search(len(l.idx.frames), func(i int) bool { return l.idx.frames[i].Out > off })
		if i > 0 {
			fr = l.idx.frames[i-1]
		}
		z, err := zstdAt(blob, size, fr)
		if err != nil {
			blob.Close()
			return nil, err
		}
		return &zstdReader{z, blob}, nil
	}
	// Start at the last checkpoint before off whose window is sound; a
	// damaged window (the index is then rebuilt at the next access) costs
	// time, never a wrong byte.
	f := newInflater()
	for i := sort.Search(len(l.idx.cps), func(i int) bool { return l.idx.cps[i].Out > off }); i > 0; i-- {
		c := &l.idx.cps[i-1]
		win, err := l.window(c)
		if err != nil {
			continue
		}
		if err := f.resumeAt(blob, size, c.Bit, c.Out, win); err != nil {
			blob.Close()
			return nil, err
		}
		return &gzipReader{f, blob}, nil
	}
	f.resetGzip(blob, size)
	return &gzipReader{f, blob}, nil
}

// window returns a checkpoint's window, from memory or the index file. A
// damaged one is reported to the Indexer, which drops the index.
func (l *Layer) window(c *checkpoint) ([]byte, error) {
	if l.file == nil {
		return c.win, nil
	}
	win, err := readWindow(l.file, c)
	if err != nil {
		l.ix.damaged(l, err)
		return nil, err
	}
	return win, nil
}

func (l *Layer) putIdle(r streamReader) {
	ix := l.ix
	ix.idleMu.Lock()
	ix.idle = append(ix.idle, idleReader{l, r})
	var drop streamReader
	if len(ix.idle) > idleReaders {
		drop = ix.idle[0].r
		ix.idle = append(ix.idle[:0], ix.idle[1:]...)
	}
	ix.idleMu.Unlock()
	if drop != nil {
		drop.close()
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
