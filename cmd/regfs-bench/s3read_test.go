package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver/s3/s3test"
)

// checkS3Rows checks the S rows of a tiny run (TestBenchTiny): present,
// with figures, wherever versitygw is installed, and in CI, where it must
// be. No figure is checked against its target.
func checkS3Rows(t *testing.T, rep *Report, table string) {
	t.Helper()
	if _, err := exec.LookPath("versitygw"); err != nil && !s3test.InCI() {
		t.Log("versitygw not installed: the S rows were left out")
		return
	}
	wantRows(t, rep, table, []rowWant{
		{"S1", "ranged GETs of the object with aws-sdk-go-v2"},
		{"S1", "bare bazil file system over S3"},
		{"S1", "the plain ranged GETs above"},
		{"S1", "regfs on the filesystem driver"},
		{"S2", "regfs on the filesystem driver, second read"},
		{"S5", "one ranged GET of 1 byte"},
		{"S5", "a List, then a ranged GET of 64 KiB"},
		{"S5", "head -c1 of the layer's file"},
		{"S5", "head -c1 through a fresh bare bazil.org/fuse file system over S3"},
		{"S5", "one ranged GET of 1 byte (the ceiling FUSE and head"},
		{"S6", "the cache budget"},
	})
}

func TestParseFlagsOnlyS(t *testing.T) {
	cfg, err := parseFlags([]string{"-only", "s2,S5,P2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"S1", "S5", "P1"}; !slices.Equal(cfg.Only, want) {
		t.Errorf("-only s2,S5,P2: %q, want %q", cfg.Only, want)
	}
	for _, bad := range []string{"S7", "S0", "P9", "X1"} {
		if _, err := parseFlags([]string{"-only", bad}, io.Discard); err == nil {
			t.Errorf("-only %s accepted", bad)
		}
	}
}

// TestBareS3 checks that the bare file system over S3 (the ceiling of S1)
// serves the object's bytes: through a real mount, whole, and by its
// handle read in order, out of order and back behind the parts it holds.
func TestBareS3(t *testing.T) {
	needFUSE(t)
	srv := s3test.Start(t)
	ctx := context.Background()
	const part = 1 << 20
	data := make([]byte, 3*part+12345)
	rand.Read(data)
	key := "some/object"
	e := &s3Env{srv: srv, client: srv.Client()}
	if err := srv.CreateBucket(ctx, s3Bucket); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.RemoveBucket(ctx, s3Bucket); err != nil {
			t.Error(err)
		}
	})

	t.Run("handle", func(t *testing.T) {
		f := &bareS3File{e: e, key: key, size: int64(len(data)), part: part, parallel: 2}
		h, err := f.Open(ctx, &fuse.OpenRequest{Flags: fuse.OpenReadOnly}, &fuse.OpenResponse{})
		if err != nil {
			t.Fatal(err)
		}
		defer h.(fs.HandleReleaser).Release(ctx, &fuse.ReleaseRequest{})
		for _, r := range []struct {
			off  int64
			size int
		}{
			{0, 128 << 10}, {part - 100, 200}, {2*part + 5, 128 << 10}, {part + 7, 1000}, // in parts held
			{10, 4096},                    // behind them: a GET of its own
			{3 * part, 128 << 10},         // the last part, short
			{int64(len(data)) - 10, 4096}, // the end
			{int64(len(data)) + 1, 4096},  // past it
		} {
			resp := &fuse.ReadResponse{Data: make([]byte, 0, r.size)}
			if err := h.(fs.HandleReader).Read(ctx, &fuse.ReadRequest{Offset: r.off, Size: r.size}, resp); err != nil {
				t.Fatalf("read %d at %d: %v", r.size, r.off, err)
			}
			want := data[min(r.off, int64(len(data))):min(r.off+int64(r.size), int64(len(data)))]
			if !bytes.Equal(resp.Data, want) {
				t.Errorf("read %d at %d: %d bytes, not the object's %d", r.size, r.off, len(resp.Data), len(want))
			}
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		// Reads far apart at once, as no kernel read-ahead sends them:
		// parts are dropped and their buffers reused while others read.
		f := &bareS3File{e: e, key: key, size: int64(len(data)), part: part, parallel: 2}
		h, err := f.Open(ctx, &fuse.OpenRequest{Flags: fuse.OpenReadOnly}, &fuse.OpenResponse{})
		if err != nil {
			t.Fatal(err)
		}
		defer h.(fs.HandleReleaser).Release(ctx, &fuse.ReleaseRequest{})
		const step = 128 << 10
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range len(data)/step + 1 {
					off := int64((i*7+g*5)%(len(data)/step+1)) * step
					resp := &fuse.ReadResponse{Data: make([]byte, 0, step)}
					if err := h.(fs.HandleReader).Read(ctx, &fuse.ReadRequest{Offset: off, Size: step}, resp); err != nil {
						t.Error(err)
						return
					}
					if want := data[off:min(off+step, int64(len(data)))]; !bytes.Equal(resp.Data, want) {
						t.Errorf("read at %d: not the object's bytes", off)
					}
				}
			})
		}
		wg.Wait()
	})

	t.Run("mount", func(t *testing.T) {
		tmp := t.TempDir()
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		b := &bench{tmp: tmp, self: self, mounts: newMountSet(tmp)}
		defer func() {
			if err := b.mounts.closeAll(); err != nil {
				t.Error(err)
			}
		}()
		m, err := b.startBareS3(e, key, int64(len(data)), part, 2)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(m.dir, bareS3Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("read %d bytes through the mount, not the object's %d", len(got), len(data))
		}
	})
}
