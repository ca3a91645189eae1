package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	regfsfs "github.com/regfs/regfs/fs"
)

// checkMountpoint refuses a mountpoint regfs should not mount on, with a
// message that says what to do: it must exist, be a directory, be empty and
// not be a mount point already. It returns the absolute path.
func checkMountpoint(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %v", p, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("mountpoint %s does not exist: create it with mkdir -p %s", p, p)
	case err != nil && isMountPoint(abs):
		return "", fmt.Errorf("mountpoint %s is a mount that does not answer (a dead FUSE mount?): unmount it with fusermount3 -u -z %s", p, abs)
	case err != nil:
		return "", fmt.Errorf("mountpoint %s: %v", p, errors.Unwrap(err))
	case !fi.IsDir():
		return "", fmt.Errorf("mountpoint %s is not a directory", p)
	}
	if mounted, err := isMountedOn(abs, fi); err != nil {
		return "", fmt.Errorf("mountpoint %s: %v", p, err)
	} else if mounted {
		return "", fmt.Errorf("mountpoint %s is already a mount point: unmount it first (fusermount3 -u %s)", p, abs)
	}
	empty, err := isEmptyDir(abs)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %v", p, errors.Unwrap(err))
	}
	if !empty {
		return "", fmt.Errorf("mountpoint %s is not empty: mounting would hide its files; use an empty directory", p)
	}
	return abs, nil
}

// isMountedOn tells whether abs (described by fi) is a mount point: its
// device differs from its parent's, or /proc/self/mountinfo lists it (a
// bind mount of the same device).
func isMountedOn(abs string, fi os.FileInfo) (bool, error) {
	if abs == "/" {
		return true, nil
	}
	pfi, err := os.Stat(filepath.Dir(abs))
	if err != nil {
		return false, err
	}
	st, ok1 := fi.Sys().(*syscall.Stat_t)
	pst, ok2 := pfi.Sys().(*syscall.Stat_t)
	if ok1 && ok2 && st.Dev != pst.Dev {
		return true, nil
	}
	return isMountPoint(abs), nil
}

// isEmptyDir tells whether the directory p has no entries.
func isEmptyDir(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// isMountPoint tells whether /proc/self/mountinfo lists abs as a mount point.
func isMountPoint(abs string) bool {
	_, ok, _ := regfsfs.MountAt(abs)
	return ok
}
