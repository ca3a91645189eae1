package main

import (
	"flag"
	"fmt"
	"os/user"
	"strconv"
)

// defaultUmask is --umask when not given: directories 0755 and writable
// files 0644, as most of a system's files.
const defaultUmask = 0o022

// addServiceFlags defines the flags of Service on fs.
func addServiceFlags(fs *flag.FlagSet, s *Service) {
	s.UID, s.GID, s.Umask = -1, -1, defaultUmask
	fs.BoolVar(&s.Daemon, "daemon", false, "run in the background once the mount is up; exit non-zero with\nthe error when it does not come up (the mount helper form's default)")
	fs.StringVar(&s.LogFile, "log-file", "", "write the log to `FILE`, or to syslog (the journal) with\n--log-file syslog (default stderr; syslog with --daemon)")
	fs.Var(idFlag{n: &s.UID}, "uid", "`USER` (name or number) that owns every file and directory\n(default the daemon's)")
	fs.Var(idFlag{n: &s.GID, group: true}, "gid", "`GROUP` (name or number) that owns every file and directory\n(default the daemon's)")
	fs.Var(umaskFlag{&s.Umask}, "umask", "`MASK` (octal) of mode bits cleared from every file and directory\n(default 022: directories 0755, writable files 0644)")
	fs.StringVar(&s.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://`ADDR`/metrics (host:port; off by default)")
	fs.Var(optionsFlag{new([]string)}, "o", "mount `OPTIONS`, comma-separated: ro, rw, allow_other and every flag\nspelt with _ (cache_size=2G); see Mount options in the README")
}

// idFlag is a user or group flag, by number or name; -1 (unset) prints
// as "".
type idFlag struct {
	n     *int
	group bool
}

func (f idFlag) String() string {
	if f.n == nil || *f.n < 0 {
		return ""
	}
	return strconv.Itoa(*f.n)
}

// Set implements flag.Value.
func (f idFlag) Set(v string) error {
	id := v
	if _, err := strconv.ParseUint(v, 10, 32); err != nil && v != "" && v[0] != '-' {
		if f.group {
			g, err := user.LookupGroup(v)
			if err != nil {
				return fmt.Errorf("unknown group %q", v)
			}
			id = g.Gid
		} else {
			u, err := user.Lookup(v)
			if err != nil {
				return fmt.Errorf("unknown user %q", v)
			}
			id = u.Uid
		}
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil || n == 1<<32-1 {
		return fmt.Errorf("invalid id %q: want a name or a number from 0 to 4294967294", v)
	}
	*f.n = int(n)
	return nil
}

// umaskFlag is an octal mode mask.
type umaskFlag struct{ n *int }

func (f umaskFlag) String() string {
	if f.n == nil {
		return ""
	}
	return fmt.Sprintf("%03o", *f.n)
}

// Set implements flag.Value.
func (f umaskFlag) Set(v string) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("invalid umask %q: want octal digits, 000 to 777", v)
	}
	*f.n = int(n)
	return nil
}
