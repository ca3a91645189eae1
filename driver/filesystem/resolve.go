package filesystem

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
)

// resolveFlags make openat2 refuse, in the kernel, any path that would leave
// the root or pass through a symbolic link anywhere, the last component
// included. With no ".." in a driver path, the first flag is a second line
// of defence; the second is the one that matters.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openRetries bounds the retries of an openat2 that the kernel asks to retry
// (EAGAIN: a concurrent rename while it resolved) or that a signal
// interrupted.
const openRetries = 16

// rel turns a valid driver path into a path relative to the root.
func rel(path string) string {
	if path == "/" {
		return "."
	}
	return path[1:]
}

// split returns the driver path of path's parent and path's last component.
func split(path string) (parent, name string) {
	i := strings.LastIndexByte(path, '/')
	if i == 0 {
		return "/", path[1:]
	}
	return path[:i], path[i+1:]
}

// open opens the driver path beneath the root with flags (O_CLOEXEC added),
// refusing symbolic links.
func (d *impl) open(path string, flags int) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveFlags}
	r := rel(path)
	for i := 0; ; i++ {
		fd, err := unix.Openat2(d.rootFD, r, &how)
		if (err == unix.EAGAIN || err == unix.EINTR) && i < openRetries {
			continue
		}
		return fd, err
	}
}

// openDir opens the directory at the driver path for reading its entries,
// for fsync and as the anchor of *at calls.
func (d *impl) openDir(path string) (int, error) {
	return d.open(path, unix.O_RDONLY|unix.O_DIRECTORY)
}

// pathErr turns the error of resolving path (or of an *at call on its last
// component) into the driver's error: PathNotFoundError for a missing path
// or one below an object, SymlinkError naming the link for ELOOP (which,
// with RESOLVE_NO_SYMLINKS and O_NOFOLLOW, means a link), *driver.Error
// otherwise.
func (d *impl) pathErr(op, path string, err error) error {
	switch {
	case err == nil:
		return nil
	case err == unix.ENOENT || err == unix.ENOTDIR:
		return driver.PathNotFoundError{Path: path, Driver: Name}
	case err == unix.ELOOP:
		return driver.SymlinkError{Path: path, Link: d.findLink(path), Driver: Name}
	}
	return &driver.Error{Driver: Name, Op: op, Path: path, Err: err}
}

// findLink returns the first component of path, from the root down, that is
// a symbolic link, or "" if there is none (any more). It runs on the error
// path only, to say in the log which name to look at; it lstats one name at
// a time, from its parent opened beneath the root, so it follows nothing.
func (d *impl) findLink(path string) string {
	for i := 1; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			continue
		}
		parent, name := split(path[:i])
		fd, err := d.open(parent, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return ""
		}
		var st unix.Stat_t
		err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(fd)
		if err != nil {
			return ""
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return path[:i]
		}
	}
	return ""
}

// lstatAt describes name in the directory dirfd without following it; a
// symbolic link is SymlinkError for path, a missing name PathNotFoundError.
func (d *impl) lstatAt(op string, dirfd int, name, path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, d.pathErr(op, path, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return st, driver.SymlinkError{Path: path, Link: path, Driver: Name}
	}
	return st, nil
}

// errNotRegular is the cause of opening a name that is neither a file nor a
// directory (a FIFO or a device someone made in the tree): reading it could
// block or read a disk.
var errNotRegular = errors.New("not a regular file")

// errRaced is the cause of a write that lost raceRetries races in a row
// against deletes of its directory.
var errRaced = errors.New("directory deleted under the write too many times in a row")
