package s3

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regfs/regfs/driver"
)

// TestWalkRequests: a Walk of a small tree (walkProbe keys at most) is one
// request. A Walk of a larger one whose function skips every directory
// below it (the store listing the repositories of a namespace) is two
// requests, however many keys lie below; one that descends lists the rest
// of the keys flat, and visits what the flat listing alone would, in the
// same order, from the directory it descended into on.
func TestWalkRequests(t *testing.T) {
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
	const repos = 40 // 120 keys, more than walkProbe
	var want []string
	var wg sync.WaitGroup
	for i := range repos {
		repo := fmt.Sprintf("/repos/r%02d", i)
		wg.Go(func() {
			for _, k := range []string{"_layers/sha256/ab/link", "_manifests/tags/latest/current/link", "_uploads/x/data"} {
				if err := d.put(ctx, repo+"/"+k, []byte("x")); err != nil {
					t.Error(err)
				}
			}
		})
		want = append(want, repo)
	}
	wg.Wait()
	if err := d.put(ctx, "/repos/file", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	// A key no driver path can name is left out, as by the flat listing.
	if _, err := d.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: aws.String(d.prefix + "repos/Bad Name/x")}); err != nil {
		t.Fatal(err)
	}
	// The flat listing alone is the reference.
	ref := newTree(d, "/repos")
	if err := d.list(ctx, "/repos", d.dirPrefix("/repos"), "", func(p *s3.ListObjectsV2Output) error { ref.add(p); return nil }); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, fi := range ref.sorted() {
		all = append(all, fi.Path)
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
	if calls := rec.take(); !slices.Equal(calls, []string{"GET", "GET"}) {
		t.Errorf("Walk skipping every directory sent %q, want two listings", calls)
	}

	// Told that the caller wants the children only: the delimited
	// listing alone.
	got = nil
	err = d.Walk(driver.WithChildrenWalk(ctx), "/repos", func(fi driver.FileInfo) error {
		if fi.IsDir {
			got = append(got, fi.Path)
			return driver.ErrSkipDir
		}
		return nil
	})
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Walk of the children = %q, %v; want %q", got, err, want)
	}
	if calls := rec.take(); !slices.Equal(calls, []string{"GET"}) {
		t.Errorf("Walk of the children sent %q, want one listing", calls)
	}
	if err := d.Walk(driver.WithChildrenWalk(ctx), "/missing", func(driver.FileInfo) error { return nil }); !driver.IsNotFound(err) {
		t.Errorf("Walk of the children of a missing directory: %v, want not found", err)
	}
	rec.take()

	for i, descend := range []string{"/repos/r00", "/repos/r17", "/repos/r39", "/repos/r17"} {
		children := i == 3 // told children only, and descending all the same
		wctx := ctx
		if children {
			wctx = driver.WithChildrenWalk(ctx)
		}
		var visited []string
		err := d.Walk(wctx, "/repos", func(fi driver.FileInfo) error {
			visited = append(visited, fi.Path)
			if fi.IsDir && fi.Path < descend && len(fi.Path) == len(descend) {
				return driver.ErrSkipDir
			}
			return nil
		})
		// What the skipped repositories held is not visited.
		wantVisit := slices.DeleteFunc(slices.Clone(all), func(p string) bool {
			return len(p) > len(descend) && p[:len(descend)] < descend && p[len(descend)] == '/'
		})
		if err != nil || !slices.Equal(visited, wantVisit) {
			t.Errorf("Walk descending into %s = %q, %v;\nwant %q", descend, visited, err, wantVisit)
		}
		if calls := rec.take(); !children && len(calls) != 3 {
			t.Errorf("Walk descending into %s sent %q, want three listings", descend, calls)
		}
	}

	// A small tree is one request.
	var small []string
	err = d.Walk(ctx, "/repos/r05", func(fi driver.FileInfo) error {
		small = append(small, fi.Path)
		return nil
	})
	wantSmall := slices.DeleteFunc(slices.Clone(all), func(p string) bool { return !strings.HasPrefix(p, "/repos/r05/") })
	if err != nil || !slices.Equal(small, wantSmall) {
		t.Errorf("Walk of a repository = %q, %v; want %q", small, err, wantSmall)
	}
	if calls := rec.take(); len(calls) != 1 {
		t.Errorf("Walk of a repository sent %q, want one listing", calls)
	}

	if err := d.Delete(ctx, "/repos"); err != nil {
		t.Fatal(err)
	}
}
