package image

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"
)

// FuzzInflate: whatever compress/gzip writes, at any level, decodes to the
// same bytes, and from every block boundary too.
func FuzzInflate(f *testing.F) {
	f.Add([]byte("hello, hello, hello"), uint8(6))
	f.Add(bytes.Repeat([]byte{0}, 70000), uint8(1))
	f.Add(testData(11, 200000), uint8(9))
	f.Fuzz(func(t *testing.T, data []byte, level uint8) {
		lv := int(level%12) - 2 // HuffmanOnly .. BestCompression
		gz := gzipBytes(t, data, lv)
		in := newInflater()
		in.resetGzip(bytes.NewReader(gz), int64(len(gz)))
		var cps []cp
		in.onBlock = func(in *inflater) {
			cps = append(cps, cp{in.bitPos(), in.decodedPos(), append([]byte(nil), in.window()...)})
		}
		got, err := io.ReadAll(in)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("level %d: err %v, equal %v", lv, err, bytes.Equal(got, data))
		}
		for _, c := range cps {
			r := newInflater()
			if err := r.resumeAt(bytes.NewReader(gz), int64(len(gz)), c.bit, c.out, c.win); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data[c.out:]) {
				t.Fatalf("from %d: err %v", c.out, err)
			}
		}
	})
}

// FuzzInflateArbitrary: any input decodes without a panic, and whatever
// compress/gzip accepts decodes to the same bytes here.
func FuzzInflateArbitrary(f *testing.F) {
	f.Add(gzipBytes(f, []byte("a small layer"), 6))
	f.Add(gzipBytes(f, testData(12, 5000), 1))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, gz []byte) {
		const limit = 8 << 20
		in := newInflater()
		in.resetGzip(bytes.NewReader(gz), int64(len(gz)))
		got, err := io.ReadAll(io.LimitReader(in, limit))
		var want []byte
		var werr error
		zr, werr := gzip.NewReader(bytes.NewReader(gz))
		if werr == nil {
			want, werr = io.ReadAll(io.LimitReader(zr, limit))
		}
		if werr == nil && len(want) < limit {
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("compress/gzip reads %d bytes, this decoder %d: %v", len(want), len(got), err)
			}
		}
	})
}
