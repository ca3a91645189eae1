package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

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

// Delete moves the object or directory at path into the trash directory in
// one rename, fsyncs its parent, then removes it from the trash. The tree
// never holds a name that is not an object of the store (the registry lists
// directory names as tags and repositories), and a crash leaves what it
// left only in the trash. A write that opened the directory just before it
// went lands in the trash with it, as if it had come first. A symbolic link
// at path is unlinked, in place.
//
// The removal is not left to the background: the name is gone at once
// anyway, and a process that exits right after (fsck --repair) leaves
// nothing behind.
//
// Delete("/") deletes every entry of the root but the driver's own two
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
	for tries, trashGone := 0, 0; tries < raceRetries; tries++ {
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return d.pathErr("Delete", path, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if err := unix.Unlinkat(pfd, name, 0); err != nil {
				return d.pathErr("Delete", path, err)
			}
			return d.pathErr("Delete", path, unix.Fsync(pfd))
		}
		err := d.trash(pfd, name)
		if err == errTrashGone && trashGone < internalRaces {
			// A janitor (another driver's Clean, or the last user of
			// the trash here) removed the empty trash between its
			// opening and the rename: not the victim's race, so it
			// does not count against raceRetries.
			trashGone++
			tries--
			continue
		}
		if err == unix.ENOENT || err == errTrashGone {
			continue // gone meanwhile (the stat says), or the trash was
		}
		if err != nil {
			return d.pathErr("Delete", path, err)
		}
		return nil
	}
	return &driver.Error{Driver: Name, Op: "Delete", Path: path, Err: errRaced}
}

// errTrashGone is trash's answer when the trash directory it opened was
// removed (by a janitor, as empty) before the rename into it.
var errTrashGone = errors.New("trash directory removed meanwhile")

// internalRaces bounds how often one call retries after losing an
// internal directory (trash or staging) to a janitor that removed it as
// empty; each loss needs a janitor to find it empty again between two
// steps of this call, so many in a row mean a janitor in a tight loop.
const internalRaces = 1000

// trash moves name from the directory pfd into the trash, fsyncs pfd and
// removes it from the trash. A failure to remove is left for Clean: the
// name is gone from the tree.
//
// The entry is flock'ed before it moves and until it is removed, as
// staging entries are while their writer runs, so that Leftovers and Clean
// (fsck beside a live mount or registry) pass over a Delete in progress;
// a crash frees the lock, and what it left is a leftover.
func (d *impl) trash(pfd int, name string) error {
	tfd, err := d.openInternal(trashDirName)
	if err != nil {
		return err
	}
	defer d.releaseInternal(tfd, trashDirName)
	if fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		// Not locked (held by a Delete of the same entry elsewhere): it
		// may show as a leftover for a moment, as before locking.
		_ = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		defer unix.Close(fd)
	}
	t := d.tempName()
	if err := unix.Renameat(pfd, name, tfd, t); err != nil {
		var st unix.Stat_t
		if err == unix.ENOENT && unix.Fstat(tfd, &st) == nil && st.Nlink == 0 {
			return errTrashGone
		}
		return err
	}
	if err := unix.Fsync(pfd); err != nil {
		return err
	}
	removeAt(tfd, t)
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
	for _, n := range names {
		if n == tmpDirName || n == trashDirName {
			continue
		}
		if err := d.trash(int(f.Fd()), n); err != nil && err != unix.ENOENT {
			return &driver.Error{Driver: Name, Op: "Delete", Path: "/", Err: err}
		}
	}
	return nil
}

// Leftovers implements driver.Janitor: the entries of the trash and the
// staging entries whose lock is free (their Delete or writer is gone), as
// file names.
func (d *impl) Leftovers(ctx context.Context) ([]string, error) {
	return d.scan(ctx, false)
}

// Clean implements driver.Janitor. It removes the internal directories too
// once they are empty.
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
	for _, dir := range []string{tmpDirName, trashDirName} {
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
		if errors.Is(err, fs.ErrNotExist) {
			f.Close() // removed, empty, by its last user since the open
			continue
		}
		note(err)
		slices.Sort(names)
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				f.Close()
				return left, err
			}
			if strings.HasPrefix(n, d.id+".") {
				// This driver's own entry: a write in progress here
				// (perhaps between its creation and its lock), or a
				// Delete here still removing it.
				continue
			}
			if ownerAlive(n) {
				// Another live process's entry: in use, or created and
				// not yet locked (owner.go).
				continue
			}
			unlock, ok := claim(fd, n)
			if !ok {
				continue
			}
			left = append(left, filepath.Join(d.root, dir, n))
			if remove {
				if err := removeAt(fd, n); err != nil {
					note(fmt.Errorf("removing %s: %w", filepath.Join(d.root, dir, n), err))
				}
			}
			unlock()
		}
		if remove {
			removeInternal(d.rootFD, fd, dir)
		}
		f.Close()
	}
	return left, first
}

// claim reports whether the entry name of the internal directory dirfd is
// a leftover, and locks it if it is: an entry whose lock is held belongs to
// a running writer or Delete, in this process or another. unlock releases
// the claim.
func claim(dirfd int, name string) (unlock func(), ok bool) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil, false
	}
	if err != nil {
		return func() {}, true // a link or something no writer makes
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return nil, false
	}
	return func() { unix.Close(fd) }, true
}
