package s3

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/regfs/regfs/driver"
)

// deleteBatch is the most keys one DeleteObjects request takes.
const deleteBatch = 1000

// errMoveDir is returned by Move for a directory: S3 has no rename, and
// copying a tree key by key is neither atomic nor something regfs needs.
var errMoveDir = errors.New("moving a directory is not supported")

// list calls fn for every page of keys under prefix, following continuation
// tokens; with delimiter "/" the pages hold direct children only. Every page
// is its own request with its own deadline.
func (d *impl) list(ctx context.Context, path, prefix, delimiter string, fn func(*s3.ListObjectsV2Output) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix}
	if delimiter != "" {
		in.Delimiter = &delimiter
	}
	return d.listFrom(ctx, path, in, fn)
}

// listFrom is list of the pages that in asks for, from its continuation
// token on if it has one.
func (d *impl) listFrom(ctx context.Context, path string, in *s3.ListObjectsV2Input, fn func(*s3.ListObjectsV2Output) error) error {
	pages := s3.NewListObjectsV2Paginator(d.client, in)
	for pages.HasMorePages() {
		cctx, cancel := d.callCtx(ctx, 0)
		page, err := pages.NextPage(cctx)
		cancel()
		if err != nil {
			return d.opErr("ListObjectsV2", path, err)
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

// rel returns the driver path of key, which starts with the root prefix, or
// false if key is not one (a name no driver path can have).
func (d *impl) rel(key string) (string, bool) {
	p := "/" + strings.TrimPrefix(key, d.prefix)
	return p, driver.ValidPath(p)
}

func (d *impl) List(ctx context.Context, path string) ([]string, error) {
	prefix := d.dirPrefix(path)
	var names []string
	add := func(key string) {
		name := strings.TrimSuffix(strings.TrimPrefix(key, prefix), "/")
		if driver.ValidComponent(name) {
			names = append(names, driver.Child(path, name))
		}
	}
	err := d.list(ctx, path, prefix, "/", func(page *s3.ListObjectsV2Output) error {
		for _, cp := range page.CommonPrefixes {
			add(aws.ToString(cp.Prefix))
		}
		for _, obj := range page.Contents {
			add(aws.ToString(obj.Key))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(names) == 0 && path != "/" {
		return nil, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// walkProbe is how many keys the first request of a Walk asks for.
const walkProbe = 100

// Walk lists the keys below path in one paged listing without a delimiter
// (a request per 1,000 keys, not one per directory), whose first page asks
// for walkProbe keys: a small tree, such as a repository's _layers/, is
// one request. A larger one is walked from a delimited listing of its
// children (a request per 1,000 children), and only when fn descends into
// a directory (returns nil for it) are the rest of the keys listed, from
// the first page on. So a walk that skips every directory below it, as
// listing the repositories of a namespace does, costs two requests however
// many keys lie below (one when it says so, below), and a walk of a whole large tree two more than the
// flat listing alone. Keys are not in tree order ("a-b" sorts before
// "a/x", but the directory "a" comes before "a-b"): the flat listing is
// held in memory, about 100 bytes a key, and sorted before it is walked.
//
// A caller that wants the children only (driver.WithChildrenWalk), as the
// listing of a namespace does, gets the delimited listing alone: on a
// large tree the first 100 keys cost a server that walks its directories
// (versitygw's posix backend) as much as the listing itself.
func (d *impl) Walk(ctx context.Context, path string, fn driver.WalkFn) error {
	prefix := d.dirPrefix(path)
	t := newTree(d, path)
	var next *string // where the flat listing goes on after the first page
	if !driver.ChildrenWalk(ctx) {
		in := &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix, MaxKeys: aws.Int32(walkProbe)}
		cctx, cancel := d.callCtx(ctx, 0)
		first, err := d.client.ListObjectsV2(cctx, in)
		cancel()
		if err != nil {
			return d.opErr("ListObjectsV2", path, err)
		}
		t.add(first)
		if !aws.ToBool(first.IsTruncated) {
			if len(t.entries) == 0 && path != "/" {
				return driver.PathNotFoundError{Path: path, Driver: Name}
			}
			return driver.WalkEntries(t.sorted(), fn)
		}
		next = first.NextContinuationToken
	}
	children, err := d.listChildren(ctx, path)
	if err != nil {
		return err
	}
	if len(children) == 0 && path != "/" {
		return driver.PathNotFoundError{Path: path, Driver: Name}
	}
	for _, c := range children {
		err := fn(c)
		switch {
		case err == driver.ErrSkipDir || (err == nil && !c.IsDir):
			continue
		case err != nil:
			return err
		}
		// fn descends into c: the rest of the walk comes from the flat
		// listing, from c's first child on.
		rest := &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix, ContinuationToken: next}
		err = d.listFrom(ctx, path, rest, func(page *s3.ListObjectsV2Output) error {
			t.add(page)
			return nil
		})
		if err != nil {
			return err
		}
		entries := t.sorted()
		i, _ := slices.BinarySearchFunc(entries, c.Path, func(e driver.FileInfo, p string) int { return treeCompare(e.Path, p) })
		for i < len(entries) && entries[i].Path == c.Path {
			i++
		}
		return driver.WalkEntries(entries[i:], fn)
	}
	return nil
}

// listChildren returns the direct children of the directory at path, in
// tree order, from one delimited listing: objects with their size and
// time, directories from the common prefixes. Names that are not valid
// path components are left out.
func (d *impl) listChildren(ctx context.Context, path string) ([]driver.FileInfo, error) {
	prefix := d.dirPrefix(path)
	var out []driver.FileInfo
	err := d.list(ctx, path, prefix, "/", func(page *s3.ListObjectsV2Output) error {
		for _, cp := range page.CommonPrefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), prefix), "/")
			if driver.ValidComponent(name) {
				out = append(out, driver.FileInfo{Path: driver.Child(path, name), IsDir: true})
			}
		}
		for _, obj := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(obj.Key), prefix)
			if driver.ValidComponent(name) {
				out = append(out, driver.FileInfo{
					Path:    driver.Child(path, name),
					Size:    aws.ToInt64(obj.Size),
					ModTime: aws.ToTime(obj.LastModified),
				})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b driver.FileInfo) int {
		if c := treeCompare(a.Path, b.Path); c != 0 {
			return c
		}
		if a.IsDir == b.IsDir {
			return 0
		}
		if a.IsDir {
			return -1
		}
		return 1
	})
	// A name both an object and a directory (written by another tool) is
	// listed once, as the directory.
	return slices.CompactFunc(out, func(a, b driver.FileInfo) bool { return a.Path == b.Path }), nil
}

// tree collects the objects below path from pages of a flat listing, and
// the directories they make up.
type tree struct {
	d       *impl
	path    string
	entries []driver.FileInfo
	dirs    map[string]bool
}

func newTree(d *impl, path string) *tree {
	return &tree{d: d, path: path, dirs: map[string]bool{}}
}

// add adds the objects of page whose keys are driver paths.
func (t *tree) add(page *s3.ListObjectsV2Output) {
	for _, obj := range page.Contents {
		p, ok := t.d.rel(aws.ToString(obj.Key))
		if !ok {
			continue
		}
		t.entries = append(t.entries, driver.FileInfo{
			Path:    p,
			Size:    aws.ToInt64(obj.Size),
			ModTime: aws.ToTime(obj.LastModified),
		})
		for dir := parent(p); len(dir) > len(t.path) && !t.dirs[dir]; dir = parent(dir) {
			t.dirs[dir] = true
			t.entries = append(t.entries, driver.FileInfo{Path: dir, IsDir: true})
		}
	}
}

// sorted returns the entries in tree order.
func (t *tree) sorted() []driver.FileInfo {
	slices.SortFunc(t.entries, func(a, b driver.FileInfo) int { return treeCompare(a.Path, b.Path) })
	return t.entries
}

// parent returns the directory of a path other than "/".
func parent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i == 0 {
		return "/"
	}
	return p[:i]
}

// treeCompare orders paths parents before children and siblings by name:
// byte order with '/' below every other byte.
func treeCompare(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		switch {
		case a[i] == '/':
			return -1
		case b[i] == '/':
			return 1
		case a[i] < b[i]:
			return -1
		default:
			return 1
		}
	}
	return len(a) - len(b)
}

