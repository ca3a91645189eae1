package image

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// This file is a deflate (RFC 1951) and gzip (RFC 1952) decoder that can
// start at any deflate block boundary given the 32 KiB of output before it,
// and that reports each block boundary while it decodes, so an index can
// record checkpoints in the same pass. Go's compress/flate can do neither.
//
// Input is read from an io.ReaderAt in large chunks into a buffer; bits are
// taken least significant first from a 64-bit accumulator. Output goes to a
// sliding buffer whose first windowSize bytes are history for back
// references.

const (
	windowSize = 32 << 10
	outBufSize = windowSize + 224<<10
	inBufSize  = 128 << 10
	maxMatch   = 258
)

type inflateState int

const (
	stateGzipHeader inflateState = iota // before a gzip member header
	stateBlockHeader
	stateStored
	stateHuffman
	stateMemberEnd // after a member's final block: trailer next
	stateEOF
)

// inflater decodes a gzip stream (a sequence of members) or, after
// resumeAt, the rest of one from a block boundary.
type inflater struct {
	src     io.ReaderAt
	srcSize int64

	in     []byte
	inPos  int   // next byte of in to load into bits
	inEnd  int   // in[:inEnd] holds data
	inBase int64 // blob offset of in[0]
	bits   uint64
	nbits  uint

	out    []byte
	outOff int64 // stream offset of out[0]
	wpos   int   // decoded bytes end here
	rpos   int   // Read hands out from here

	state      inflateState
	final      bool
	storedLeft int
	lit, dist  []hentry
	litBuf     []hentry // storage for dynamic tables
	distBuf    []hentry
	clenBuf    []hentry

	// checkCRC is set when decoding whole members from their start: the
	// trailer's CRC-32 and size are then verified.
	checkCRC bool
	crc      uint32
	size     uint32

	// onBlock, when set, is called at the start of every deflate block
	// but the first of a member, with the decoded bytes up to there in
	// in.out[:in.wpos].
	onBlock func(in *inflater)

	// firstBlock is set before a member's first block (no onBlock call).
	firstBlock bool

	err error
}

func newInflater() *inflater {
	return &inflater{
		in:  make([]byte, inBufSize),
		out: make([]byte, outBufSize),
	}
}

// resetGzip starts decoding the gzip stream in src from its beginning.
func (f *inflater) resetGzip(src io.ReaderAt, size int64) {
	f.reset(src, size)
	f.state = stateGzipHeader
	f.checkCRC = true
}

func (f *inflater) reset(src io.ReaderAt, size int64) {
	f.src, f.srcSize = src, size
	f.inPos, f.inEnd, f.inBase = 0, 0, 0
	f.bits, f.nbits = 0, 0
	f.outOff, f.wpos, f.rpos = 0, 0, 0
	f.final, f.storedLeft = false, 0
	f.crc, f.size = 0, 0
	f.err = nil
	f.checkCRC = false
}

// resumeAt starts decoding at a block boundary: bit position bitPos of src,
// stream offset outPos, with window the (up to 32 KiB of) output before it.
// Trailers are not verified from there on (the CRC covers the whole member).
func (f *inflater) resumeAt(src io.ReaderAt, size int64, bitPos, outPos int64, window []byte) error {
	f.reset(src, size)
	f.inBase = bitPos >> 3
	if err := f.fill(); err != nil {
		return err
	}
	if f.inEnd == 0 {
		return io.ErrUnexpectedEOF
	}
	skip := uint(bitPos & 7)
	f.bits = uint64(f.in[0]) >> skip
	f.nbits = 8 - skip
	f.inPos = 1
	f.wpos = copy(f.out, window)
	f.rpos = f.wpos
	f.outOff = outPos - int64(f.wpos)
	f.state = stateBlockHeader
	return nil
}

// bitPos returns the position in src of the next bit to decode.
func (f *inflater) bitPos() int64 { return (f.inBase+int64(f.inPos))*8 - int64(f.nbits) }

// pos returns the stream offset of the next byte Read returns.
func (f *inflater) pos() int64 { return f.outOff + int64(f.rpos) }

// decodedPos returns the stream offset where decoding stands.
func (f *inflater) decodedPos() int64 { return f.outOff + int64(f.wpos) }

