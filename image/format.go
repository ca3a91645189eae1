package image

import (
	"bufio"
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
//	magic "RGFSIDX1"   8 bytes
//	meta length M      8 bytes, little endian
//	meta               M bytes: digest, compression, sizes, entries, checkpoints
//	                   (without windows), zstd frames; varints
//	windows            each checkpoint's window, in checkpoint order
//	CRC-32C            4 bytes, of everything before
//
// The whole file is checked when it is opened; each window also carries its
// own CRC-32C in the meta, checked when it is read, because windows are
// read from the file later, on demand.

const indexMagic = "RGFSIDX1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errIndexDamaged is wrapped by every problem with an index file's bytes.
var errIndexDamaged = errors.New("index file damaged")

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
		e.u(uint64(len(c.win)))
		e.u(uint64(crc32.Checksum(c.win, castagnoli)))
	}
	e.u(uint64(len(ix.frames)))
	for _, f := range ix.frames {
		e.i(f.Comp)
		e.i(f.Out)
	}
	return e.b
}

// writeIndex writes ix in the index file format.
func writeIndex(w io.Writer, ix *index) error {
	h := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 256<<10)
	meta := encodeMeta(ix)
	var hdr [16]byte
	copy(hdr[:], indexMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(len(meta)))
	bw.Write(hdr[:])
	bw.Write(meta)
	for _, c := range ix.cps {
		bw.Write(c.win)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.LittleEndian.AppendUint32(nil, h.Sum32()))
	return err
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad meta", errIndexDamaged)
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
	v := string(d.b[:n])
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
	d := &decoder{b: b}
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
	ix.cps = make([]checkpoint, d.count(4))
	off := windowsAt
	for i := range ix.cps {
		c := &ix.cps[i]
		c.Out = d.i()
		c.Bit = d.i()
		n := d.u()
		if n > windowSize {
			d.fail()
		}
		c.winLen = int(n)
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
	if size < 20 {
		return nil, fmt.Errorf("%w: %d bytes", errIndexDamaged, size)
	}
	var hdr [16]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, err
	}
	if string(hdr[:8]) != indexMagic {
		return nil, fmt.Errorf("%w: bad magic", errIndexDamaged)
	}
	m := binary.LittleEndian.Uint64(hdr[8:])
	if m > uint64(size-20) {
		return nil, fmt.Errorf("%w: meta length %d in a file of %d bytes", errIndexDamaged, m, size)
	}
	meta := make([]byte, m)
	if _, err := f.ReadAt(meta, 16); err != nil {
		return nil, err
	}
	h := crc32.New(castagnoli)
	h.Write(hdr[:])
	h.Write(meta)
	if _, err := io.Copy(h, io.NewSectionReader(f, 16+int64(m), size-4-16-int64(m))); err != nil {
		return nil, err
	}
	var sum [4]byte
	if _, err := f.ReadAt(sum[:], size-4); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(sum[:]) != h.Sum32() {
		return nil, fmt.Errorf("%w: checksum mismatch", errIndexDamaged)
	}
	ix, err := decodeMeta(meta, 16+int64(m))
	if err != nil {
		return nil, err
	}
	var end int64 = 16 + int64(m)
	for _, c := range ix.cps {
		end += int64(c.winLen)
	}
	if end != size-4 {
		return nil, fmt.Errorf("%w: windows do not fill the file", errIndexDamaged)
	}
	return ix, nil
}
