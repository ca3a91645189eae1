// Package size parses and prints byte counts with binary suffixes, for the
// command-line flags of regfs and regfs-bench ("256M", "1G"). The parsing
// and printing are docker/go-units' (RAMInBytes, BytesSize); this package
// adds what the flags need on top: sizes must be positive and bounded, and
// a printed size parses back to the same number.
package size

import (
	"fmt"
	"strconv"
	"strings"

	units "github.com/docker/go-units"
)

// maxSize bounds a size well below int64's range, where go-units' float
// arithmetic would wrap.
const maxSize = 1 << 62

// Parse parses "1048576", "512K", "256M", "2G", "1T", "1.5G" (powers of
// 1024; "KB", "KiB" and lower case also accepted). The size must be
// positive.
func Parse(s string) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil || n <= 0 || n > maxSize {
		if err == nil && n > 0 {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		return 0, fmt.Errorf("invalid size %q: want a positive number of bytes, optionally with K, M, G or T", s)
	}
	return n, nil
}

// Format prints n as go-units does ("256MiB", "1.5GiB") when that parses
// back to n, else as a plain number of bytes.
func Format(n int64) string {
	s := units.BytesSize(float64(n))
	if back, err := Parse(s); err == nil && back == n {
		return s
	}
	return strconv.FormatInt(n, 10)
}

// Flag is a flag.Value holding a byte count in *N.
type Flag struct{ N *int64 }

func (f Flag) String() string {
	if f.N == nil {
		return ""
	}
	return Format(*f.N)
}

// Set implements flag.Value.
func (f Flag) Set(v string) error {
	n, err := Parse(v)
	if err != nil {
		return err
	}
	*f.N = n
	return nil
}
