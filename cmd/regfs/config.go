package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Storage drivers regfs mount offers.
const (
	driverFilesystem = "filesystem"
	driverInmemory   = "inmemory"
)

// defaultCacheSize is the block cache budget when --cache-size is not given.
const defaultCacheSize = 256 << 20

// Config is everything regfs mount needs, from the command line.
type Config struct {
	Mountpoint string
	Driver     string
	// Root is the filesystem driver's root directory.
	Root       string
	ReadOnly   bool
	AllowOther bool
	// CacheSize is the block cache budget in bytes.
	CacheSize int64
	Debug     bool
}

// sizeFlag is a byte count with an optional K, M, G or T suffix.
type sizeFlag struct{ n *int64 }

func (s sizeFlag) String() string {
	if s.n == nil {
		return ""
	}
	return formatSize(*s.n)
}

func (s sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.n = n
	return nil
}

// parseSize parses "1048576", "512K", "256M", "2G", "1T" (powers of 1024;
// "KB", "KiB" and lower case also accepted). The size must be positive.
func parseSize(s string) (int64, error) {
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

// formatSize prints n with the largest exact suffix.
func formatSize(n int64) string {
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

// defaultRoot is where the filesystem driver keeps its data by default:
// $XDG_DATA_HOME/regfs, else ~/.local/share/regfs.
func defaultRoot() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "regfs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errors.New("cannot find a default storage root ($HOME is not set): use --root DIR")
	}
	return filepath.Join(home, ".local", "share", "regfs"), nil
}

// newMountFlags defines the mount flags on cfg.
func newMountFlags(cfg *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("regfs mount", flag.ContinueOnError)
	cfg.Driver = driverFilesystem
	cfg.CacheSize = defaultCacheSize
	fs.StringVar(&cfg.Driver, "driver", cfg.Driver, "storage driver `NAME`: filesystem (a directory, the default) or inmemory\n(throw-away)")
	fs.StringVar(&cfg.Root, "root", "", "filesystem driver root `DIR`, the directory holding docker/registry/v2;\ncreated if missing (default $XDG_DATA_HOME/regfs or ~/.local/share/regfs)")
	fs.BoolVar(&cfg.ReadOnly, "read-only", false, "refuse every write with EROFS")
	fs.BoolVar(&cfg.AllowOther, "allow-other", false, "let other users use the mount (needs user_allow_other in /etc/fuse.conf\nwhen not root)")
	fs.Var(sizeFlag{&cfg.CacheSize}, "cache-size", "block cache budget `SIZE` in bytes, with K, M, G or T (default 256M)")
	fs.BoolVar(&cfg.Debug, "debug", false, "log every FUSE request and response")
	return fs
}

// mountUsage is regfs mount --help.
func mountUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(`Usage: regfs mount [flags] MOUNTPOINT

Mount a container registry's storage at MOUNTPOINT and serve it in the
foreground; Ctrl-C or SIGTERM unmounts. MOUNTPOINT must be an empty directory
that is not already a mount point. The log goes to stderr; the line
"msg=mounted" says the mount is ready.

Flags:
`)
	fs.VisitAll(func(f *flag.Flag) {
		arg, text := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if arg != "" {
			name += " " + arg
		}
		text = strings.ReplaceAll(text, "\n", "\n"+strings.Repeat(" ", 24))
		fmt.Fprintf(&b, "  %-20s  %s\n", name, text)
	})
	b.WriteString(`
Examples:
  regfs mount ./mnt
  regfs mount --root /var/lib/docker-registry --read-only /mnt/registry
  regfs mount --driver inmemory --cache-size 1G /tmp/scratch
`)
	return b.String()
}

// parseMount parses regfs mount's arguments; flags may come before or after
// MOUNTPOINT. --help prints the usage to stdout and returns flag.ErrHelp.
func parseMount(args []string, stdout, stderr io.Writer) (Config, error) {
	var cfg Config
	fs := newMountFlags(&cfg)
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, mountUsage(fs))
			}
			return cfg, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(positional) {
	case 0:
		return cfg, errors.New("missing MOUNTPOINT")
	case 1:
		cfg.Mountpoint = positional[0]
	default:
		return cfg, fmt.Errorf("one MOUNTPOINT expected, got %q", positional)
	}
	switch cfg.Driver {
	case driverFilesystem:
		if cfg.Root == "" {
			root, err := defaultRoot()
			if err != nil {
				return cfg, err
			}
			cfg.Root = root
		}
	case driverInmemory:
		if cfg.Root != "" {
			return cfg, errors.New("--root applies to the filesystem driver only")
		}
	default:
		return cfg, fmt.Errorf("unknown driver %q: want filesystem or inmemory", cfg.Driver)
	}
	return cfg, nil
}
