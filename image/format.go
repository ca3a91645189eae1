package image

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
)

// An index file:
//
//	magic "RGFSIDX2"   8 bytes
//	meta length M      8 bytes, little endian
//	meta CRC-32C       4 bytes, little endian
//	meta               M bytes: digest, compression, sizes, entries, checkpoints
//	                   (positions, window lengths and CRCs), zstd frames; varints
//	windows            each checkpoint's window, deflated, in checkpoint order
//
// Opening a file checks the meta and that the windows fill the file exactly;
// a window is checked (CRC-32C of its stored bytes) when a read needs it, so
// opening costs the meta, not the windows (16 MiB raw for a 1 GiB layer).

const indexMagic = "RGFSIDX2"

const indexHeader = 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrIndexDamaged is wrapped by errors about an index file whose bytes fail
// their checksum; the file is removed and the next Indexer.Layer rebuilds it.
var ErrIndexDamaged = errors.New("index file damaged")

type encoder struct{ b []byte }

func (e *encoder) u(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) i(v int64)    { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) s(v string)   { e.u(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) byte(v uint8) { e.b = append(e.b, v) }

func encodeMeta(ix *index) []byte {
	e := &encoder{}
	e.s(string(ix.digest))
	e.byte(uint8(ix.comp))
	e.i(ix.blobSize)
	e.i(ix.tarSize)
	e.u(uint64(len(ix.entries)))
	for i := range ix.entries {
		en := &ix.entries[i]
		e.s(en.Name)
		e.byte(en.Type)
		e.i(en.Mode)
		e.i(int64(en.UID))
		e.i(int64(en.GID))
		e.i(en.Size)
		e.i(en.ModTime.Unix())
		e.i(int64(en.ModTime.Nanosecond()))
		e.s(en.Linkname)
		e.i(en.Devmajor)
		e.i(en.Devminor)
		flags := uint8(0)
		if en.Sparse {
			flags |= 1
		}
		e.byte(flags)
		e.u(uint64(len(en.Xattrs)))
		for _, k := range sortedKeys(en.Xattrs) {
			e.s(k)
			e.s(en.Xattrs[k])
		}
		e.i(en.Offset)
	}
	e.u(uint64(len(ix.cps)))
	for _, c := range ix.cps {
		e.i(c.Out)
		e.i(c.Bit)
		e.u(uint64(c.rawLen))
		e.u(uint64(c.winLen))
		e.u(uint64(c.winCRC))
	}
	e.u(uint64(len(ix.frames)))
	for _, f := range ix.frames {
		e.i(f.Comp)
		e.i(f.Out)
	}
	return e.b
}

// writeIndex writes ix in the index file format. It deflates the windows
// and records their lengths, CRCs and offsets in ix.cps.
func writeIndex(w io.Writer, ix *index) error {
	var wins []byte
	fw, _ := flate.NewWriter(nil, flate.BestSpeed)
	var buf bytes.Buffer
	for i := range ix.cps {
		c := &ix.cps[i]
		buf.Reset()
		fw.Reset(&buf)
		fw.Write(c.win)
		if err := fw.Close(); err != nil {
			return err
		}
		c.rawLen = len(c.win)
		c.winLen = buf.Len()
		c.winCRC = crc32.Checksum(buf.Bytes(), castagnoli)
		wins = append(wins, buf.Bytes()...)
	}
	meta := encodeMeta(ix)
	off := int64(indexHeader + len(meta))
	for i := range ix.cps {
		ix.cps[i].winOff = off
		off += int64(ix.cps[i].winLen)
	}
	hdr := make([]byte, indexHeader, indexHeader+len(meta))
	copy(hdr, indexMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(len(meta)))
	binary.LittleEndian.PutUint32(hdr[16:], crc32.Checksum(meta, castagnoli))
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.Write(append(hdr, meta...))
	bw.Write(wins)
	return bw.Flush()
}

// readWindow reads checkpoint c's window from an index file.
func readWindow(f io.ReaderAt, c *checkpoint) ([]byte, error) {
	z := make([]byte, c.winLen)
	if _, err := f.ReadAt(z, c.winOff); err != nil {
		return nil, err
	}
	if crc32.Checksum(z, castagnoli) != c.winCRC {
		return nil, fmt.Errorf("%w: window checksum mismatch", ErrIndexDamaged)
	}
	win := make([]byte, c.rawLen+1)
	n, err := io.ReadFull(flate.NewReader(bytes.NewReader(z)), win)
	if err != io.ErrUnexpectedEOF || n != c.rawLen {
		return nil, fmt.Errorf("%w: window does not inflate to %d bytes", ErrIndexDamaged, c.rawLen)
	}
	return win[:n], nil
}

// decoder reads the meta. Strings are cut from one string copy of the
// whole meta (str, which b is the unread tail of), so decoding tens of
// thousands of names allocates once.
type decoder struct {
	b   []byte
	str string
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad meta", ErrIndexDamaged)
	}
	d.b = nil
}

