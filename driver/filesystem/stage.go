package filesystem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
)

// tempName returns a name unique among every driver on the root, for a file
// or directory in the staging or trash directory.
func (d *impl) tempName() string {
	return d.id + "." + strconv.FormatUint(d.seq.Add(1), 10)
}

// openInternal opens the driver's internal directory name in the root
// (tmpDirName or trashDirName), making it if missing, and counts the caller
// as its user until releaseInternal. A link or file in its place is an
// error, never followed.
func (d *impl) openInternal(name string) (int, error) {
	d.users(name).Add(1)
	for tries, gone := 0, 0; tries < raceRetries; tries++ {
		fd, err := unix.Openat(d.rootFD, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			// A shared lock for as long as the call uses the directory:
			// whoever removes it as empty (the last user, a janitor)
			// takes the exclusive lock first, so it is never removed
			// under a call that holds it. One removed between the open
			// and the lock has no links left: open the new one.
			err = flockRetry(fd, unix.LOCK_SH)
			var st unix.Stat_t
			if err == nil {
				err = unix.Fstat(fd, &st)
			}
			if err == nil && st.Nlink == 0 {
				unix.Close(fd)
				if gone < internalRaces {
					gone++
					tries--
				}
				continue
			}
			if err != nil {
				unix.Close(fd)
				d.users(name).Add(-1)
				return -1, err
			}
			return fd, nil
		}
		if err != unix.ENOENT {
			if err == unix.ELOOP || err == unix.ENOTDIR {
				err = fmt.Errorf("%s is not a directory", filepath.Join(d.root, name))
			}
			d.users(name).Add(-1)
			return -1, err
		}
		if err := unix.Mkdirat(d.rootFD, name, 0o700); err != nil && err != unix.EEXIST {
			d.users(name).Add(-1)
			return -1, err
		}
		// Made (or found made); a janitor may remove it, empty, before
		// the open: that is not a race of the caller's target either.
		if gone < internalRaces {
			gone++
			tries--
		}
	}
	d.users(name).Add(-1)
	return -1, errRaced
}

// flockRetry is flock(2) that retries EINTR.
func flockRetry(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); err != unix.EINTR {
			return err
		}
	}
}

// releaseInternal closes fd, the internal directory name, and when the
// caller was its last user in this driver, removes the directory if it is
// empty and no call (in this or another process) holds its shared lock,
// so that the root holds nothing of regfs's once no call is in flight.
func (d *impl) releaseInternal(fd int, name string) {
	if d.users(name).Add(-1) == 0 {
		removeInternal(d.rootFD, fd, name)
	}
	unix.Close(fd)
}

// removeInternal removes the internal directory name, open as fd, if it is
// empty and nobody else holds its lock: the shared lock a holder of fd has
// is turned into the exclusive one without waiting, or nothing is removed.
func removeInternal(rootFD, fd int, name string) {
	if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
		unix.Unlinkat(rootFD, name, unix.AT_REMOVEDIR)
	}
}

// users counts the calls using the internal directory name.
func (d *impl) users(name string) *atomic.Int32 {
	if name == tmpDirName {
		return &d.tmpUsers
	}
	return &d.trashUsers
}

// temp is an entry of the staging directory: a file or the top of a
// directory chain, flock'ed by this driver while it is there, so that a
// janitor (Clean, in this or another process) can tell it from one that a
// crash left.
type temp struct {
	tmpfd int    // the staging directory
	name  string // the entry's name in it
	fd    int    // the entry, holding the lock
}

