package s3

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver"
)

// TestWalkSkippingCostsOneListing: a Walk whose function skips every
// directory below it (the store listing the repositories of a namespace)
// is one delimited listing, however many keys lie below; a Walk that
// descends is that listing and the flat one, and visits what the flat
// listing alone would, in the same order, from the directory it descended
// into on.
func TestWalkSkippingCostsOneListing(t *testing.T) {
	rec := &recorder{}
	d := newTestDriver(t, nil)
	p := testParams
	p.HTTPClient = &http.Client{Transport: rec}
	client, err := newClient(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	d.client = client
	ctx := t.Context()
	var want []string
	for i := range 12 {
		repo := fmt.Sprintf("/repos/r%02d", i)
		for _, k := range []string{"_layers/sha256/ab/link", "_manifests/tags/latest/current/link", "_uploads/x/data"} {
			if err := d.put(ctx, repo+"/"+k, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, repo)
	}
	if err := d.put(ctx, "/repos/file", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	// A key no driver path can name is left out, as by the flat listing.
	if _, err := d.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: aws.String(d.prefix + "repos/Bad Name/x")}); err != nil {
		t.Fatal(err)
	}
	rec.take()

	var got []string
	err = d.Walk(ctx, "/repos", func(fi driver.FileInfo) error {
		if fi.IsDir {
			got = append(got, fi.Path)
			return driver.ErrSkipDir
		}
		if fi.Path != "/repos/file" || fi.Size != 3 || fi.ModTime.IsZero() {
			t.Errorf("object %+v, want /repos/file of 3 bytes with a time", fi)
		}
		return nil
	})
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Walk skipping = %q, %v; want %q", got, err, want)
	}
	if calls := rec.take(); !slices.Equal(calls, []string{"GET"}) {
		t.Errorf("Walk skipping every directory sent %q, want one listing", calls)
	}

	// The flat listing alone is the reference of a descending walk.
	flat, err := d.listTree(ctx, "/repos")
	if err != nil {
		t.Fatal(err)
	}
	rec.take()
	for _, descend := range []string{"/repos/r00", "/repos/r05", "/repos/r11"} {
		var visited, wantVisit []string
		for _, fi := range flat {
			wantVisit = append(wantVisit, fi.Path)
		}
		err := d.Walk(ctx, "/repos", func(fi driver.FileInfo) error {
			visited = append(visited, fi.Path)
			if fi.IsDir && fi.Path < descend && len(fi.Path) == len(descend) {
				return driver.ErrSkipDir
			}
			return nil
		})
		// What the skipped repositories held is not visited.
		wantVisit = slices.DeleteFunc(wantVisit, func(p string) bool {
			return len(p) > len(descend) && p[:len(descend)] < descend && p[len(descend)] == '/'
		})
		if err != nil || !slices.Equal(visited, wantVisit) {
			t.Errorf("Walk descending into %s = %q, %v;\nwant %q", descend, visited, err, wantVisit)
		}
		if calls := rec.take(); len(calls) != 2 {
			t.Errorf("Walk descending into %s sent %q, want two listings", descend, calls)
		}
	}

	if err := d.Delete(ctx, "/repos"); err != nil {
		t.Fatal(err)
	}
}
