// Package size parses and prints byte counts with binary suffixes, for the
// command-line flags of regfs and regfs-bench ("256M", "1G").
package size

import (
	"fmt"
	"strconv"
	"strings"
)

// Parse parses "1048576", "512K", "256M", "2G", "1T" (powers of 1024; "KB",
// "KiB" and lower case also accepted). The size must be positive.
func Parse(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid size %q: want a positive number of bytes, optionally with K, M, G or T", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}

// Format prints n with the largest exact suffix, so that Parse(Format(n))
// is n.
func Format(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
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