// Delete removes the keys below "path/" in batches as the listing pages
// come (so that memory does not grow with the tree), or else the object at
// path. It never removes a key that merely starts with path ("/ab" for
// "/a").
func (d *impl) Delete(ctx context.Context, path string) error {
	found := false
	err := d.list(ctx, path, d.dirPrefix(path), "", func(page *s3.ListObjectsV2Output) error {
		keys := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, obj := range page.Contents {
			keys = append(keys, types.ObjectIdentifier{Key: obj.Key})
		}
		found = found || len(keys) > 0
		for batch := range slices.Chunk(keys, deleteBatch) {
			if err := d.deleteObjects(ctx, path, batch); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || found || path == "/" {
		return err
	}
	if _, err := d.head(ctx, path); err != nil {
		return err
	}
	return d.deleteObject(ctx, path, d.key(path))
}

// deleteObjects deletes up to deleteBatch keys in one request.
func (d *impl) deleteObjects(ctx context.Context, path string, keys []types.ObjectIdentifier) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	out, err := d.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: &d.bucket,
		Delete: &types.Delete{Objects: keys, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return d.opErr("DeleteObjects", path, err)
	}
	for _, e := range out.Errors {
		if aws.ToString(e.Code) == "NoSuchKey" {
			continue // gone already: what was wanted
		}
		return d.opErr("DeleteObjects", path, fmt.Errorf("%d keys not deleted, first %s: %s: %s",
			len(out.Errors), aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
	}
	return nil
}

func (d *impl) deleteObject(ctx context.Context, path, key string) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	if _, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: &key}); err != nil {
		return d.fail("DeleteObject", path, err)
	}
	return nil
}

// Move copies the object server side (CopyObject, or a multipart upload of
// UploadPartCopy parts above the 5 GiB CopyObject limit), then deletes the
// source. The copy is pinned to the ETag seen, so a source replaced in
// between fails the move instead of moving the wrong bytes.
func (d *impl) Move(ctx context.Context, src, dst string) error {
	out, err := d.head(ctx, src)
	if driver.IsNotFound(err) {
		if isDir, lerr := d.hasChildren(ctx, src); lerr == nil && isDir {
			return &driver.Error{Driver: Name, Op: "Move", Path: src, Err: errMoveDir}
		}
	}
	if err != nil {
		return err
	}
	if src == dst {
		return nil
	}
	size, srcKey, dstKey := aws.ToInt64(out.ContentLength), d.key(src), d.key(dst)
	if size <= d.maxCopySize {
		cctx, cancel := d.callCtx(ctx, size)
		defer cancel()
		_, err := d.client.CopyObject(cctx, &s3.CopyObjectInput{
			Bucket:            &d.bucket,
			Key:               &dstKey,
			CopySource:        aws.String(d.bucket + "/" + srcKey), // see copyParts
			CopySourceIfMatch: out.ETag,
		})
		if err != nil {
			return d.fail("CopyObject", src, err)
		}
	} else {
		id, err := d.createUpload(ctx, dst)
		if err != nil {
			return err
		}
		parts, err := d.copyParts(ctx, src, id, dstKey, srcKey, size, out.ETag)
		if err == nil {
			err = d.completeUpload(ctx, dst, dstKey, id, parts)
		}
		if err != nil {
			d.abort(dst, dstKey, id)
			return err
		}
	}
	return d.deleteObject(ctx, src, srcKey)
}
