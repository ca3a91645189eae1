package s3

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
)

// The benchmarks read one 256 MiB object from the test server. They are the
// baseline `make bench` compares regfs's read path with: what a plain client
// gets from the same server.
const (
	benchSize     = 256 << 20
	benchPart     = 8 << 20
	benchParallel = 8
)

// benchObject writes the object through the driver (a multipart upload)
// and removes it when the benchmark ends.
func benchObject(b *testing.B) (*impl, string, []byte) {
	b.Helper()
	d := newTestDriver(b, nil)
	data := randomBytes(benchSize, 42)
	ctx := context.Background()
	w, err := base.New(d).Writer(ctx, "/blob", false)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := base.New(d).Delete(context.Background(), "/blob"); err != nil {
			b.Error(err)
		}
	})
	return d, "/blob", data
}

// BenchmarkRangedGET reads the object as 8 MiB ranged GETs, 8 at a time,
// with the SDK alone.
func BenchmarkRangedGET(b *testing.B) {
	d, path, data := benchObject(b)
	key := d.key(path)
	buf := make([]byte, benchSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, benchParallel)
		errs := make(chan error, benchSize/benchPart)
		for off := 0; off < benchSize; off += benchPart {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				out, err := d.client.GetObject(context.Background(), &s3.GetObjectInput{
					Bucket: &d.bucket,
					Key:    &key,
					Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, off+benchPart-1)),
				})
				if err == nil {
					_, err = io.ReadFull(out.Body, buf[off:off+benchPart])
					out.Body.Close()
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	if !bytes.Equal(buf, data) {
		b.Fatal("the bytes read differ from those written")
	}
}

// BenchmarkDriverReader reads the object with one driver Reader from
// offset 0: one GET streamed to the end, what the block cache improves on.
func BenchmarkDriverReader(b *testing.B) {
	d, path, data := benchObject(b)
	var drv driver.StorageDriver = base.New(d)
	buf := make([]byte, benchSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		r, err := drv.Reader(context.Background(), path, 0)
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.ReadFull(r, buf)
		r.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if !bytes.Equal(buf, data) {
		b.Fatal("the bytes read differ from those written")
	}
}
