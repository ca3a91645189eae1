// Package drivertest wraps a storage driver to show the layers above it a
// tree that the in-memory driver cannot hold: directories that cannot be
// listed (as after chmod 000, which root is never refused) and symbolic
// links (as the filesystem driver reports them). Tests of fsck and of the
// layout walker use it.
package drivertest

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/regfs/regfs/driver"
)

// ErrPermission is the cause of every listing and read this package fails.
var ErrPermission = errors.New("permission denied")

// Driver passes every call to the wrapped driver, except that the
// directories in Unreadable cannot be listed or read below (Walk and List
// fail as the filesystem driver's do, with a *driver.Error naming the
// directory), and the paths in Symlinks are reported by Walk as symbolic
// links (Symlink set, IsDir clear, nothing below them visited) and fail
// every other call, as the filesystem driver does not follow them.
type Driver struct {
	driver.StorageDriver
	Unreadable []string
	Symlinks   []string
}

func under(p string, dirs []string) (string, bool) {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return d, true
		}
	}
	return "", false
}

func (d *Driver) refuse(op, p string) error {
	if dir, ok := under(p, d.Unreadable); ok && (p != dir || op == "List" || op == "Walk") {
		return &driver.Error{Driver: d.Name(), Op: op, Path: dir, Err: ErrPermission}
	}
	if link, ok := under(p, d.Symlinks); ok {
		return &driver.Error{Driver: d.Name(), Op: op, Path: link, Err: errors.New("symbolic link")}
	}
	return nil
}

// Walk implements driver.StorageDriver.
func (d *Driver) Walk(ctx context.Context, p string, fn driver.WalkFn) error {
	if err := d.refuse("Walk", p); err != nil {
		return err
	}
	return d.StorageDriver.Walk(ctx, p, func(fi driver.FileInfo) error {
		if dir, ok := under(fi.Path, d.Unreadable); ok && fi.Path != dir {
			return &driver.Error{Driver: d.Name(), Op: "List", Path: dir, Err: ErrPermission}
		}
		if slices.Contains(d.Symlinks, fi.Path) {
			fi.Symlink, fi.IsDir, fi.Size = true, false, 7
			if err := fn(fi); err != nil && err != driver.ErrSkipDir {
				return err
			}
			return driver.ErrSkipDir
		}
		return fn(fi)
	})
}

// List implements driver.StorageDriver.
func (d *Driver) List(ctx context.Context, p string) ([]string, error) {
	if err := d.refuse("List", p); err != nil {
		return nil, err
	}
	return d.StorageDriver.List(ctx, p)
}

// GetContent implements driver.StorageDriver.
func (d *Driver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if err := d.refuse("GetContent", p); err != nil {
		return nil, err
	}
	return d.StorageDriver.GetContent(ctx, p)
}

// Reader implements driver.StorageDriver.
func (d *Driver) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	if err := d.refuse("Reader", p); err != nil {
		return nil, err
	}
	return d.StorageDriver.Reader(ctx, p, off)
}

// Stat implements driver.StorageDriver.
func (d *Driver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	if err := d.refuse("Stat", p); err != nil {
		return driver.FileInfo{}, err
	}
	return d.StorageDriver.Stat(ctx, p)
}