func (d *decoder) u() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) i() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items of at least min bytes each.
func (d *decoder) count(min int) int {
	v := d.u()
	if v > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) s() string {
	n := d.count(1)
	if n == 0 {
		return ""
	}
	at := len(d.str) - len(d.b)
	v := d.str[at : at+n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() uint8 {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func decodeMeta(b []byte, windowsAt int64) (*index, error) {
	d := &decoder{b: b, str: string(b)}
	ix := &index{}
	ix.digest = digest.Digest(d.s())
	ix.comp = Compression(d.byte())
	ix.blobSize = d.i()
	ix.tarSize = d.i()
	ix.entries = make([]Entry, d.count(14))
	for i := range ix.entries {
		en := &ix.entries[i]
		en.Name = d.s()
		en.Type = d.byte()
		en.Mode = d.i()
		en.UID = int(d.i())
		en.GID = int(d.i())
		en.Size = d.i()
		sec := d.i()
		nsec := d.i()
		en.ModTime = time.Unix(sec, nsec)
		en.Linkname = d.s()
		en.Devmajor = d.i()
		en.Devminor = d.i()
		en.Sparse = d.byte()&1 != 0
		if n := d.count(2); n > 0 {
			en.Xattrs = make(map[string]string, n)
			for j := 0; j < n; j++ {
				k := d.s()
				en.Xattrs[k] = d.s()
			}
		}
		en.Offset = d.i()
	}
	ix.cps = make([]checkpoint, d.count(5))
	off := windowsAt
	for i := range ix.cps {
		c := &ix.cps[i]
		c.Out = d.i()
		c.Bit = d.i()
		raw, n := d.u(), d.u()
		if raw > windowSize || n > 1<<20 {
			d.fail()
		}
		c.rawLen, c.winLen = int(raw), int(n)
		crc := d.u()
		if crc > math.MaxUint32 {
			d.fail()
		}
		c.winCRC = uint32(crc)
		c.winOff = off
		off += int64(n)
	}
	ix.frames = make([]frame, d.count(2))
	for i := range ix.frames {
		ix.frames[i] = frame{Comp: d.i(), Out: d.i()}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return nil, d.err
	}
	return ix, nil
}

// readIndex opens an index file, checks it whole and returns its index; the
// windows stay in the file, which is returned open.
func readIndex(name string) (*index, *os.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	ix, err := checkIndex(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return ix, f, nil
}

func checkIndex(f *os.File) (*index, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < indexHeader {
		return nil, fmt.Errorf("%w: %d bytes", ErrIndexDamaged, size)
	}
	var hdr [indexHeader]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, err
	}
	if string(hdr[:8]) != indexMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrIndexDamaged)
	}
	m := binary.LittleEndian.Uint64(hdr[8:])
	if m > uint64(size-indexHeader) {
		return nil, fmt.Errorf("%w: meta length %d in a file of %d bytes", ErrIndexDamaged, m, size)
	}
	meta := make([]byte, m)
	if _, err := f.ReadAt(meta, indexHeader); err != nil {
		return nil, err
	}
	if crc32.Checksum(meta, castagnoli) != binary.LittleEndian.Uint32(hdr[16:]) {
		return nil, fmt.Errorf("%w: meta checksum mismatch", ErrIndexDamaged)
	}
	ix, err := decodeMeta(meta, indexHeader+int64(m))
	if err != nil {
		return nil, err
	}
	end := indexHeader + int64(m)
	for _, c := range ix.cps {
		end += int64(c.winLen)
	}
	if end != size {
		return nil, fmt.Errorf("%w: %d bytes, the meta says %d", ErrIndexDamaged, size, end)
	}
	return ix, nil
}
