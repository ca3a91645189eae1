// Package inmemory is a storage driver that keeps every object in memory. It
// backs `regfs mount --driver inmemory` (a throw-away store) and the store
// tests, which run on it instead of on mocks.
//
// Objects live in a tree of nodes behind one RWMutex. Directories are implied
// by objects: one exists while it has children and disappears with its last
// child, as on S3.
package inmemory

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
)

// Name is the driver's name in errors and logs.
const Name = "inmemory"

var (
	errNotDir = errors.New("a parent is an object, not a directory")
	errIsDir  = errors.New("path is a directory")
	errInside = errors.New("cannot move a directory inside itself")
)

// New returns an empty in-memory driver.
func New() driver.StorageDriver {
	return base.New(&impl{root: newDir()})
}

// node is an object (children == nil) or a directory.
type node struct {
	children map[string]*node
	// data is never modified below len(data) once set: writers append or
	// replace the slice, so a reader can keep reading a snapshot without the
	// lock.
	data    []byte
	modTime time.Time
}

func newDir() *node {
	return &node{children: map[string]*node{}, modTime: time.Now()}
}

func (n *node) isDir() bool { return n.children != nil }

func (n *node) info(path string) driver.FileInfo {
	return driver.FileInfo{Path: path, Size: int64(len(n.data)), ModTime: n.modTime, IsDir: n.isDir()}
}

// impl is the unchecked driver that base.New wraps.
type impl struct {
	mu sync.RWMutex
	// root is the tree; guarded by mu, as is every node below it.
	root *node
}

// components splits a valid path; the root has none.
func components(path string) []string {
	if path == "/" {
		return nil
	}
	return strings.Split(path[1:], "/")
}

