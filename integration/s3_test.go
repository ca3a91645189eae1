package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	regfsfs "github.com/regfs/regfs/fs"
)

// visibleWithin bounds how long a change made through one mount may take to
// show through another mount of the same bucket: the tag and namespace
// validity the kernel caches (fs.DefaultEntryTTL, 1 s) plus slack for a
// race-enabled daemon's S3 round trips.
const visibleWithin = regfsfs.DefaultEntryTTL + 2*time.Second

// eventually polls cond every 50 ms until it holds or visibleWithin has
// passed since start; it returns how long it took, or fails t with what.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > visibleWithin {
			t.Fatalf("%s: not within %v", what, visibleWithin)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// TestS3TwoMounts mounts one bucket and prefix twice, as two hosts sharing
// a registry would: what one pushes the other lists and reads, a re-tag shows
// through the other within the tag validity, and two uploads of one digest
// through both mounts at once both succeed with the blob stored once.
func TestS3TwoMounts(t *testing.T) {
	a := startMount(t, "s3", mountOpts{Prefix: "shared/registry"})
	b := startMount(t, "s3", mountOpts{Bucket: a.Bucket, Prefix: a.Prefix})

	// b looks first, so that it has seen the repository missing.
	if _, err := os.Stat(b.path("app/_manifests/v1")); !os.IsNotExist(err) {
		t.Fatalf("stat of a tag not pushed yet = %v, want not exist", err)
	}
	mf := pushImage(t, a, "app", "v1", 2)
	took := eventually(t, "tag pushed through a, read through b", func() bool {
		got, err := os.ReadFile(b.path("app/_manifests/v1"))
		return err == nil && bytes.Equal(got, mf)
	})
	t.Logf("a's push visible through b after %v", took)
	layers := lines(sh(t, "ls "+b.path("app/_layers")))
	if len(layers) != 3 { // config + 2 layers
		t.Fatalf("b lists %d layers, want 3: %q", len(layers), layers)
	}
	for _, l := range layers {
		sum := strings.Fields(sh(t, "sha256sum "+b.path("app/_layers", l)))[0]
		if "sha256:"+sum != l {
			t.Errorf("layer %s read through b hashes to %s", l, sum)
		}
	}

	// A re-tag through a replaces what b reads within the tag validity.
	mf2 := pushImage(t, a, "app", "v1", 1)
	took = eventually(t, "re-tag through a, read through b", func() bool {
		got, err := os.ReadFile(b.path("app/_manifests/v1"))
		return err == nil && bytes.Equal(got, mf2)
	})
	t.Logf("a's re-tag visible through b after %v", took)

	// And the other way round.
	layer := randomBytes(t, 300000)
	d := pushLayer(t, b, "app", layer)
	eventually(t, "layer pushed through b, read through a", func() bool {
		got, err := os.ReadFile(a.path("app/_layers", d))
		return err == nil && bytes.Equal(got, layer)
	})

	t.Run("SameDigestFromBoth", func(t *testing.T) { testSameDigestTwoMounts(t, a, b) })
}

// testSameDigestTwoMounts opens an upload of the same digest through both
// mounts, writes the whole layer through each, and closes both at once:
// both closes succeed, both mounts serve the layer, and the bucket holds
// one blob object and no upload.
func testSameDigestTwoMounts(t *testing.T, a, b *mount) {
	content := randomBytes(t, 7<<20+13) // more than one 5 MiB multipart part
	d := sha(content)
	sh(t, fmt.Sprintf("mkdir -p %q %q", a.path("dup"), b.path("dup")))
	var files []*os.File
	for _, m := range []*mount{a, b} {
		f, err := os.OpenFile(m.path("dup/_uploads", d), os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatalf("opening the upload through %s: %v", m.Dir, err)
		}
		files = append(files, f)
	}
	// Interleave the writes, 1 MiB at a time, each file in order.
	for off := 0; off < len(content); off += 1 << 20 {
		chunk := content[off:min(off+1<<20, len(content))]
		for _, f := range files {
			if _, err := f.Write(chunk); err != nil {
				t.Fatalf("writing %s at %d: %v", f.Name(), off, err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(files))
	for i, f := range files {
		wg.Go(func() { errs[i] = f.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			var errno syscall.Errno
			errors.As(err, &errno)
			t.Errorf("close through mount %d: %v (errno %d)", i, err, errno)
		}
	}
	for _, m := range []*mount{a, b} {
		eventually(t, "layer listed through "+m.Dir, func() bool {
			got, err := os.ReadFile(m.path("dup/_layers", d))
			return err == nil && bytes.Equal(got, content)
		})
		if ls := strings.TrimSpace(sh(t, "ls "+m.path("dup/_uploads"))); ls != "" {
			t.Errorf("_uploads through %s after both commits: %q", m.Dir, ls)
		}
	}

	ctx := t.Context()
	v2 := a.Prefix + "/docker/registry/v2/"
	keys, err := a.S3.Keys(ctx, a.Bucket, v2)
	if err != nil {
		t.Fatal(err)
	}
	var blobs, uploads []string
	for _, k := range keys {
		rel := strings.TrimPrefix(k, v2)
		switch {
		case strings.HasPrefix(rel, "blobs/") && strings.Contains(rel, d[7:]):
			blobs = append(blobs, rel)
		case strings.HasPrefix(rel, "repositories/dup/_uploads/"):
			uploads = append(uploads, rel)
		}
	}
	if want := path.Join("blobs/sha256", d[7:9], d[7:], "data"); len(blobs) != 1 || blobs[0] != want {
		t.Errorf("blob objects of %s: %q, want exactly %s", d, blobs, want)
	}
	if len(uploads) > 0 {
		t.Errorf("upload objects left in the bucket: %q", uploads)
	}
	prefix := v2 + "repositories/dup/"
	ups, err := a.S3.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &a.Bucket, Prefix: &prefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) > 0 {
		t.Errorf("%d multipart uploads left under %s", len(ups.Uploads), prefix)
	}
}
