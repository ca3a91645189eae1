package remote

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/store"
)

// rangeServer serves one blob with Range support (http.ServeContent, as
// docker-registry does) and records the Range of every GET.
type rangeServer struct {
	data   []byte
	mu     sync.Mutex
	ranges []string
}

func (s *rangeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	if r.Method == http.MethodGet {
		s.mu.Lock()
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.mu.Unlock()
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.data))
}

func (s *rangeServer) gets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// rangedBlob serves size random bytes (from seed) as a blob of the
// repository "seq" through a Ranged cache of budget blocks of block bytes
// each, read ahead 8 blocks with aheadLoads loads at once.
func rangedBlob(t *testing.T, size int, seed int64, block, budget, aheadLoads int) ([]byte, digest.Digest, *rangeServer, store.Repository) {
	t.Helper()
	data := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(data)
	srv := &rangeServer{data: data}
	c := cache.NewWithOptions(cache.Options{Budget: int64(budget * block), BlockSize: block, ReadAhead: 8, AheadLoads: aheadLoads, Ranged: true, Attempts: 1})
	st := newTestStore(t, srv, Options{Cache: c})
	r, _ := st.Repository("seq")
	return data, digest.FromBytes(data), srv, r
}

// TestSequentialReadSharesGETs: a sequential read of a blob through a
// Ranged cache makes fewer GETs than it loads blocks (loads after the
// first share a GET spanning several), every byte right; random reads get
// a GET of just their block each, right too.
func TestSequentialReadSharesGETs(t *testing.T) {
	const block, blocks = 64 << 10, 32
	data, d, srv, r := rangedBlob(t, block*blocks-1000, 1, block, 64, 8) // a short last block
	ctx := context.Background()

	br, err := r.Layers().Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.NewSectionReader(br, 0, br.Size()))
	br.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("sequential read: %d bytes, %v; equal %v", len(got), err, bytes.Equal(got, data))
	}
	seq := srv.gets()
	if len(seq) > blocks/2 {
		t.Errorf("sequential read of %d blocks: %d GETs (%s), want at most %d", blocks, len(seq), strings.Join(seq, " "), blocks/2)
	}

	// Random reads on a fresh cache: one block's GET each.
	c2 := cache.NewWithOptions(cache.Options{Budget: 64 * block, BlockSize: block, ReadAhead: 8, AheadLoads: 8, Ranged: true, Attempts: 1})
	st2 := newTestStore(t, srv, Options{Cache: c2})
	r2, _ := st2.Repository("seq")
	br2, err := r2.Layers().Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer br2.Close()
	before := len(srv.gets())
	for _, idx := range []int{20, 3, 27, 11} {
		off := int64(idx*block + 100)
		buf := make([]byte, 10)
		if _, err := br2.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+10]) {
			t.Fatalf("random read at %d: %v, bytes equal %v", off, err, bytes.Equal(buf, data[off:off+10]))
		}
	}
	random := srv.gets()[before:]
	for i, idx := range []int{20, 3, 27, 11} {
		want := fmt.Sprintf("bytes=%d-%d", idx*block, (idx+1)*block-1)
		if i >= len(random) || random[i] != want {
			t.Errorf("random reads' GETs %q, want %q at %d", random, want, i)
			break
		}
	}
}

// TestStreamsConcurrentReaders: two readers of the same blob at once, each
// sequential, read the right bytes (their loads share the blocks, not the
// streams).
func TestStreamsConcurrentReaders(t *testing.T) {
	const block, blocks = 32 << 10, 40
	data, d, _, r := rangedBlob(t, block*blocks, 3, block, 16, 4)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			br, err := r.Layers().Open(context.Background(), d)
			if err != nil {
				t.Error(err)
				return
			}
			defer br.Close()
			buf := make([]byte, 8<<10+i*1000)
			var got []byte
			for off := int64(0); off < br.Size(); {
				n, err := br.ReadAt(buf, off)
				got = append(got, buf[:n]...)
				off += int64(n)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
			if !bytes.Equal(got, data) {
				t.Errorf("reader %d: %d bytes, not the blob's", i, len(got))
			}
		})
	}
	wg.Wait()
}

// TestStreamsClosedMidway: a reader closed halfway through a sequential
// read returns from Close (its streams end), and a new reader then reads
// every byte right.
func TestStreamsClosedMidway(t *testing.T) {
	const block, blocks = 32 << 10, 24
	data, d, _, r := rangedBlob(t, block*blocks, 5, block, 8, 8)
	ctx := context.Background()
	br, err := r.Layers().Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4<<10)
	for off := int64(0); off < block*blocks/2; off += int64(len(buf)) {
		if _, err := br.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- br.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close of a reader with streams in flight did not return")
	}
	br, err = r.Layers().Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	got, err := io.ReadAll(io.NewSectionReader(br, 0, br.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after a reader closed midway: %d bytes, %v, equal %v", len(got), err, bytes.Equal(got, data))
	}
}
