package fs

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo: the mount point and its
// device (major:minor, which names its bdi in /sys/class/bdi and, for FUSE,
// its connection in /sys/fs/fuse/connections).
type Mount struct {
	Point, Dev string
}

// Mounts lists the mounts of the calling process's mount namespace.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountinfo(f)
}

// MountAt returns the mount whose mount point is dir (absolute, clean), if
// there is one.
func MountAt(dir string) (Mount, bool, error) {
	mounts, err := Mounts()
	if err != nil {
		return Mount{}, false, err
	}
	for _, m := range mounts {
		if m.Point == dir {
			return m, true, nil
		}
	}
	return Mount{}, false, nil
}

// parseMountinfo parses a mountinfo table: "id parent maj:min root point
// options ...".
func parseMountinfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, Mount{Dev: fields[2], Point: unescapeMountinfo(fields[4])})
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the octal escapes of mountinfo paths (space,
// tab, newline and backslash: \040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
