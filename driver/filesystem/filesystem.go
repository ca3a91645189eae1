// Package filesystem is a storage driver that keeps objects as files under a
// root directory, laid out exactly as docker/distribution's filesystem driver
// does, so a registry and regfs can share one root.
//
// # Nothing outside the root
//
// Every path is resolved by the kernel beneath the root, from a descriptor
// of the root held open, with openat2's RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS; the last component is then opened, renamed or
// removed relative to its parent's descriptor, never by a path name. A
// symbolic link anywhere in the tree (someone else planted it: neither the
// registry nor regfs makes one) is never followed: the call fails with
// driver.SymlinkError naming the link, Walk reports it with
// FileInfo.Symlink and does not descend it, and Delete of the link itself
// removes the link. So nothing outside the root is ever read, created or
// changed through the driver, whoever can write the tree. A FIFO or device
// in the tree is refused too. This needs Linux 5.6 or later.
//
// # No names that are not objects
//
// The registry lists directory names as repositories and tags, so the tree
// must never hold a name that is not an object of the store, not even
// briefly, not even after a crash. Two directories in the root, whose names
// are not valid path components (List and Walk never show them) and which
// the registry never looks at, take what used to be written beside the
// objects:
//
//   - .#regfs-tmp/<id>/ is the staging directory of one running driver,
//     flock'ed while it lives. PutContent writes a file there, fsyncs it and
//     renames it over the object. When the object's directory does not exist
//     yet, the missing directories are made there with the object inside and
//     the topmost is renamed into place: a new tag directory appears with its
//     link in it, or not at all. Move into new directories works the same.
//   - .#regfs-trash/ receives what Delete takes out of the tree, in one
//     rename; the driver then removes it in the background.
//
// Both must be on the filesystem of the tree (rename cannot cross
// filesystems; the registry's own upload commit needs the same). What a
// crash leaves in them (the trash, and staging directories whose lock is
// free) is removed when a driver starts on the root, and reported and
// removed through driver.Janitor (fsck).
//
// # Durability
//
// A file is fsynced before it is renamed into place, and the directory it
// is renamed into is fsynced after, so a link, a revision, a tag or a blob
// that PutContent or Move committed survives a power cut; so does the
// removal of a Delete. New directories are fsynced before they are renamed
// into place.
//
// # Writers
//
// A Writer writes straight into its file, unbuffered: the bytes are in the
// kernel as soon as Write returns, so they survive a crash of the process
// and an interrupted upload resumes from them. A new Writer's file is
// created empty in staging and renamed into place (with its directories),
// so a crash never leaves a half-made directory. Close and Commit fsync.
package filesystem

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

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

// raceRetries bounds the retries of a write that a concurrent Delete of
// its directory (or a writer making the same directory) made fail. Each
// retry is a few syscalls; losing this many races in a row means
// something else is wrong.
const raceRetries = 10

// New returns a driver storing objects under root, which is created if
// missing. A relative root is made absolute, so a later chdir changes
// nothing; the root is opened once, and every path is resolved from that
// descriptor. New changes nothing in the root: what crashed drivers left
// in the trash and staging directories stays until Clean (driver.Janitor)
// removes it, so that a check can report it first.
func New(root string) (driver.StorageDriver, error) {
	d, err := newImpl(root)
	if err != nil {
		return nil, err
	}
	return base.New(d), nil
}

func newImpl(root string) (*impl, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, &driver.Error{Driver: Name, Op: "New", Path: root, Err: err}
	}
	if err := os.MkdirAll(abs, dirPerm); err != nil {
		return nil, &driver.Error{Driver: Name, Op: "New", Path: root, Err: err}
	}
	f, err := os.OpenFile(abs, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &driver.Error{Driver: Name, Op: "New", Path: root, Err: err}
	}
	d := &impl{root: abs, rootFile: f, rootFD: int(f.Fd())}
	var id [8]byte
	crand.Read(id[:])
	d.id = ownerID(hex.EncodeToString(id[:]))
	// Fail now, not on the first read, on a kernel without openat2.
	if fd, err := d.open("/", unix.O_PATH|unix.O_DIRECTORY); err != nil {
		f.Close()
		return nil, &driver.Error{Driver: Name, Op: "New", Path: root, Err: err}
	} else {
		unix.Close(fd)
	}
	return d, nil
}

// impl is the unchecked driver that base.New wraps. It has no mutable state
// besides counters: the kernel does the locking.
type impl struct {
	root     string   // absolute name of the root, for messages
	rootFile *os.File // the root, held open for rootFD
	rootFD   int

	id  string        // random; with seq, makes staging and trash names unique
	seq atomic.Uint64 // among every driver on the root

	// Calls using the staging and the trash directory, which the last
	// one removes when empty.
	tmpUsers, trashUsers atomic.Int32
}

func (d *impl) Name() string { return Name }

func (d *impl) GetContent(_ context.Context, path string) ([]byte, error) {
	f, size, err := d.openObject("GetContent", path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, 0, size+1) // +1: EOF in the first read past a file that grew
	for {
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, &driver.Error{Driver: Name, Op: "GetContent", Path: path, Err: err}
		}
		if len(data) == cap(data) {
			data = slices.Grow(data, 512)
		}
	}
}