// window returns the up to 32 KiB of output before the decoding position.
func (f *inflater) window() []byte {
	lo := f.wpos - windowSize
	if lo < 0 {
		lo = 0
	}
	return f.out[lo:f.wpos]
}

// fill moves the unread input to the front of the buffer and reads more.
func (f *inflater) fill() error {
	if f.inPos > 0 {
		n := copy(f.in, f.in[f.inPos:f.inEnd])
		f.inBase += int64(f.inPos)
		f.inEnd, f.inPos = n, 0
	}
	off := f.inBase + int64(f.inEnd)
	want := len(f.in) - f.inEnd
	if rest := f.srcSize - off; int64(want) > rest {
		want = int(rest)
	}
	if want <= 0 {
		return nil
	}
	n, err := f.src.ReadAt(f.in[f.inEnd:f.inEnd+want], off)
	f.inEnd += n
	if n < want {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// need makes at least n (<= 57) bits available, reading more input as
// needed; io.ErrUnexpectedEOF when the stream ends first.
func (f *inflater) need(n uint) error {
	for f.nbits < n {
		if f.inPos == f.inEnd {
			if err := f.fill(); err != nil {
				return err
			}
			if f.inPos == f.inEnd {
				return io.ErrUnexpectedEOF
			}
		}
		f.bits |= uint64(f.in[f.inPos]) << f.nbits
		f.inPos++
		f.nbits += 8
	}
	return nil
}

// more loads as many bits as are available up to 57 without failing at the
// end of input.
func (f *inflater) more() error {
	if f.inEnd-f.inPos < 8 {
		err := f.fill()
		if err != nil && err != io.ErrUnexpectedEOF {
			return err
		}
	}
	for f.nbits <= 56 && f.inPos < f.inEnd {
		f.bits |= uint64(f.in[f.inPos]) << f.nbits
		f.inPos++
		f.nbits += 8
	}
	return nil
}

func (f *inflater) take(n uint) uint64 {
	v := f.bits & (1<<n - 1)
	f.bits >>= n
	f.nbits -= n
	return v
}

// getBits returns the next n bits, reading input as needed.
func (f *inflater) getBits(n uint) (uint64, error) {
	if err := f.need(n); err != nil {
		return 0, err
	}
	return f.take(n), nil
}

// alignByte drops the bits up to the next byte boundary.
func (f *inflater) alignByte() {
	f.take(f.nbits & 7)
}

// dropBits forgets the whole bytes held in the accumulator, so input can be
// taken straight from the buffer; they must have been used already.
func (f *inflater) clearBits() {
	f.bits, f.nbits = 0, 0
}

// readByte returns the next byte of a byte-aligned stream.
func (f *inflater) readByte() (byte, error) {
	v, err := f.getBits(8)
	return byte(v), err
}

// slowSym decodes one symbol near the end of the input, checking that the
// code's bits exist.
func (f *inflater) slowSym(t []hentry, primary uint) (hentry, error) {
	if err := f.more(); err != nil {
		return 0, err
	}
	e := t[f.bits&(1<<primary-1)]
	n := e.length()
	if e.kind() == kindSub {
		e = t[e.value()+int((f.bits>>primary)&(1<<n-1))]
		n = primary + e.length()
	}
	if e.kind() == kindInvalid {
		if n > f.nbits {
			return 0, io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("%w: invalid Huffman code", ErrCorrupt)
	}
	if n > f.nbits {
		return 0, io.ErrUnexpectedEOF
	}
	f.take(n)
	return e, nil
}

var errBadBlockType = fmt.Errorf("%w: invalid block type", ErrCorrupt)

// Read implements io.Reader over the decoded stream.
func (f *inflater) Read(p []byte) (int, error) {
	for f.rpos == f.wpos {
		if f.err != nil {
			return 0, f.err
		}
		if f.state == stateEOF {
			return 0, io.EOF
		}
		f.err = f.step()
	}
	n := copy(p, f.out[f.rpos:f.wpos])
	if f.checkCRC {
		f.crc = crc32.Update(f.crc, crc32.IEEETable, p[:n])
		f.size += uint32(n)
	}
	f.rpos += n
	return n, nil
}

// skip advances n bytes without copying them; it returns how many it
// skipped (fewer only at the end or on an error).
func (f *inflater) skip(n int64) (int64, error) {
	var done int64
	for done < n {
		for f.rpos == f.wpos {
			if f.err != nil {
				return done, f.err
			}
			if f.state == stateEOF {
				return done, io.EOF
			}
			f.err = f.step()
		}
		k := int64(f.wpos - f.rpos)
		if k > n-done {
			k = n - done
		}
		if f.checkCRC {
			f.crc = crc32.Update(f.crc, crc32.IEEETable, f.out[f.rpos:f.rpos+int(k)])
			f.size += uint32(k)
		}
		f.rpos += int(k)
		done += k
	}
	return done, nil
}

// step decodes more output, at least one byte unless the stream ends or a
// member boundary is crossed. It is called only when all output was read.
func (f *inflater) step() error {
	// Slide: keep the last windowSize bytes as history.
	if len(f.out)-f.wpos < maxMatch*2 {
		k := f.wpos - windowSize
		copy(f.out, f.out[k:f.wpos])
		f.outOff += int64(k)
		f.wpos -= k
		f.rpos -= k
	}
	for {
		switch f.state {
		case stateGzipHeader:
			if err := f.gzipHeader(); err != nil {
				return err
			}
			if f.state == stateEOF {
				return nil
			}
			f.state = stateBlockHeader
			f.final = false
			f.firstBlock = true
		case stateBlockHeader:
			if f.final {
				f.state = stateMemberEnd
				continue
			}
			if f.onBlock != nil && !f.firstBlock {
				f.onBlock(f)
			}
			f.firstBlock = false
			if err := f.blockHeader(); err != nil {
				return err
			}
		case stateStored:
			if f.storedLeft == 0 {
				f.state = stateBlockHeader
				continue
			}
			if err := f.stored(); err != nil {
				return err
			}
			return nil
		case stateHuffman:
			start := f.wpos
			if err := f.huffman(); err != nil {
				return err
			}
			if f.wpos > start {
				return nil
			}
		case stateMemberEnd:
			return f.memberEnd()
		case stateEOF:
			return nil
		}
	}
}

func (f *inflater) gzipHeader() error {
	if err := f.more(); err != nil {
		return err
	}
	if f.nbits == 0 && f.bitPos() > 0 {
		// The end of the stream after at least one member.
		f.state = stateEOF
		return nil
	}
	var hdr [10]byte
	for i := range hdr {
		b, err := f.readByte()
		if err != nil {
			return err
		}
		hdr[i] = b
	}
	if hdr[0] != 0x1f || hdr[1] != 0x8b || hdr[2] != 8 {
		return fmt.Errorf("%w: not a gzip member header", ErrCorrupt)
	}
	flg := hdr[3]
	if flg&4 != 0 { // FEXTRA
		lo, err := f.readByte()
		if err != nil {
			return err
		}
		hi, err := f.readByte()
		if err != nil {
			return err
		}
		for n := int(lo) | int(hi)<<8; n > 0; n-- {
			if _, err := f.readByte(); err != nil {
				return err
			}
		}
	}
	for _, bit := range []byte{8, 16} { // FNAME, FCOMMENT: zero terminated
		if flg&bit == 0 {
			continue
		}
		for {
			b, err := f.readByte()
			if err != nil {
				return err
			}
			if b == 0 {
				break
			}
		}
	}
	if flg&2 != 0 { // FHCRC
		if _, err := f.getBits(16); err != nil {
			return err
		}
	}
	f.crc, f.size = 0, 0
	return nil
}

func (f *inflater) memberEnd() error {
	f.alignByte()
	var tr [8]byte
	for i := range tr {
		b, err := f.readByte()
		if err != nil {
			return err
		}
		tr[i] = b
	}
	if f.checkCRC {
		if binary.LittleEndian.Uint32(tr[:4]) != f.crc || binary.LittleEndian.Uint32(tr[4:]) != f.size {
			return fmt.Errorf("%w: gzip checksum mismatch", ErrCorrupt)
		}
	}
	f.state = stateGzipHeader
	return nil
}

// codeOrder is the order of the code length code lengths.
var codeOrder = [19]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

func (f *inflater) blockHeader() error {
	h, err := f.getBits(3)
	if err != nil {
		return err
	}
	f.final = h&1 != 0
	switch h >> 1 {
	case 0:
		f.alignByte()
		v, err := f.getBits(32)
		if err != nil {
			return err
		}
		n, nn := uint16(v), uint16(v>>16)
		if n != ^nn {
			return fmt.Errorf("%w: stored block length check", ErrCorrupt)
		}
		f.storedLeft = int(n)
		f.state = stateStored
	case 1:
		f.lit, f.dist = fixed()
		f.state = stateHuffman
	case 2:
		if err := f.dynamic(); err != nil {
			return err
		}
		f.state = stateHuffman
	default:
		return errBadBlockType
	}
	return nil
}

func (f *inflater) dynamic() error {
	v, err := f.getBits(14)
	if err != nil {
		return err
	}
	nlit := int(v&31) + 257
	ndist := int(v>>5&31) + 1
	nclen := int(v>>10) + 4
	if nlit > 286 || ndist > 30 {
		return fmt.Errorf("%w: too many length or distance codes", ErrCorrupt)
	}
	var clens [19]uint8
	for i := 0; i < nclen; i++ {
		b, err := f.getBits(3)
		if err != nil {
			return err
		}
		clens[codeOrder[i]] = uint8(b)
	}
	f.clenBuf, err = buildTable(f.clenBuf, clenTable, clens[:], clenPrimaryBits)
	if err != nil {
		return err
	}
	var lens [286 + 30]uint8
	for i := 0; i < nlit+ndist; {
		e, err := f.slowSym(f.clenBuf, clenPrimaryBits)
		if err != nil {
			return err
		}
		sym := e.value()
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return fmt.Errorf("%w: repeat with no previous length", ErrCorrupt)
			}
			b, err := f.getBits(2)
			if err != nil {
				return err
			}
			rep, val = 3+int(b), lens[i-1]
		case 17:
			b, err := f.getBits(3)
			if err != nil {
				return err
			}
			rep = 3 + int(b)
		default:
			b, err := f.getBits(7)
			if err != nil {
				return err
			}
			rep = 11 + int(b)
		}
		if i+rep > nlit+ndist {
			return fmt.Errorf("%w: code lengths overflow", ErrCorrupt)
		}
		for ; rep > 0; rep-- {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return fmt.Errorf("%w: no end-of-block code", ErrCorrupt)
	}
	f.litBuf, err = buildTable(f.litBuf, litLenTable, lens[:nlit], litPrimaryBits)
	if err != nil {
		return err
	}
	f.distBuf, err = buildTable(f.distBuf, distTable, lens[nlit:nlit+ndist], distPrimaryBits)
	if err != nil {
		return err
	}
	f.lit, f.dist = f.litBuf, f.distBuf
	return nil
}

// stored copies a stored block's bytes.
func (f *inflater) stored() error {
	// Whole bytes still in the accumulator come first.
	for f.storedLeft > 0 && f.nbits >= 8 && f.wpos < len(f.out) {
		f.out[f.wpos] = byte(f.take(8))
		f.wpos++
		f.storedLeft--
	}
	if f.nbits == 0 {
		f.clearBits()
	}
	for f.storedLeft > 0 && f.wpos < len(f.out) {
		if f.nbits != 0 {
			break
		}
		if f.inPos == f.inEnd {
			if err := f.fill(); err != nil {
				return err
			}
			if f.inPos == f.inEnd {
				return io.ErrUnexpectedEOF
			}
		}
		n := copy(f.out[f.wpos:], f.in[f.inPos:f.inEnd])
		if n > f.storedLeft {
			n = f.storedLeft
		}
		f.wpos += n
		f.inPos += n
		f.storedLeft -= n
	}
	if f.storedLeft == 0 {
		f.state = stateBlockHeader
	}
	return nil
}

var errDistance = fmt.Errorf("%w: distance too far back", ErrCorrupt)

// huffman decodes a Huffman block until the output buffer is nearly full or
// the block ends.
func (f *inflater) huffman() error {
	lit, dist := f.lit, f.dist
	out := f.out
	w := f.wpos
	limit := len(out) - maxMatch
	bits, nbits := f.bits, f.nbits
	in := f.in
	inPos := f.inPos
	// Fast loop: with 8 input bytes available one refill gives at least
	// 56 bits, enough for a length, its extra bits, a distance and its
	// extra bits (15+5+15+13).
	for w < limit {
		if f.inEnd-inPos < 8 {
			f.bits, f.nbits, f.inPos = bits, nbits, inPos
			if err := f.fill(); err != nil && err != io.ErrUnexpectedEOF {
				f.wpos = w
				return err
			}
			in, inPos, bits, nbits = f.in, f.inPos, f.bits, f.nbits
			if f.inEnd-inPos < 8 {
				break
			}
		}
		bits |= binary.LittleEndian.Uint64(in[inPos:]) << nbits
		inPos += int(63-nbits) >> 3
		nbits |= 56

		e := lit[bits&(1<<litPrimaryBits-1)]
		if e.kind() == kindSub {
			e = lit[e.value()+int((bits>>litPrimaryBits)&(1<<e.length()-1))]
			bits >>= litPrimaryBits
			nbits -= litPrimaryBits
		}
		bits >>= e.length()
		nbits -= e.length()
		switch e.kind() {
		case kindLiteral:
			out[w] = byte(e.value())
			w++
			continue
		case kindEnd:
			f.bits, f.nbits, f.inPos, f.wpos = bits, nbits, inPos, w
			f.state = stateBlockHeader
			return nil
		case kindLength:
		default:
			f.bits, f.nbits, f.inPos, f.wpos = bits, nbits, inPos, w
			return fmt.Errorf("%w: invalid literal/length code", ErrCorrupt)
		}
		n := e.extra()
		length := e.value() + int(bits&(1<<n-1))
		bits >>= n
		nbits -= n
		d := dist[bits&(1<<distPrimaryBits-1)]
		if d.kind() == kindSub {
			d = dist[d.value()+int((bits>>distPrimaryBits)&(1<<d.length()-1))]
			bits >>= distPrimaryBits
			nbits -= distPrimaryBits
		}
		bits >>= d.length()
		nbits -= d.length()
		if d.kind() != kindSymbol {
			f.bits, f.nbits, f.inPos, f.wpos = bits, nbits, inPos, w
			return fmt.Errorf("%w: invalid distance code", ErrCorrupt)
		}
		n = d.extra()
		distance := d.value() + int(bits&(1<<n-1))
		bits >>= n
		nbits -= n
		if distance > w {
			f.bits, f.nbits, f.inPos, f.wpos = bits, nbits, inPos, w
			return errDistance
		}
		w = copyMatch(out, w, distance, length)
	}
	f.bits, f.nbits, f.inPos, f.wpos = bits, nbits, inPos, w
	if w >= limit {
		return nil
	}
	// Slow loop near the end of the input.
	for f.wpos < limit {
		e, err := f.slowSym(lit, litPrimaryBits)
		if err != nil {
			return err
		}
		switch e.kind() {
		case kindLiteral:
			f.out[f.wpos] = byte(e.value())
			f.wpos++
			continue
		case kindEnd:
			f.state = stateBlockHeader
			return nil
		}
		x, err := f.getBits(e.extra())
		if err != nil {
			return err
		}
		length := e.value() + int(x)
		d, err := f.slowSym(dist, distPrimaryBits)
		if err != nil {
			return err
		}
		if d.kind() != kindSymbol {
			return fmt.Errorf("%w: invalid distance code", ErrCorrupt)
		}
		x, err = f.getBits(d.extra())
		if err != nil {
			return err
		}
		distance := d.value() + int(x)
		if distance > f.wpos {
			return errDistance
		}
		f.wpos = copyMatch(f.out, f.wpos, distance, length)
	}
	return nil
}

// copyMatch copies length bytes from distance back to out[w:], the
// overlapping way deflate means, and returns the new end.
func copyMatch(out []byte, w, distance, length int) int {
	end := w + length
	if distance >= length {
		copy(out[w:end], out[w-distance:])
		return end
	}
	// The source overlaps the destination: each copy doubles the
	// repeated pattern, so its length stays a multiple of distance.
	src := w - distance
	for w < end {
		w += copy(out[w:end], out[src:w])
	}
	return end
}
