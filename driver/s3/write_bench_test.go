package s3

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/regfs/regfs/driver/base"
)

// throttled sends each request's body at most rate bytes a second, as one
// connection to a distant endpoint does, so that the benchmark shows what
// sending parts one at a time costs when a request's time is its
// transfer, not the CPU of a shared 2-core machine running the server.
type throttled struct{ rate float64 }

func (t throttled) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.ContentLength > 0 {
		req.Body = &slowBody{ReadCloser: req.Body, rate: t.rate, start: time.Now()}
	}
	return http.DefaultTransport.RoundTrip(req)
}

type slowBody struct {
	io.ReadCloser
	rate  float64
	start time.Time
	n     int64
}

func (b *slowBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if ahead := time.Duration(float64(b.n)/b.rate*float64(time.Second)) - time.Since(b.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return n, err
}

// BenchmarkWriter writes 128 MiB through the driver's writer in 128 KiB
// writes (what FUSE hands over), with every request's body throttled to
// 25 MB/s, alternately with parts sent one at a time by Write (the writer
// before parts were sent in the background: no send to spare in the
// driver) and with partsInFlight in the background, and reports both:
//
//	go test -run '^$' -bench BenchmarkWriter -benchtime 2x ./driver/s3/
func BenchmarkWriter(b *testing.B) {
	const size = 128 << 20
	requireServer(b)
	d := newTestDriver(b, nil)
	p := testParams
	p.HTTPClient = &http.Client{Transport: throttled{rate: 25e6}}
	client, err := newClient(context.Background(), p)
	if err != nil {
		b.Fatal(err)
	}
	d.client = client
	bd := base.New(d)
	data := randomBytes(size, 5)
	ctx := context.Background()
	write := func() time.Duration {
		start := time.Now()
		w, err := bd.Writer(ctx, "/obj", false)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < size; off += 128 << 10 {
			if _, err := w.Write(data[off : off+128<<10]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var serial, background time.Duration
	sends := d.sends
	for b.Loop() {
		d.sends = make(chan struct{}) // never free: Write sends each part itself
		serial += write()
		d.sends = sends
		background += write()
	}
	if err := bd.Delete(ctx, "/obj"); err != nil {
		b.Fatal(err)
	}
	n := float64(b.N) * size / 1e6
	b.ReportMetric(n/serial.Seconds(), "serial-MB/s")
	b.ReportMetric(n/background.Seconds(), "background-MB/s")
	fmt.Printf("writer, 25 MB/s a request: parts one at a time %.0f MB/s, %d in the background %.0f MB/s\n",
		n/serial.Seconds(), partsInFlight, n/background.Seconds())
}