// openObject opens the regular file at path for reading, returning its
// size. A directory is not an object, as on S3. O_NONBLOCK keeps a FIFO
// planted in the tree from blocking the open; it changes nothing for a
// regular file.
func (d *impl) openObject(op, path string) (*os.File, int64, error) {
	fd, err := d.open(path, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		if err == unix.ENXIO { // a socket
			err = errNotRegular
		}
		return nil, 0, d.pathErr(op, path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, &driver.Error{Driver: Name, Op: op, Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return os.NewFile(uintptr(fd), d.root+path), st.Size, nil
	case unix.S_IFDIR:
		unix.Close(fd)
		return nil, 0, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	unix.Close(fd)
	return nil, 0, &driver.Error{Driver: Name, Op: op, Path: path, Err: errNotRegular}
}

// PutContent writes a file in the staging directory and installs it at
// path (see install), which fsyncs it before it enters the tree.
func (d *impl) PutContent(_ context.Context, path string, content []byte) error {
	t, err := d.newTemp(false)
	if err != nil {
		return d.writeErr("PutContent", path, err)
	}
	defer d.release(t)
	// The descriptor belongs to t, which release closes: no *os.File, whose
	// finalizer would close it a second time.
	for rest := content; len(rest) > 0 && err == nil; {
		var n int
		n, err = unix.Write(t.fd, rest)
		rest = rest[max(n, 0):]
		if err == unix.EINTR {
			err = nil
		}
	}
	if err == nil {
		err = d.install("PutContent", loc{t.tmpfd, t.name}, path, func() error { return unix.Fsync(t.fd) })
	}
	return d.writeErr("PutContent", path, err)
}

func (d *impl) Reader(_ context.Context, path string, offset int64) (io.ReadCloser, error) {
	f, size, err := d.openObject("Reader", path)
	if err != nil {
		return nil, err
	}
	if offset > size {
		f.Close()
		return nil, driver.InvalidOffsetError{Path: path, Offset: offset, Driver: Name}
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, &driver.Error{Driver: Name, Op: "Reader", Path: path, Err: err}
		}
	}
	return f, nil
}

// Writer appends to the file at path, or creates an empty one in staging
// and installs it at path, replacing the object there (a reader of the old
// one keeps reading it whole).
func (d *impl) Writer(_ context.Context, path string, append bool) (driver.FileWriter, error) {
	if append {
		fd, err := d.open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_NONBLOCK)
		if err == unix.EISDIR {
			err = unix.ENOENT
		}
		if err != nil {
			return nil, d.pathErr("Writer", path, err)
		}
		// The size of the file as opened, not as stat'ed before: another
		// writer may have appended in between.
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, &driver.Error{Driver: Name, Op: "Writer", Path: path, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Close(fd)
			return nil, &driver.Error{Driver: Name, Op: "Writer", Path: path, Err: errNotRegular}
		}
		return &writer{d: d, f: os.NewFile(uintptr(fd), d.root+path), path: path, size: st.Size}, nil
	}
	t, err := d.newTemp(false)
	if err != nil {
		return nil, d.writeErr("Writer", path, err)
	}
	// The writer keeps the descriptor: a duplicate holds no lock of its
	// own, and release drops the entry's.
	fd, err := unix.Dup(t.fd)
	if err == nil {
		unix.CloseOnExec(fd)
		err = d.install("Writer", loc{t.tmpfd, t.name}, path, nil)
		if err != nil {
			unix.Close(fd)
		}
	}
	d.release(t)
	if err != nil {
		return nil, d.writeErr("Writer", path, err)
	}
	return &writer{d: d, f: os.NewFile(uintptr(fd), d.root+path), path: path}, nil
}

func (d *impl) Stat(_ context.Context, path string) (driver.FileInfo, error) {
	fd, err := d.open(path, unix.O_PATH)
	if err != nil {
		return driver.FileInfo{}, d.pathErr("Stat", path, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	if err != nil {
		return driver.FileInfo{}, &driver.Error{Driver: Name, Op: "Stat", Path: path, Err: err}
	}
	return info(path, &st), nil
}

func info(path string, st *unix.Stat_t) driver.FileInfo {
	fi := driver.FileInfo{Path: path, ModTime: time.Unix(st.Mtim.Unix())}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fi.IsDir = true
	case unix.S_IFLNK:
		fi.Symlink = true
	default:
		fi.Size = st.Size
	}
	return fi
}

// openDirFile opens the directory at path for reading its entries.
func (d *impl) openDirFile(path string) (*os.File, error) {
	fd, err := d.openDir(path)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), d.root+path), nil
}

// names returns the valid entry names of the open directory f, sorted.
func names(f *os.File) ([]string, error) {
	all, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	valid := all[:0]
	for _, n := range all {
		if driver.ValidComponent(n) {
			valid = append(valid, n)
		}
	}
	slices.Sort(valid)
	return valid, nil
}

