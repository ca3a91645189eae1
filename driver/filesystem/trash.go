package filesystem

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
)

// Names of the driver's internal directories in the root. '#' makes them
// invalid path components, so List and Walk never show them, and they sit
// beside docker/, outside everything the registry lists or walks.
const (
	// tmpDirName holds one staging directory per running driver, named by
	// the driver's random id and flock'ed while it lives.
	tmpDirName = ".#regfs-tmp"
	// trashDirName holds what Delete took out of the tree until the janitor
	// removes it.
	trashDirName = ".#regfs-trash"
)

// makeStage creates and locks this driver's staging directory.
func (d *impl) makeStage() error {
	if err := unix.Mkdirat(d.rootFD, tmpDirName, 0o700); err != nil && err != unix.EEXIST {
		return err
	}
	tmp, err := unix.Openat(d.rootFD, tmpDirName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(tmp)
	for range raceRetries {
		var id [8]byte
		crand.Read(id[:])
		d.id = hex.EncodeToString(id[:])
		if err := unix.Mkdirat(tmp, d.id, 0o700); err != nil {
			return err
		}
		fd, err := unix.Openat(tmp, d.id, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			return err
		}
		// Between mkdir and flock another driver's janitor could take the
		// directory for a dead one's and remove it: make sure it is still
		// the one in place.
		var st, in unix.Stat_t
		if unix.Fstat(fd, &st) == nil && unix.Fstatat(tmp, d.id, &in, unix.AT_SYMLINK_NOFOLLOW) == nil &&
			st.Dev == in.Dev && st.Ino == in.Ino {
			d.stageFD = fd
			d.stage = os.NewFile(uintptr(fd), d.id)
			d.stagePath = filepath.Join(d.root, tmpDirName, d.id)
			return nil
		}
		unix.Close(fd)
	}
	return errRaced
}

// openTrash opens the trash directory, making it if missing.
func (d *impl) openTrash() (int, error) {
	for range 2 {
		fd, err := unix.Openat(d.rootFD, trashDirName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.ENOENT {
			if err == unix.ELOOP || err == unix.ENOTDIR {
				err = fmt.Errorf("%s is not a directory", filepath.Join(d.root, trashDirName))
			}
			return fd, err
		}
		if err := unix.Mkdirat(d.rootFD, trashDirName, 0o700); err != nil && err != unix.EEXIST {
			return -1, err
		}
	}
	return -1, unix.ENOENT
}

// Delete moves the object or directory at path into the trash directory in
// one rename, fsyncs its parent and lets the janitor remove it in the
// background. The tree never holds a name that is not an object of the
// store (the registry lists directory names as tags and repositories), and
// a crash leaves whatever it left only in the trash. A write that opened
// the directory just before it went lands in the trash with it, as if it had
// come first. A symbolic link at path is unlinked, in place.
//
// Delete("/") moves every entry of the root but the driver's own two
// directories.
func (d *impl) Delete(_ context.Context, path string) error {
	if path == "/" {
		return d.deleteAll()
	}
	parent, name := split(path)
	pfd, err := d.openDir(parent)
	if err != nil {
		return d.pathErr("Delete", path, err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.pathErr("Delete", path, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		err = unix.Unlinkat(pfd, name, 0)
	} else {
		var tfd int
		if tfd, err = d.openTrash(); err == nil {
			err = unix.Renameat(pfd, name, tfd, d.tempName())
			unix.Close(tfd)
		}
	}
	if err == nil {
		err = unix.Fsync(pfd)
		d.kick()
	}
	if err != nil {
		return d.pathErr("Delete", path, err)
	}
	return nil
}

func (d *impl) deleteAll() error {
	f, err := d.openDirFile("/")
	if err != nil {
		return &driver.Error{Driver: Name, Op: "Delete", Path: "/", Err: err}
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return &driver.Error{Driver: Name, Op: "Delete", Path: "/", Err: err}
	}
	tfd, err := d.openTrash()
	if err != nil {
		return &driver.Error{Driver: Name, Op: "Delete", Path: "/", Err: err}
	}
	defer unix.Close(tfd)
	defer d.kick()
	for _, n := range names {
		if n == tmpDirName || n == trashDirName {
			continue
		}
		if err := unix.Renameat(int(f.Fd()), n, tfd, d.tempName()); err != nil && err != unix.ENOENT {
			return &driver.Error{Driver: Name, Op: "Delete", Path: "/", Err: err}
		}
	}
	return nil
}

// kick makes the janitor empty the trash and remove dead drivers' staging
// directories, starting it unless it runs; a janitor that is running looks
// again before it stops.
func (d *impl) kick() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done != nil {
		d.again = true
		return
	}
	d.done = make(chan struct{})
	go d.janitor(d.done)
}

func (d *impl) janitor(done chan struct{}) {
	for {
		// Errors are left for the next round, and for Leftovers to report.
		d.scan(context.Background(), true)
		d.mu.Lock()
		if !d.again {
			d.done = nil
			d.mu.Unlock()
			close(done)
			return
		}
		d.again = false
		d.mu.Unlock()
	}
}

// settle waits until the janitor has nothing left to do.
func (d *impl) settle() {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Leftovers implements driver.Janitor: the entries of the trash and the
// staging directories of drivers that no longer run (their lock is free),
// as file names.
func (d *impl) Leftovers(ctx context.Context) ([]string, error) {
	return d.scan(ctx, false)
}

// Clean implements driver.Janitor.
func (d *impl) Clean(ctx context.Context) error {
	_, err := d.scan(ctx, true)
	return err
}

// scan lists the leftovers, removing them if remove is set.
func (d *impl) scan(ctx context.Context, remove bool) ([]string, error) {
	var left []string
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for _, dir := range []string{trashDirName, tmpDirName} {
		fd, err := unix.Openat(d.rootFD, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			continue
		}
		if err != nil {
			note(fmt.Errorf("%s: %w", filepath.Join(d.root, dir), err))
			continue
		}
		f := os.NewFile(uintptr(fd), dir)
		names, err := f.Readdirnames(-1)
		note(err)
		slices.Sort(names)
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				f.Close()
				return left, err
			}
			if dir == tmpDirName && (n == d.id || live(fd, n)) {
				continue
			}
			left = append(left, filepath.Join(d.root, dir, n))
			if remove {
				if err := removeAt(fd, n); err != nil {
					note(fmt.Errorf("removing %s: %w", filepath.Join(d.root, dir, n), err))
				}
			}
		}
		f.Close()
	}
	return left, first
}

// live reports whether the staging directory name in dirfd belongs to a
// running driver, which holds its lock.
func live(dirfd int, name string) bool {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false // a file or a link: nobody's staging directory
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	unix.Flock(fd, unix.LOCK_UN)
	return false
}
