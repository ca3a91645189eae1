package image

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand"
	"sync"
	"testing"
)

// testData returns n bytes that compress somewhat (about 2:1): runs, text,
// noise and repeats of earlier data. Results are kept by seed and size.
func testData(seed int64, n int) []byte {
	testDataMu.Lock()
	defer testDataMu.Unlock()
	key := [2]int64{seed, int64(n)}
	if b, ok := testDataCache[key]; ok {
		return b
	}
	r := rand.New(rand.NewSource(seed))
	b := make([]byte, 0, n+6000)
	words := []string{"layer ", "tar ", "gzip ", "index ", "checkpoint ", "window ", "\n", "regfs "}
	noise := make([]byte, 3000)
	for len(b) < n {
		switch r.Intn(4) {
		case 0:
			for i := r.Intn(200); i > 0; i-- {
				b = append(b, words[r.Intn(len(words))]...)
			}
		case 1:
			b = append(b, bytes.Repeat([]byte{byte(r.Intn(256))}, r.Intn(1000))...)
		case 2:
			k := r.Intn(len(noise))
			r.Read(noise[:k])
			b = append(b, noise[:k]...)
		case 3:
			if len(b) > 100 {
				start := r.Intn(len(b))
				end := min(start+r.Intn(5000), len(b))
				b = append(b, b[start:end]...)
			}
		}
	}
	b = b[:n]
	testDataCache[key] = b
	return b
}

var (
	testDataMu    sync.Mutex
	testDataCache = map[[2]int64][]byte{}
)

func gzipBytes(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestInflateMatchesGzip(t *testing.T) {
	for _, level := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression, gzip.HuffmanOnly} {
		for _, n := range []int{0, 1, 1000, 100000, 600 << 10} {
			data := testData(int64(n+level), n)
			gz := gzipBytes(t, data, level)
			f := newInflater()
			f.resetGzip(bytes.NewReader(gz), int64(len(gz)))
			got, err := io.ReadAll(f)
			if err != nil {
				t.Fatalf("level %d size %d: %v", level, n, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("level %d size %d: output differs (got %d bytes)", level, n, len(got))
			}
		}
	}
}

type cp struct {
	bit, out int64
	win      []byte
}

func TestInflateResumeAtBlocks(t *testing.T) {
	data := testData(7, 2<<20)
	gz := append(gzipBytes(t, data[:1<<20], 6), gzipBytes(t, data[1<<20:], 1)...) // two members
	f := newInflater()
	f.resetGzip(bytes.NewReader(gz), int64(len(gz)))
	var cps []cp
	f.onBlock = func(f *inflater) {
		cps = append(cps, cp{f.bitPos(), f.decodedPos(), append([]byte(nil), f.window()...)})
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("full decode: %v, equal %v", err, bytes.Equal(got, data))
	}
	if len(cps) < 10 {
		t.Fatalf("only %d block boundaries", len(cps))
	}
	for i, c := range cps {
		g := newInflater()
		if err := g.resumeAt(bytes.NewReader(gz), int64(len(gz)), c.bit, c.out, c.win); err != nil {
			t.Fatal(err)
		}
		if g.pos() != c.out {
			t.Fatalf("pos %d, want %d", g.pos(), c.out)
		}
		// To the end from a few; 100 KiB from the others.
		var got []byte
		var err error
		if i%16 == 0 {
			got, err = io.ReadAll(g)
		} else {
			got = make([]byte, min(100<<10, int64(len(data))-c.out))
			_, err = io.ReadFull(g, got)
		}
		if err != nil {
			t.Fatalf("checkpoint %d (out %d): %v", i, c.out, err)
		}
		if !bytes.Equal(got, data[c.out:c.out+int64(len(got))]) {
			t.Fatalf("checkpoint %d (out %d): output differs", i, c.out)
		}
	}
}

func TestInflateTruncatedAndCorrupt(t *testing.T) {
	data := testData(9, 1<<20)
	gz := gzipBytes(t, data, 6)
	for _, cut := range []int{0, 5, 10, 11, 100, len(gz) / 2, len(gz) - 9, len(gz) - 1} {
		f := newInflater()
		f.resetGzip(bytes.NewReader(gz[:cut]), int64(cut))
		got, err := io.ReadAll(f)
		if err == nil {
			t.Fatalf("cut at %d: no error", cut)
		}
		if !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("cut at %d: wrong bytes before the error", cut)
		}
	}
	bad := append([]byte(nil), gz...)
	bad[len(bad)-5] ^= 1 // size in the trailer
	f := newInflater()
	f.resetGzip(bytes.NewReader(bad), int64(len(bad)))
	if _, err := io.ReadAll(f); err == nil {
		t.Fatal("bad trailer: no error")
	}
}

func BenchmarkInflate(b *testing.B) {
	data := testData(1, 32<<20)
	gz := gzipBytes(b, data, 6)
	b.Run("stdlib", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			r, _ := gzip.NewReader(bytes.NewReader(gz))
			io.Copy(io.Discard, r)
		}
	})
	b.Run("image", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		f := newInflater()
		for i := 0; i < b.N; i++ {
			f.resetGzip(bytes.NewReader(gz), int64(len(gz)))
			if _, err := io.Copy(io.Discard, f); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Gzip headers with the optional fields (extra, name, comment).
func TestInflateHeaderFields(t *testing.T) {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Header.Name = "layer.tar"
	w.Header.Comment = "a comment"
	w.Header.Extra = []byte("extra field bytes")
	w.Write([]byte("payload"))
	w.Close()
	f := newInflater()
	f.resetGzip(bytes.NewReader(b.Bytes()), int64(b.Len()))
	got, err := io.ReadAll(f)
	if err != nil || string(got) != "payload" {
		t.Fatalf("got %q, %v", got, err)
	}
}
