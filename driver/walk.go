package driver

import "strings"

// WalkEntries calls fn for entries, which must already be in Walk's order
// (parents before children, siblings sorted), honouring ErrSkipDir. Drivers
// that collect a whole listing first (in memory, or one flat S3 listing)
// share it, so the skip rules live in one place.
func WalkEntries(entries []FileInfo, fn WalkFn) error {
	skip := "" // a directory whose descendants are skipped, with a trailing slash
	for _, fi := range entries {
		if skip != "" && strings.HasPrefix(fi.Path, skip) {
			continue
		}
		skip = ""
		switch err := fn(fi); {
		case err == ErrSkipDir:
			if fi.IsDir {
				skip = fi.Path + "/"
			}
		case err != nil:
			return err
		}
	}
	return nil
}
