package image

import (
	"fmt"
	"sync"
)

// A Huffman decoding table is a flat slice of entries. The first
// 1<<primaryBits entries are indexed by the next primaryBits input bits (the
// stream is read least significant bit first, so codes are stored bit
// reversed). A code longer than primaryBits has a primary entry of kind
// kindSub pointing at a subtable, indexed by the following bits.
//
// An entry packs: bits 0-3 the code length to consume (for kindSub, the
// number of bits that index the subtable), bits 4-7 the kind, bits 8-15 the
// number of extra bits that follow the code, bits 16-31 the value (literal
// byte, length or distance base, subtable start).
type hentry uint32

const (
	kindInvalid = iota // no code has these bits (an incomplete code)
	kindLiteral
	kindLength // value is the base length, extra bits follow
	kindEnd    // end of block
	kindSub    // value is the start of a subtable
	kindSymbol // plain symbol (code length codes, distances)
)

func mkentry(length, kind, extra, value int) hentry {
	return hentry(length | kind<<4 | extra<<8 | value<<16)
}

func (e hentry) length() uint { return uint(e & 15) }
func (e hentry) kind() int    { return int(e>>4) & 15 }
func (e hentry) extra() uint  { return uint(e>>8) & 0xff }
func (e hentry) value() int   { return int(e >> 16) }

const (
	litPrimaryBits  = 10
	distPrimaryBits = 8
	clenPrimaryBits = 7
	maxCodeBits     = 15
)

// Length and distance bases and extra bits, RFC 1951 section 3.2.5.
var (
	lengthBase = [29]int{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
		35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]int{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
		3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase = [30]int{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
		257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]int{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
		7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// tableKind says what the symbols of a table mean.
type tableKind int

const (
	litLenTable tableKind = iota
	distTable
	clenTable
)

// symEntry returns the entry of symbol sym with a code of n bits.
func symEntry(tk tableKind, sym, n int) (hentry, error) {
	switch tk {
	case litLenTable:
		switch {
		case sym < 256:
			return mkentry(n, kindLiteral, 0, sym), nil
		case sym == 256:
			return mkentry(n, kindEnd, 0, 0), nil
		case sym < 286:
			return mkentry(n, kindLength, lengthExtra[sym-257], lengthBase[sym-257]), nil
		}
		// Symbols 286 and 287 take part in the fixed code but never occur.
		return mkentry(n, kindInvalid, 0, 0), nil
	case distTable:
		if sym < 30 {
			return mkentry(n, kindSymbol, distExtra[sym], distBase[sym]), nil
		}
		return mkentry(n, kindInvalid, 0, 0), nil
	}
	return mkentry(n, kindSymbol, 0, sym), nil
}

func reverseBits(code, n int) int {
	r := 0
	for i := 0; i < n; i++ {
		r = r<<1 | code&1
		code >>= 1
	}
	return r
}

// buildTable builds the decoding table for the code lengths in lens (0 =
// symbol unused) into dst, reusing its storage. Over-subscribed codes are
// corrupt; incomplete ones are allowed (their missing codes decode as
// kindInvalid), as zlib allows them for a single distance code.
func buildTable(dst []hentry, tk tableKind, lens []uint8, primary int) ([]hentry, error) {
	var count [maxCodeBits + 1]int
	maxLen := 0
	for _, l := range lens {
		count[l]++
		if int(l) > maxLen {
			maxLen = int(l)
		}
	}
	count[0] = 0
	left := 1
	for l := 1; l <= maxCodeBits; l++ {
		left <<= 1
		left -= count[l]
		if left < 0 {
			return nil, fmt.Errorf("%w: over-subscribed Huffman code", ErrCorrupt)
		}
	}
	var next [maxCodeBits + 2]int
	code := 0
	for l := 1; l <= maxCodeBits; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	// next[1] must start at 0: count[0] was cleared above.
	size := 1 << primary
	subBits := 0
	if maxLen > primary {
		subBits = maxLen - primary
	}
	// Count the subtables: one per distinct primary prefix of a long code.
	if cap(dst) < size {
		dst = make([]hentry, size, size*2)
	}
	dst = dst[:size]
	for i := range dst {
		dst[i] = 0
	}
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		n := int(l)
		c := reverseBits(next[n], n)
		next[n]++
		e, err := symEntry(tk, sym, n)
		if err != nil {
			return nil, err
		}
		if n <= primary {
			for i := c; i < size; i += 1 << n {
				dst[i] = e
			}
			continue
		}
		p := c & (size - 1)
		pe := dst[p]
		if pe.kind() != kindSub {
			start := len(dst)
			for i := 0; i < 1<<subBits; i++ {
				dst = append(dst, 0)
			}
			pe = mkentry(subBits, kindSub, 0, start)
			dst[p] = pe
		}
		// Within the subtable the code's remaining n-primary bits are
		// consumed; the entry's length is that remainder.
		se := hentry(uint32(e)&^15 | uint32(n-primary))
		for i := c >> primary; i < 1<<subBits; i += 1 << (n - primary) {
			dst[pe.value()+i] = se
		}
	}
	return dst, nil
}

var fixedTables struct {
	once sync.Once
	lit  []hentry
	dist []hentry
}

// fixed returns the tables of the fixed Huffman code (RFC 1951 3.2.6).
func fixed() ([]hentry, []hentry) {
	fixedTables.once.Do(func() {
		var lens [288]uint8
		for i := range lens {
			switch {
			case i < 144:
				lens[i] = 8
			case i < 256:
				lens[i] = 9
			case i < 280:
				lens[i] = 7
			default:
				lens[i] = 8
			}
		}
		lit, err := buildTable(nil, litLenTable, lens[:], litPrimaryBits)
		if err != nil {
			panic(err)
		}
		var dl [30]uint8
		for i := range dl {
			dl[i] = 5
		}
		dist, err := buildTable(nil, distTable, dl[:], distPrimaryBits)
		if err != nil {
			panic(err)
		}
		fixedTables.lit, fixedTables.dist = lit, dist
	})
	return fixedTables.lit, fixedTables.dist
}
