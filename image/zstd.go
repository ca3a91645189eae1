package image

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstd layers are read frame by frame: the frame boundaries are found by
// walking the frame and block headers (their sizes are in the headers, so
// nothing is decompressed for it) and each frame is decoded on its own, so
// the index knows where every frame's output starts.

const (
	zstdMagic         = 0xFD2FB528
	zstdSkippableMask = 0xFFFFFFF0
	zstdSkippable     = 0x184D2A50
)

// zstdFrameStarts returns the blob offsets where zstd frames start
// (skippable frames left out).
func zstdFrameStarts(b io.ReaderAt, size int64) ([]int64, error) {
	var starts []int64
	var buf [8]byte
	read := func(off int64, n int) ([]byte, error) {
		if off+int64(n) > size {
			return nil, io.ErrUnexpectedEOF
		}
		if _, err := b.ReadAt(buf[:n], off); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return buf[:n], nil
	}
	for off := int64(0); off < size; {
		m, err := read(off, 4)
		if err != nil {
			return nil, err
		}
		magic := binary.LittleEndian.Uint32(m)
		if magic&zstdSkippableMask == zstdSkippable {
			s, err := read(off+4, 4)
			if err != nil {
				return nil, err
			}
			off += 8 + int64(binary.LittleEndian.Uint32(s))
			continue
		}
		if magic != zstdMagic {
			return nil, fmt.Errorf("%w: not a zstd frame at offset %d", ErrCorrupt, off)
		}
		d, err := read(off+4, 1)
		if err != nil {
			return nil, err
		}
		fhd := d[0]
		single := fhd>>5&1 == 1
		pos := off + 5
		if !single {
			pos++ // window descriptor
		}
		pos += [4]int64{0, 1, 2, 4}[fhd&3] // dictionary id
		switch fhd >> 6 {                  // frame content size
		case 0:
			if single {
				pos++
			}
		case 1:
			pos += 2
		case 2:
			pos += 4
		case 3:
			pos += 8
		}
		for {
			h, err := read(pos, 3)
			if err != nil {
				return nil, err
			}
			v := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
			n := int64(v >> 3)
			switch v >> 1 & 3 {
			case 1: // RLE: one byte stored
				n = 1
			case 3:
				return nil, fmt.Errorf("%w: reserved zstd block type", ErrCorrupt)
			}
			pos += 3 + n
			if v&1 == 1 {
				break
			}
		}
		if fhd>>2&1 == 1 {
			pos += 4 // content checksum
		}
		if pos > size {
			return nil, io.ErrUnexpectedEOF
		}
		starts = append(starts, off)
		off = pos
	}
	return starts, nil
}

func newZstdDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
}

// zstdFrames decodes a zstd blob frame after frame from frame first on,
// recording where each frame's output starts.
type zstdFrames struct {
	blob    io.ReaderAt
	size    int64
	starts  []int64
	i       int
	started bool
	dec     *zstd.Decoder
	out     int64 // stream offset of the next byte
	frames  []frame
}

func newZstdFrames(blob io.ReaderAt, size int64) (*zstdFrames, error) {
	starts, err := zstdFrameStarts(blob, size)
	if err != nil {
		return nil, err
	}
	dec, err := newZstdDecoder()
	if err != nil {
		return nil, err
	}
	return &zstdFrames{blob: blob, size: size, starts: starts, dec: dec}, nil
}

// zstdAt returns a reader of the stream from frame fr on.
func zstdAt(blob io.ReaderAt, size int64, fr frame) (*zstdFrames, error) {
	dec, err := newZstdDecoder()
	if err != nil {
		return nil, err
	}
	return &zstdFrames{blob: blob, size: size, starts: []int64{fr.Comp}, dec: dec, out: fr.Out}, nil
}

func (z *zstdFrames) Read(p []byte) (int, error) {
	for {
		if !z.started {
			if z.i == len(z.starts) {
				return 0, io.EOF
			}
			end := z.size
			if z.i+1 < len(z.starts) {
				end = z.starts[z.i+1]
			}
			if err := z.dec.Reset(io.NewSectionReader(z.blob, z.starts[z.i], end-z.starts[z.i])); err != nil {
				return 0, err
			}
			z.frames = append(z.frames, frame{Comp: z.starts[z.i], Out: z.out})
			z.started = true
		}
		n, err := z.dec.Read(p)
		z.out += int64(n)
		if err == io.EOF {
			z.i++
			z.started = false
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err == zstd.ErrMagicMismatch || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return n, err
	}
}

func (z *zstdFrames) skip(n int64) (int64, error) {
	return io.CopyN(io.Discard, z, n)
}

func (z *zstdFrames) pos() int64 { return z.out }

func (z *zstdFrames) close() { z.dec.Close() }
