// Package filesystem is a storage driver that keeps objects as files under a
// root directory, laid out exactly as docker/distribution's filesystem driver
// does, so a registry and regfs can share one root.
//
// Whole objects (PutContent) are written to a temporary file in the target
// directory and renamed into place, so a reader never sees a short file.
// Temporary names start with ".#", which is not a valid path component, and
// List and Walk skip every name that is not a valid component, so neither
// temporary files nor foreign files ever show up as objects.
//
// A Writer writes straight into the target file, unbuffered: the bytes are in
// the kernel as soon as Write returns, so they survive a crash of the process
// and an interrupted upload resumes from them. Close and Commit fsync.
package filesystem

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/base"
)

// Name is the driver's name in errors and logs.
const Name = "filesystem"

// Permissions of what the driver creates, the same as the registry's.
const (
	filePerm = 0o644
	dirPerm  = 0o755
)

// tempPrefix starts every temporary file name; '#' makes it an invalid path
// component, so it can never collide with an object.
const tempPrefix = ".#"

// New returns a driver storing objects under root, which is created if
// missing. A relative root is made absolute, so a later chdir changes
// nothing.
func New(root string) (driver.StorageDriver, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, &driver.Error{Driver: Name, Op: "New", Path: root, Err: err}
	}
	if err := os.MkdirAll(abs, dirPerm); err != nil {
		return nil, &driver.Error{Driver: Name, Op: "New", Path: root, Err: err}
	}
	return base.New(&impl{root: abs}), nil
}

// impl is the unchecked driver that base.New wraps. It has no state besides
// root: the kernel does the locking.
type impl struct {
	root string
}

func (d *impl) Name() string { return Name }

// full turns a valid driver path into a file name under root.
func (d *impl) full(path string) string {
	if path == "/" {
		return d.root
	}
	return d.root + filepath.FromSlash(path)
}

// notFound reports whether err from an operation on full means the path does
// not exist: ENOENT, or ENOTDIR because a parent is a file (which has no
// portable sentinel, so the parents are checked instead; this runs only on
// the error path).
func (d *impl) notFound(full string, err error) bool {
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		return false
	}
	for dir := filepath.Dir(full); len(dir) > len(d.root); dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			return true
		}
	}
	return false
}

// fail turns err into PathNotFoundError or *driver.Error.
func (d *impl) fail(op, path string, err error) error {
	if d.notFound(d.full(path), err) {
		return driver.PathNotFoundError{Path: path, Driver: Name}
	}
	return &driver.Error{Driver: Name, Op: op, Path: path, Err: err}
}

func (d *impl) GetContent(_ context.Context, path string) ([]byte, error) {
	f, err := d.openObject(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, &driver.Error{Driver: Name, Op: "GetContent", Path: path, Err: err}
	}
	return data, nil
}

