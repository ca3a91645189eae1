package s3

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/driver/base"
)

// BenchmarkCacheReader reads the object through the block cache, in 128
// KiB reads as FUSE sends them but without FUSE: what the read path costs
// before the kernel. Compare with BenchmarkRangedGET. The cases: regfs's S3
// setting (4 MiB blocks, 8 read ahead) with open-ended streams as before
// issue 15 and with one bounded GET per block (Ranged, as now), and larger
// blocks with more read ahead (docs/benchmarks.md, "S3 reads (issue 15)").
func BenchmarkCacheReader(b *testing.B) {
	d, path, data := benchObject(b)
	bd := base.New(d)
	for _, tc := range []struct {
		ranged bool
		bs, ra int
	}{{false, 4 << 20, 8}, {true, 4 << 20, 8}, {true, 8 << 20, 16}} {
		ranged := tc.ranged
		b.Run(fmt.Sprintf("ranged=%v/block=%dMiB/readahead=%d", ranged, tc.bs>>20, tc.ra), func(b *testing.B) {
			buf := make([]byte, benchSize)
			b.SetBytes(benchSize)
			for b.Loop() {
				c := cache.NewWithOptions(cache.Options{Budget: 256 << 20, BlockSize: tc.bs, ReadAhead: tc.ra, Ranged: ranged})
				r := c.NewReader("blob", benchSize, func(ctx context.Context, off int64) (io.ReadCloser, error) {
					return bd.Reader(ctx, path, off)
				})
				for off := 0; off < benchSize; off += 128 << 10 {
					if _, err := r.ReadAt(buf[off:off+128<<10], int64(off)); err != nil {
						b.Fatal(err)
					}
				}
				r.Close()
			}
			if !bytes.Equal(buf, data) {
				b.Fatal("wrong bytes")
			}
		})
	}
}