func (d *impl) List(_ context.Context, path string) ([]string, error) {
	f, err := d.openDirFile(path)
	if err != nil {
		return nil, d.pathErr("List", path, err)
	}
	entries, err := names(f)
	f.Close()
	if errors.Is(err, fs.ErrNotExist) {
		// Deleted since it was opened.
		return nil, driver.PathNotFoundError{Path: path, Driver: Name}
	}
	if err != nil {
		return nil, &driver.Error{Driver: Name, Op: "List", Path: path, Err: err}
	}
	for i, n := range entries {
		entries[i] = driver.Child(path, n)
	}
	return entries, nil
}

// Move installs the object at src at dst (see install). A directory
// already at dst is not replaced. A symbolic link at src or dst is refused.
func (d *impl) Move(_ context.Context, src, dst string) error {
	parent, name := split(src)
	pfd, err := d.openDir(parent)
	if err != nil {
		return d.pathErr("Move", src, err)
	}
	defer unix.Close(pfd)
	if _, err := d.lstatAt("Move", pfd, name, src); err != nil {
		return err
	}
	err = d.install("Move", loc{pfd, name}, dst, nil)
	if err == errGone {
		return driver.PathNotFoundError{Path: src, Driver: Name}
	}
	return err
}

// errGone is install's answer when the object it installs vanished.
var errGone = errors.New("object vanished")

// Walk visits the tree depth first in name order, reading each directory
// through its parent's descriptor without following links. A directory
// that disappears during the walk (deleted by fn, or by another writer) is
// skipped rather than failing the walk.
func (d *impl) Walk(_ context.Context, path string, fn driver.WalkFn) error {
	f, err := d.openDirFile(path)
	if err != nil {
		return d.pathErr("Walk", path, err)
	}
	err = d.walk(f, path, fn)
	if errors.Is(err, errDirGone) {
		return driver.PathNotFoundError{Path: path, Driver: Name}
	}
	return err
}

// errDirGone is walk's answer for a directory deleted since it was opened.
var errDirGone = errors.New("directory deleted")

// walk walks the open directory f at the driver path dir, and closes it.
func (d *impl) walk(f *os.File, dir string, fn driver.WalkFn) error {
	defer f.Close()
	entries, err := names(f)
	if errors.Is(err, fs.ErrNotExist) {
		return errDirGone
	}
	if err != nil {
		return &driver.Error{Driver: Name, Op: "Walk", Path: dir, Err: err}
	}
	fd := int(f.Fd())
	for _, n := range entries {
		p := driver.Child(dir, n)
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue // removed since it was listed
			}
			return &driver.Error{Driver: Name, Op: "Walk", Path: p, Err: err}
		}
		fi := info(p, &st)
		switch err := fn(fi); {
		case err == driver.ErrSkipDir:
			continue
		case err != nil:
			return err
		}
		if !fi.IsDir {
			continue
		}
		cfd, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch err {
		case nil:
		case unix.ENOENT, unix.ENOTDIR, unix.ELOOP:
			// Gone or replaced since it was stat'ed; a link put in its
			// place is not followed (the next walk reports it).
			continue
		default:
			return &driver.Error{Driver: Name, Op: "Walk", Path: p, Err: err}
		}
		if err := d.walk(os.NewFile(uintptr(cfd), d.root+p), p, fn); err != nil && err != errDirGone {
			return err
		}
	}
	return nil
}

// writer writes unbuffered into its file; base enforces the state machine.
type writer struct {
	d    *impl
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

// Cancel removes the writer's file from path, if it is still the one
// there (a writer that replaced it since keeps its own), and releases it.
func (w *writer) Cancel(context.Context) error {
	defer w.f.Close()
	parent, name := split(w.path)
	pfd, err := w.d.openDir(parent)
	if err != nil {
		return nil // gone with its directory, or unreachable: nothing of ours to remove
	}
	defer unix.Close(pfd)
	var mine, there unix.Stat_t
	if err := unix.Fstat(int(w.f.Fd()), &mine); err != nil {
		return err
	}
	if err := unix.Fstatat(pfd, name, &there, unix.AT_SYMLINK_NOFOLLOW); err != nil || mine.Dev != there.Dev || mine.Ino != there.Ino {
		return nil
	}
	if err := unix.Unlinkat(pfd, name, 0); err != nil && err != unix.ENOENT {
		return err
	}
	return unix.Fsync(pfd)
}

var _ driver.UsageReporter = (*impl)(nil)

// Usage implements driver.UsageReporter: statfs(2) of the root.
func (d *impl) Usage(ctx context.Context) (driver.Usage, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(d.rootFD, &st); err != nil {
		return driver.Usage{}, &driver.Error{Driver: Name, Op: "Usage", Path: "/", Err: err}
	}
	bs := uint64(st.Bsize)
	return driver.Usage{
		Total: st.Blocks * bs, Free: st.Bfree * bs, Avail: st.Bavail * bs,
		Files: st.Files, FreeFiles: st.Ffree,
	}, nil
}
