package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
)

// checkpoint is a place where gzip decoding can start: the deflate block
// that begins at compressed bit Bit produces the stream from offset Out on,
// with the window as history.
type checkpoint struct {
	Out int64
	Bit int64
	// The window: in memory (win), or deflated in the index file at
	// winOff (winLen bytes with CRC-32C winCRC, rawLen when inflated).
	win    []byte
	winOff int64
	winLen int
	winCRC uint32
	rawLen int
}

// frame is a zstd frame: it starts at blob offset Comp and decodes to the
// stream from offset Out on.
type frame struct {
	Comp int64
	Out  int64
}

// checkpointSpacing is CheckpointSpacing; tests lower it to get many
// checkpoints from small layers.
var checkpointSpacing int64 = CheckpointSpacing

// index is what a build produces and an index file holds.
type index struct {
	digest   digest.Digest
	comp     Compression
	blobSize int64
	tarSize  int64
	entries  []Entry
	cps      []checkpoint
	frames   []frame
}

// sniff decides the compression of a blob from its first bytes (for layers
// without a media type).
func sniff(b Blob) (Compression, error) {
	var m [4]byte
	n, err := b.ReadAt(m[:], 0)
	if n < len(m) && err != nil && err != io.EOF {
		return 0, err
	}
	switch {
	case n >= 2 && m[0] == 0x1f && m[1] == 0x8b:
		return Gzip, nil
	case n == 4 && m == [4]byte{0x28, 0xb5, 0x2f, 0xfd}:
		return Zstd, nil
	}
	return Uncompressed, nil
}

// streamCounter counts the bytes taken from a decompressed stream, and
// skips without copying where the stream can (tar.Reader uses Seek to
// skip file contents).
type streamCounter struct {
	ctx  context.Context
	r    io.Reader
	skip func(n int64) (int64, error) // nil: Seek is refused
	n    int64
	err  error // the first decoding error seen (tar.Reader may hide it)
}

func (c *streamCounter) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

func (c *streamCounter) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || off < 0 {
		return 0, errors.New("image: stream seeks forward only")
	}
	if off == 0 {
		return c.n, nil
	}
	if err := c.ctx.Err(); err != nil {
		return c.n, err
	}
	n, err := c.skip(off)
	c.n += n
	if err == io.EOF {
		err = nil // the copy after the seek reports the short stream
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	return c.n, err
}

// buildIndex reads the whole layer once and returns its index.
func buildIndex(ctx context.Context, blob Blob, dgst digest.Digest, comp Compression) (*index, error) {
	size := blob.Size()
	if comp == 0 {
		var err error
		if comp, err = sniff(blob); err != nil {
			return nil, &LayerError{Digest: dgst, Err: err}
		}
	}
	ix := &index{digest: dgst, comp: comp, blobSize: size}
	c := &streamCounter{ctx: ctx}
	var zr *zstdFrames
	switch comp {
	case Uncompressed:
		sr := io.NewSectionReader(blob, 0, size)
		c.r = sr
		c.skip = func(n int64) (int64, error) {
			cur, _ := sr.Seek(0, io.SeekCurrent)
			if rest := size - cur; n > rest {
				n = rest
			}
			_, err := sr.Seek(n, io.SeekCurrent)
			return n, err
		}
	case Gzip:
		f := newInflater()
		f.resetGzip(blob, size)
		last := int64(0)
		f.onBlock = func(f *inflater) {
			if out := f.decodedPos(); out-last >= checkpointSpacing {
				last = out
				ix.cps = append(ix.cps, checkpoint{Out: out, Bit: f.bitPos(), win: append([]byte(nil), f.window()...)})
			}
		}
		c.r, c.skip = f, f.skip
	case Zstd:
		var err error
		if zr, err = newZstdFrames(blob, size); err != nil {
			return nil, &LayerError{Digest: dgst, Err: err}
		}
		defer zr.close()
		c.r, c.skip = zr, zr.skip
	default:
		return nil, fmt.Errorf("image: unknown compression %v", comp)
	}
	tr := tar.NewReader(c)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if c.err != nil {
				err = c.err
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &LayerError{Digest: dgst, Err: err}
		}
		if e, ok := entryOf(hdr, c.n); ok {
			ix.entries = append(ix.entries, e)
		}
	}
	if c.err != nil {
		return nil, &LayerError{Digest: dgst, Err: c.err}
	}
	// Read to the end: what follows the tar trailer is checked too (the
	// gzip checksum comes last) and counted in the stream size.
	if _, err := io.Copy(io.Discard, c); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &LayerError{Digest: dgst, Err: err}
	}
	ix.tarSize = c.n
	if zr != nil {
		ix.frames = zr.frames
	}
	return ix, nil
}

// cleanName turns a tar name into a clean path relative to the root ("" is
// the root); ".." cannot climb above it.
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// entryOf turns a tar header into an Entry whose content starts at off;
// ok is false for headers that are not files (PAX global headers).
func entryOf(hdr *tar.Header, off int64) (Entry, bool) {
	typ := hdr.Typeflag
	e := Entry{
		Name:     cleanName(hdr.Name),
		Mode:     hdr.Mode & 0o7777,
		UID:      hdr.Uid,
		GID:      hdr.Gid,
		ModTime:  hdr.ModTime,
		Devmajor: hdr.Devmajor,
		Devminor: hdr.Devminor,
		Offset:   off,
	}
	switch typ {
	case tar.TypeReg, tar.TypeCont: // tar.Reader turns TypeRegA into TypeReg or TypeDir
		typ = tar.TypeReg
	case tar.TypeGNUSparse:
		typ = tar.TypeReg
		e.Sparse = true
	case tar.TypeDir, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	case tar.TypeLink:
		e.Linkname = cleanName(hdr.Linkname)
	case tar.TypeXGlobalHeader:
		return Entry{}, false
	default:
		// Unknown types (GNU volume headers and the like) hold no file.
		return Entry{}, false
	}
	e.Type = typ
	if typ == tar.TypeSymlink {
		e.Linkname = hdr.Linkname
	}
	if typ == tar.TypeReg {
		e.Size = hdr.Size
	}
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[x] = v
		}
		if strings.HasPrefix(k, "GNU.sparse.") {
			e.Sparse = true
		}
	}
	return e, true
}
