package filesystem

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
)

// tempName returns a name unique among every driver on the root, for a file
// or directory in the staging or trash directory.
func (d *impl) tempName() string {
	return d.id + "." + strconv.FormatUint(d.seq.Add(1), 10)
}

// createTemp creates an empty file with the registry's permissions in the
// staging directory, open for writing.
func (d *impl) createTemp() (*os.File, string, error) {
	name := d.tempName()
	fd, err := unix.Openat(d.stageFD, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, filePerm)
	if err != nil {
		return nil, "", err
	}
	// The umask may have taken bits away; the registry's files are 0644.
	if err := unix.Fchmod(fd, filePerm); err != nil {
		unix.Close(fd)
		unix.Unlinkat(d.stageFD, name, 0)
		return nil, "", err
	}
	return os.NewFile(uintptr(fd), d.stagePath+"/"+name), name, nil
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
func (d *impl) install(op string, from loc, dst string) (err error) {
	cur := from
	var fds []int       // directories opened in staging chains
	var chains []string // staging chains to remove
	defer func() {
		if err != nil && cur != from {
			unix.Renameat(cur.dirfd, cur.name, from.dirfd, from.name)
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		for _, c := range chains {
			removeAt(d.stageFD, c)
		}
	}()
	parent, name := split(dst)
	for range raceRetries {
		pfd, err := d.openDir(parent)
		if err == nil {
			err = d.renameInto(cur, pfd, name, dst)
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
		err = d.stageChain(&cur, &fds, &chains, comps[i:], name, afd)
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

// stageChain makes the directories dirs in a new staging chain, moves the
// object at *cur into the last as name, fsyncs them bottom up and renames
// the first into the directory afd, fsyncing afd. *cur follows the object;
// the chain's directories and name are appended to *fds and *chains for
// the caller to release.
func (d *impl) stageChain(cur *loc, fds *[]int, chains *[]string, dirs []string, name string, afd int) error {
	chain := d.tempName()
	if err := unix.Mkdirat(d.stageFD, chain, 0o700); err != nil {
		return err
	}
	*chains = append(*chains, chain)
	top, err := unix.Openat(d.stageFD, chain, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	*fds = append(*fds, top)
	made := make([]int, 0, len(dirs))
	dfd := top
	for _, c := range dirs {
		if err := unix.Mkdirat(dfd, c, dirPerm); err != nil {
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