// lookup returns the node at path, or nil. Callers hold mu.
func (d *impl) lookup(path string) *node {
	n := d.root
	for _, c := range components(path) {
		if !n.isDir() {
			return nil
		}
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

// mkdirs returns the directory made of comps, creating what is missing.
// Callers hold mu for writing.
func (d *impl) mkdirs(comps []string) (*node, error) {
	n := d.root
	for _, c := range comps {
		child := n.children[c]
		if child == nil {
			child = newDir()
			n.children[c] = child
		} else if !child.isDir() {
			return nil, errNotDir
		}
		n = child
	}
	return n, nil
}

// canMkdirs reports whether mkdirs(comps) would succeed, without changing
// anything. Callers hold mu.
func (d *impl) canMkdirs(comps []string) bool {
	n := d.root
	for _, c := range comps {
		if n = n.children[c]; n == nil {
			return true
		}
		if !n.isDir() {
			return false
		}
	}
	return true
}

// put stores n at path, replacing an object but not a directory. Callers
// hold mu for writing.
func (d *impl) put(path string, n *node) error {
	comps := components(path)
	if !d.canMkdirs(comps[:len(comps)-1]) {
		return errNotDir
	}
	if old := d.lookup(path); old != nil && old.isDir() {
		return errIsDir
	}
	parent, err := d.mkdirs(comps[:len(comps)-1])
	if err != nil {
		return err
	}
	parent.children[comps[len(comps)-1]] = n
	return nil
}

// remove detaches the node at path (which exists) and every directory left
// empty above it. Removing the root empties it. Callers hold mu for writing.
func (d *impl) remove(path string) {
	comps := components(path)
	if len(comps) == 0 {
		d.root.children = map[string]*node{}
		return
	}
	dirs := make([]*node, 0, len(comps))
	n := d.root
	for _, c := range comps[:len(comps)-1] {
		dirs = append(dirs, n)
		n = n.children[c]
	}
	delete(n.children, comps[len(comps)-1])
	for i := len(dirs) - 1; i >= 0 && len(n.children) == 0; i-- {
		delete(dirs[i].children, comps[i])
		n = dirs[i]
	}
}

func (d *impl) Name() string { return Name }

func (d *impl) GetContent(_ context.Context, path string) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := d.lookup(path)
	if n == nil || n.isDir() {
		return nil, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	return bytes.Clone(n.data), nil
}

func (d *impl) PutContent(_ context.Context, path string, content []byte) error {
	n := &node{data: bytes.Clone(content), modTime: time.Now()}
	if n.data == nil {
		n.data = []byte{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.put(path, n)
}

func (d *impl) Reader(_ context.Context, path string, offset int64) (io.ReadCloser, error) {
	d.mu.RLock()
	n := d.lookup(path)
	var data []byte
	if n != nil {
		data = n.data
	}
	d.mu.RUnlock()
	if n == nil || n.isDir() {
		return nil, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	if offset > int64(len(data)) {
		return nil, driver.InvalidOffsetError{Path: path, Offset: offset, Driver: Name}
	}
	return io.NopCloser(bytes.NewReader(data[offset:])), nil
}

func (d *impl) Writer(_ context.Context, path string, append bool) (driver.FileWriter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if append {
		n := d.lookup(path)
		if n == nil || n.isDir() {
			return nil, driver.PathNotFoundError{Path: path, Driver: Name}
		}
		return &writer{d: d, path: path, n: n}, nil
	}
	n := &node{data: []byte{}, modTime: time.Now()}
	if err := d.put(path, n); err != nil {
		return nil, err
	}
	return &writer{d: d, path: path, n: n}, nil
}

func (d *impl) Stat(_ context.Context, path string) (driver.FileInfo, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := d.lookup(path)
	if n == nil {
		return driver.FileInfo{}, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	return n.info(path), nil
}

func (d *impl) List(_ context.Context, path string) ([]string, error) {
	d.mu.RLock()
	n := d.lookup(path)
	if n == nil || !n.isDir() {
		d.mu.RUnlock()
		return nil, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	d.mu.RUnlock()
	slices.Sort(names)
	for i, name := range names {
		names[i] = driver.Child(path, name)
	}
	return names, nil
}

func (d *impl) Move(_ context.Context, src, dst string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.lookup(src)
	if n == nil {
		return driver.PathNotFoundError{Path: src, Driver: Name}
	}
	if src == dst {
		return nil
	}
	if strings.HasPrefix(dst, src+"/") {
		return errInside
	}
	comps := components(dst)
	if !d.canMkdirs(comps[:len(comps)-1]) {
		return errNotDir
	}
	if old := d.lookup(dst); old != nil && old.isDir() {
		return errIsDir
	}
	d.remove(src)
	// remove may have pruned directories, but never made mkdirs impossible.
	return d.put(dst, n)
}

func (d *impl) Delete(_ context.Context, path string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lookup(path) == nil {
		return driver.PathNotFoundError{Path: path, Driver: Name}
	}
	d.remove(path)
	return nil
}

// Walk takes a snapshot under the read lock and calls fn without it, so fn
// may use the driver (delete what it visits, for example).
func (d *impl) Walk(_ context.Context, path string, fn driver.WalkFn) error {
	d.mu.RLock()
	n := d.lookup(path)
	if n == nil || !n.isDir() {
		d.mu.RUnlock()
		return driver.PathNotFoundError{Path: path, Driver: Name}
	}
	var entries []driver.FileInfo
	var collect func(dir string, n *node)
	collect = func(dir string, n *node) {
		names := make([]string, 0, len(n.children))
		for name := range n.children {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			child := n.children[name]
			p := driver.Child(dir, name)
			entries = append(entries, child.info(p))
			if child.isDir() {
				collect(p, child)
			}
		}
	}
	collect(path, n)
	d.mu.RUnlock()

	return driver.WalkEntries(entries, fn)
}

// writer appends to one node. base enforces the state machine.
type writer struct {
	d    *impl
	path string
	// n is the node written; guarded by d.mu like every node. A Move carries
	// it along, as a rename does an open file.
	n *node
}

func (w *writer) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	w.n.data = append(w.n.data, p...)
	w.n.modTime = time.Now()
	return len(p), nil
}

func (w *writer) Size() int64 {
	w.d.mu.RLock()
	defer w.d.mu.RUnlock()
	return int64(len(w.n.data))
}

func (w *writer) Close() error { return nil }

func (w *writer) Commit(context.Context) error { return nil }

// Cancel removes the object if it is still the one this writer wrote.
func (w *writer) Cancel(context.Context) error {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	if w.d.lookup(w.path) == w.n {
		w.d.remove(w.path)
	}
	return nil
}