// newTemp makes a staging entry: an empty file with the registry's
// permissions, open for writing, or a directory.
func (d *impl) newTemp(dir bool) (temp, error) {
	for tries, tmpGone := 0, 0; tries < raceRetries; tries++ {
		tmpfd, err := d.openInternal(tmpDirName)
		if err != nil {
			return temp{}, err
		}
		t := temp{tmpfd: tmpfd, name: d.tempName(), fd: -1}
		if dir {
			if err = unix.Mkdirat(tmpfd, t.name, 0o700); err == nil {
				t.fd, err = unix.Openat(tmpfd, t.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		} else {
			t.fd, err = unix.Openat(tmpfd, t.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, filePerm)
			if err == nil {
				// The umask may have taken bits away; the registry's
				// files are 0644.
				err = unix.Fchmod(t.fd, filePerm)
			}
		}
		if err == nil {
			err = unix.Flock(t.fd, unix.LOCK_EX)
		}
		if err == nil {
			// A janitor that took the entry for a crash's before the
			// lock removed it: it must still be the one in place.
			var st, in unix.Stat_t
			if err = unix.Fstat(t.fd, &st); err == nil {
				err = unix.Fstatat(tmpfd, t.name, &in, unix.AT_SYMLINK_NOFOLLOW)
			}
			if err == nil && (st.Dev != in.Dev || st.Ino != in.Ino) {
				err = unix.ENOENT
			}
			if err == nil {
				return t, nil
			}
		}
		if t.fd >= 0 {
			unix.Close(t.fd)
		}
		var st unix.Stat_t
		if err == unix.ENOENT && unix.Fstat(tmpfd, &st) == nil && st.Nlink == 0 && tmpGone < internalRaces {
			// A janitor removed the staging directory, empty, between
			// its opening and the entry's creation: not a race of this
			// write's target, so it does not count against raceRetries.
			tmpGone++
			tries--
		}
		removeAt(tmpfd, t.name)
		d.releaseInternal(tmpfd, tmpDirName)
		if err != unix.ENOENT {
			return temp{}, err
		}
		// The staging directory was removed when empty, or the entry
		// taken: again.
	}
	return temp{}, errRaced
}

// release removes what is left of the entry t, drops its lock and lets the
// staging directory go if it is empty.
func (d *impl) release(t temp) {
	removeAt(t.tmpfd, t.name)
	// Explicitly: a duplicate of the descriptor (a Writer's) would keep
	// the lock on what is now an object of the tree.
	unix.Flock(t.fd, unix.LOCK_UN)
	unix.Close(t.fd)
	d.releaseInternal(t.tmpfd, tmpDirName)
}

// loc is a name in an open directory: where an object being installed is.
type loc struct {
	dirfd int
	name  string
}

// install renames the object at from to the driver path dst, replacing the
// object there, and fsyncs dst's directory so that the rename survives a
// crash. A symbolic link at dst is refused.
//
// When dst's parents are missing, install makes them in the staging
// directory, moves the object into the deepest, fsyncs them and renames the
// topmost into place (refusing to replace a directory): the new directories
// appear with the object in them or not at all, to a reader and after a
// crash. A writer that made the same directory meanwhile, or a delete of the
// directory being written into, makes it try again from where the object
// is. On failure the object is put back at from.
//
// Errors are driver errors for dst, or errGone when the object at from
// vanished (a concurrent Move or Delete took it).
//
// sync, if not nil, makes the object itself durable (PutContent's fsync of
// its file); install calls it once, as late as it can: just before the
// object is renamed into the tree, or into a new chain of directories
// before the chain is (so that one journal commit covers the file and the
// directories made for it).
func (d *impl) install(op string, from loc, dst string, sync func() error) (err error) {
	synced := sync == nil
	durable := func() error {
		if synced {
			return nil
		}
		synced = true
		return sync()
	}
	cur := from
	var fds []int     // directories opened in staging chains
	var chains []temp // staging chains, released at the end
	defer func() {
		if err != nil && cur != from {
			unix.Renameat(cur.dirfd, cur.name, from.dirfd, from.name)
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		for _, c := range chains {
			d.release(c)
		}
	}()
	parent, name := split(dst)
	for range raceRetries {
		pfd, err := d.openDir(parent)
		if err == nil {
			if err = durable(); err == nil {
				err = d.renameInto(cur, pfd, name, dst)
			}
			unix.Close(pfd)
			if err != unix.ENOENT {
				return d.writeErr(op, dst, err)
			}
			if gone(cur) {
				return errGone
			}
			continue // the directory was deleted since it was opened
		}
		if err != unix.ENOENT {
			return d.writeErr(op, dst, err)
		}

		// Find the deepest ancestor that exists; comps[i:] are missing.
		comps := strings.Split(parent[1:], "/")
		i := len(comps) - 1
		var afd int
		for {
			afd, err = d.openDir("/" + strings.Join(comps[:i], "/"))
			if err != unix.ENOENT || i == 0 {
				break
			}
			i--
		}
		if err != nil {
			return d.writeErr(op, dst, err)
		}
		chain, err := d.newTemp(true)
		if err != nil {
			unix.Close(afd)
			return d.writeErr(op, dst, err)
		}
		chains = append(chains, chain)
		err = d.stageChain(&cur, &fds, chain.fd, comps[i:], name, afd, durable)
		unix.Close(afd)
		switch err {
		case nil:
			return nil
		case unix.EEXIST, unix.ENOTEMPTY, unix.ENOENT:
			// Another writer made the directory, or a delete took the
			// ancestor: try again from where the object is now.
			if gone(cur) {
				return errGone
			}
			continue
		}
		return d.writeErr(op, dst, err)
	}
	return &driver.Error{Driver: Name, Op: op, Path: dst, Err: errRaced}
}

// stageChain makes the directories dirs in the staging directory top,
// moves the object at *cur into the last as name, fsyncs them bottom up and
// renames the first into the directory afd, fsyncing afd; durable makes
// the object durable before the directories are. *cur follows the object; the directories opened are appended to *fds for the caller to
// close.
func (d *impl) stageChain(cur *loc, fds *[]int, top int, dirs []string, name string, afd int, durable func() error) error {
	made := make([]int, 0, len(dirs))
	dfd := top
	for _, c := range dirs {
		err := unix.Mkdirat(dfd, c, dirPerm)
		if err != nil {
			return err
		}
		if dfd, err = unix.Openat(dfd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		*fds = append(*fds, dfd)
		made = append(made, dfd)
	}
	if err := unix.Renameat(cur.dirfd, cur.name, dfd, name); err != nil {
		return err
	}
	*cur = loc{dfd, name}
	if err := durable(); err != nil {
		return err
	}
	for i := len(made) - 1; i >= 0; i-- {
		if err := unix.Fsync(made[i]); err != nil {
			return err
		}
	}
	if err := unix.Renameat2(top, dirs[0], afd, dirs[0], unix.RENAME_NOREPLACE); err != nil {
		return err
	}
	return unix.Fsync(afd)
}

// renameInto renames the object at cur to name in the directory pfd and
// fsyncs pfd, refusing a symbolic link at name (dst's driver path). It
// returns a raw errno for the caller to classify.
func (d *impl) renameInto(cur loc, pfd int, name, dst string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return driver.SymlinkError{Path: dst, Link: dst, Driver: Name}
	}
	if err := unix.Renameat(cur.dirfd, cur.name, pfd, name); err != nil {
		return err
	}
	return unix.Fsync(pfd)
}

// gone reports whether nothing is at l any more.
func gone(l loc) bool {
	var st unix.Stat_t
	return unix.Fstatat(l.dirfd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW) == unix.ENOENT
}

// writeErr turns the error of writing at the driver path dst into the
// driver's error. Unlike for a read, a parent that is an object (ENOTDIR)
// is not "not found": the write cannot be done, and says why.
func (d *impl) writeErr(op, dst string, err error) error {
	switch err.(type) {
	case nil:
		return nil
	case driver.SymlinkError, driver.PathNotFoundError, *driver.Error:
		return err
	}
	if err == unix.ELOOP {
		return d.pathErr(op, dst, err)
	}
	return &driver.Error{Driver: Name, Op: op, Path: dst, Err: err}
}

// removeAt removes name from the directory dirfd and, if it is a directory,
// everything below it, following no link. Entries that vanish meanwhile are
// fine; entries added meanwhile (a write that opened a directory before it
// was moved to the trash) are removed on a second pass.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	for range raceRetries {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			return nil
		}
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), name)
		names, err := f.Readdirnames(-1)
		if errors.Is(err, fs.ErrNotExist) {
			f.Close()
			return nil // removed meanwhile by another janitor
		}
		for _, n := range names {
			if rerr := removeAt(fd, n); rerr != nil && err == nil {
				err = rerr
			}
		}
		f.Close()
		if err != nil {
			return err
		}
		err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.ENOTEMPTY && err != unix.EEXIST {
			return err
		}
	}
	return unix.ENOTEMPTY
}