// openObject opens the object at path for reading; a directory is not an
// object, as on S3.
func (d *impl) openObject(path string) (*os.File, error) {
	f, err := os.Open(d.full(path))
	if err != nil {
		return nil, d.fail("open", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &driver.Error{Driver: Name, Op: "stat", Path: path, Err: err}
	}
	if fi.IsDir() {
		f.Close()
		return nil, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	return f, nil
}

// PutContent writes a temporary file beside the target, fsyncs it and renames
// it over the target.
func (d *impl) PutContent(_ context.Context, path string, content []byte) error {
	var err error
	for range raceRetries {
		if err = d.putContent(path, content); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		// A concurrent Delete removed the directory between MkdirAll
		// and the rename: make it again.
	}
	if err != nil {
		return &driver.Error{Driver: Name, Op: "PutContent", Path: path, Err: err}
	}
	return nil
}

// raceRetries bounds the retries of a write that a concurrent Delete of
// its directory (or a Delete that a concurrent write refilled) made fail.
// Each retry is a few syscalls; losing this many races in a row means
// something else is wrong.
const raceRetries = 10

func (d *impl) putContent(path string, content []byte) error {
	full := d.full(path)
	dir := filepath.Dir(full)
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+filepath.Base(full)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(filePerm)
	if err == nil {
		_, err = f.Write(content)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, full)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (d *impl) Reader(_ context.Context, path string, offset int64) (io.ReadCloser, error) {
	f, err := d.openObject(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &driver.Error{Driver: Name, Op: "Reader", Path: path, Err: err}
	}
	if offset > fi.Size() {
		f.Close()
		return nil, driver.InvalidOffsetError{Path: path, Offset: offset, Driver: Name}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, &driver.Error{Driver: Name, Op: "Reader", Path: path, Err: err}
	}
	return f, nil
}

func (d *impl) Writer(_ context.Context, path string, append bool) (driver.FileWriter, error) {
	full := d.full(path)
	var f *os.File
	var size int64
	if append {
		fi, err := os.Stat(full)
		if err != nil {
			return nil, d.fail("Writer", path, err)
		}
		if fi.IsDir() {
			return nil, driver.PathNotFoundError{Path: path, Driver: Name}
		}
		if f, err = os.OpenFile(full, os.O_WRONLY|os.O_APPEND, 0); err != nil {
			return nil, d.fail("Writer", path, err)
		}
		// The size of the file as opened, not as stat'ed before: another
		// writer may have appended in between.
		if fi, err = f.Stat(); err != nil {
			f.Close()
			return nil, &driver.Error{Driver: Name, Op: "Writer", Path: path, Err: err}
		}
		size = fi.Size()
	} else {
		var err error
		for range raceRetries {
			// A concurrent Delete may remove the directory (or a parent
			// being made) again: both fail with ErrNotExist.
			err = os.MkdirAll(filepath.Dir(full), dirPerm)
			if err == nil {
				f, err = os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				break
			}
		}
		if err != nil {
			return nil, &driver.Error{Driver: Name, Op: "Writer", Path: path, Err: err}
		}
	}
	return &writer{f: f, path: path, size: size}, nil
}

func (d *impl) Stat(_ context.Context, path string) (driver.FileInfo, error) {
	fi, err := os.Stat(d.full(path))
	if err != nil {
		return driver.FileInfo{}, d.fail("Stat", path, err)
	}
	return info(path, fi), nil
}

func info(path string, fi fs.FileInfo) driver.FileInfo {
	out := driver.FileInfo{Path: path, ModTime: fi.ModTime(), IsDir: fi.IsDir()}
	if !out.IsDir {
		out.Size = fi.Size()
	}
	return out
}

// readDir returns the valid entries of the directory at path, sorted by name;
// an object or a missing path is PathNotFoundError.
func (d *impl) readDir(path string) ([]fs.DirEntry, error) {
	entries, err := os.ReadDir(d.full(path))
	if err != nil {
		if fi, serr := os.Stat(d.full(path)); serr == nil && !fi.IsDir() {
			return nil, driver.PathNotFoundError{Path: path, Driver: Name}
		}
		return nil, d.fail("List", path, err)
	}
	valid := entries[:0]
	for _, e := range entries {
		if driver.ValidComponent(e.Name()) {
			valid = append(valid, e)
		}
	}
	return valid, nil
}

func (d *impl) List(_ context.Context, path string) ([]string, error) {
	entries, err := d.readDir(path)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = driver.Child(path, e.Name())
	}
	return names, nil
}

// Move renames src over dst after creating dst's parents. A directory
// already at dst is not replaced.
func (d *impl) Move(_ context.Context, src, dst string) error {
	fsrc, fdst := d.full(src), d.full(dst)
	if _, err := os.Lstat(fsrc); err != nil {
		return d.fail("Move", src, err)
	}
	var err error
	for range raceRetries {
		err = os.MkdirAll(filepath.Dir(fdst), dirPerm)
		if err == nil {
			err = os.Rename(fsrc, fdst)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
		// The source is gone (a concurrent Move or Delete), or a
		// concurrent Delete removed dst's directory: tell them apart.
		if _, serr := os.Lstat(fsrc); serr != nil {
			return d.fail("Move", src, serr)
		}
	}
	if err != nil {
		return &driver.Error{Driver: Name, Op: "Move", Path: src + " -> " + dst, Err: err}
	}
	return nil
}

// Delete removes the file or directory tree at path. Delete("/") empties
// root but keeps it.
func (d *impl) Delete(_ context.Context, path string) error {
	full := d.full(path)
	if path == "/" {
		entries, err := os.ReadDir(full)
		if err != nil {
			return &driver.Error{Driver: Name, Op: "Delete", Path: path, Err: err}
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(full, e.Name())); err != nil {
				return &driver.Error{Driver: Name, Op: "Delete", Path: path, Err: err}
			}
		}
		return nil
	}
	// Rename the object or directory out of the way first, atomically, to a
	// hidden name beside it, then remove that. A concurrent write into the
	// directory either landed before the rename (and goes with it) or
	// recreates the path afterwards (and lands), and RemoveAll never races a
	// writer refilling what it empties. A crash between the two steps leaves
	// a hidden ".#" entry that List and Walk never show.
	tmp, err := os.MkdirTemp(filepath.Dir(full), tempPrefix+"deleted-"+filepath.Base(full)+".")
	if err != nil {
		return d.fail("Delete", path, err)
	}
	if err := os.Rename(full, filepath.Join(tmp, "x")); err != nil {
		os.Remove(tmp)
		return d.fail("Delete", path, err)
	}
	if err := os.RemoveAll(tmp); err != nil {
		return &driver.Error{Driver: Name, Op: "Delete", Path: path, Err: err}
	}
	return nil
}

// Walk visits the tree depth first in name order. A directory that
// disappears during the walk (deleted by fn, or by another writer) is
// skipped rather than failing the walk.
func (d *impl) Walk(_ context.Context, path string, fn driver.WalkFn) error {
	entries, err := d.readDir(path)
	if err != nil {
		return err
	}
	return d.walk(path, entries, fn)
}

func (d *impl) walk(dir string, entries []fs.DirEntry, fn driver.WalkFn) error {
	for _, e := range entries {
		p := driver.Child(dir, e.Name())
		fi, err := e.Info() // not following symlinks: a cycle cannot loop the walk
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since ReadDir
			}
			return &driver.Error{Driver: Name, Op: "Walk", Path: p, Err: err}
		}
		switch err := fn(info(p, fi)); {
		case err == driver.ErrSkipDir:
			continue
		case err != nil:
			return err
		}
		if !fi.IsDir() {
			continue
		}
		children, err := d.readDir(p)
		if driver.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		if err := d.walk(p, children, fn); err != nil {
			return err
		}
	}
	return nil
}

// writer writes unbuffered into the target file; base enforces the state
// machine.
type writer struct {
	f    *os.File
	path string
	size int64
}

func (w *writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.size += int64(n)
	return n, err
}

func (w *writer) Size() int64 { return w.size }

func (w *writer) Close() error {
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (w *writer) Commit(context.Context) error { return w.f.Sync() }

func (w *writer) Cancel(context.Context) error {
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

var _ driver.UsageReporter = (*impl)(nil)

// Usage implements driver.UsageReporter: statfs(2) of the root.
func (d *impl) Usage(ctx context.Context) (driver.Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.root, &st); err != nil {
		return driver.Usage{}, &driver.Error{Driver: Name, Op: "Usage", Path: "/", Err: err}
	}
	bs := uint64(st.Bsize)
	return driver.Usage{
		Total: st.Blocks * bs, Free: st.Bfree * bs, Avail: st.Bavail * bs,
		Files: st.Files, FreeFiles: st.Ffree,
	}, nil
}
