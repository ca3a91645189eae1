package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/regfs/regfs/cmd/internal/size"
	regfsfs "github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/store/gc"
)

// Storage drivers regfs mount offers.
const (
	driverFilesystem = "filesystem"
	driverInmemory   = "inmemory"
	driverS3         = "s3"
)

// defaultCacheSize is the block cache budget when --cache-size is not given.
const defaultCacheSize = 256 << 20

// Storage says which storage a command works on; regfs mount and regfs fsck
// share these flags.
type Storage struct {
	Driver string
	// Root is the filesystem driver's root directory.
	Root string
	// S3 settings; credentials come from the standard AWS environment
	// variables and shared config.
	S3Bucket, S3Endpoint, S3Region, S3Prefix string
}

// Config is everything regfs mount needs, from the command line.
type Config struct {
	Mountpoint string
	Storage
	ReadOnly   bool
	AllowOther bool
	// NoDefaultPermissions turns off the kernel's permission checks on an
	// --allow-other mount.
	NoDefaultPermissions bool
	// CacheSize is the block cache budget in bytes.
	CacheSize int64
	// DirCacheTime and AttrTimeout are how long the kernel may cache
	// listings and directory names, and the names and attributes of files
	// other writers change (fs.Options.DirCacheTTL, EntryTTL and AttrTTL).
	DirCacheTime time.Duration
	AttrTimeout  time.Duration
	Debug        bool
	// GCInterval runs a collection that often inside the mount (0: never),
	// with GCGrace as its grace window.
	GCInterval, GCGrace time.Duration
	// IndexDir keeps the layer indexes of the image file view (_files/),
	// at most IndexMax bytes (0: no bound).
	IndexDir string
	IndexMax int64
	Service
	// Registry, when its URL is set, mounts a registry's API instead of
	// storage (registry.go).
	Registry Registry
}

// defaultIndexMax bounds the index directory when --index-max is not given.
const defaultIndexMax = 1 << 30

// defaultIndexDir is where layer indexes are kept by default:
// $XDG_CACHE_HOME/regfs/index, else ~/.cache/regfs/index; "" (indexes in
// memory only) when neither can be told.
func defaultIndexDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "regfs", "index")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".cache", "regfs", "index")
}

// Service is how regfs mount runs as a service and what it shows: the
// mount helper form, daemon mode, logging, ownership and metrics.
type Service struct {
	// Source is the mount source as given (regfs SOURCE MOUNTPOINT), ""
	// when the storage flags name the storage.
	Source string
	// Daemon runs the mount in the background once it is up.
	Daemon bool
	// LogFile is where the log goes: a file, "syslog", or "" for stderr
	// (syslog with Daemon).
	LogFile string
	// UID and GID own every node; -1 means the daemon's. Umask clears
	// mode bits from every node's.
	UID, GID int
	Umask    int
	// MetricsAddr is where /metrics is served; "" serves none.
	MetricsAddr string
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

// addStorageFlags defines the flags that choose the storage on fs.
func addStorageFlags(fs *flag.FlagSet, st *Storage, inmemory bool) {
	st.Driver = driverFilesystem
	drivers := "filesystem (a directory, the default) or s3"
	if inmemory {
		drivers = "filesystem (a directory, the default), s3, or\ninmemory (throw-away)"
	}
	fs.StringVar(&st.Driver, "driver", st.Driver, "storage driver `NAME`: "+drivers)
	rootHelp := "filesystem driver root `DIR`, the directory holding docker/registry/v2"
	if inmemory { // regfs mount: a fresh root is a new, empty registry
		rootHelp += ";\ncreated if missing "
	} else {
		rootHelp += "\n"
	}
	fs.StringVar(&st.Root, "root", "", rootHelp+"(default $XDG_DATA_HOME/regfs or ~/.local/share/regfs)")
	fs.StringVar(&st.S3Bucket, "s3-bucket", "", "s3 driver: `BUCKET` holding the registry (required with --driver s3)")
	fs.StringVar(&st.S3Endpoint, "s3-endpoint", "", "s3 driver: endpoint `URL` of an S3-compatible server (default AWS)")
	fs.StringVar(&st.S3Region, "s3-region", "", "s3 driver: `REGION` (default from the AWS config, else us-east-1)")
	fs.StringVar(&st.S3Prefix, "s3-prefix", "", "s3 driver: key `PREFIX` inside the bucket (distribution's rootdirectory)")
}

// checkStorage validates the storage flags and fills in defaults.
func checkStorage(st *Storage, inmemory bool) error {
	s3Set := st.S3Bucket != "" || st.S3Endpoint != "" || st.S3Region != "" || st.S3Prefix != ""
	switch st.Driver {
	case driverFilesystem:
		if s3Set {
			return errors.New("--s3-* flags apply to --driver s3 only")
		}
		if st.Root == "" {
			root, err := defaultRoot()
			if err != nil {
				return err
			}
			st.Root = root
		}
	case driverS3:
		if st.Root != "" {
			return errors.New("--root applies to the filesystem driver only; use --s3-prefix for a prefix in the bucket")
		}
		if st.S3Bucket == "" {
			return errors.New("--driver s3 needs --s3-bucket")
		}
	case driverInmemory:
		if !inmemory {
			return errors.New("the inmemory driver holds nothing to check: use filesystem or s3")
		}
		if st.Root != "" || s3Set {
			return errors.New("--root and --s3-* flags do not apply to the inmemory driver")
		}
	default:
		if inmemory {
			return fmt.Errorf("unknown driver %q: want filesystem, s3 or inmemory", st.Driver)
		}
		return fmt.Errorf("unknown driver %q: want filesystem or s3", st.Driver)
	}
	return nil
}

// newMountFlags defines the mount flags on cfg.
func newMountFlags(cfg *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("regfs mount", flag.ContinueOnError)
	cfg.CacheSize = defaultCacheSize
	cfg.DirCacheTime = regfsfs.DefaultDirCacheTTL
	cfg.AttrTimeout = regfsfs.DefaultAttrTTL
	addStorageFlags(fs, &cfg.Storage, true)
	addRegistryFlags(fs, &cfg.Registry)
	fs.BoolVar(&cfg.ReadOnly, "read-only", false, "refuse every write with EROFS")
	fs.BoolVar(&cfg.AllowOther, "allow-other", false, "let other users use the mount, as the modes allow (the kernel\nchecks them; see --uid, --gid, --umask; needs user_allow_other in\n/etc/fuse.conf when not root)")
	fs.BoolVar(&cfg.NoDefaultPermissions, "no-default-permissions", false, "with --allow-other, let every user do what the daemon's user may:\nthe kernel checks no modes (unsafe unless every local user is trusted)")
	fs.Var(size.Flag{N: &cfg.CacheSize}, "cache-size", "block cache budget `SIZE` in bytes, with K, M, G or T (default 256M)")
	fs.DurationVar(&cfg.DirCacheTime, "dir-cache-time", cfg.DirCacheTime, "how long directory listings and the names of namespace directories\n(repositories) are cached: what another writer adds or removes shows\nin listings within `DURATION`; regfs's own changes show at once\n(default "+shortDuration(regfsfs.DefaultDirCacheTTL)+")")
	fs.DurationVar(&cfg.AttrTimeout, "attr-timeout", cfg.AttrTimeout, "how long the names of layers, revisions and tags and the attributes\nof tags are cached: a tag another writer moves or deletes shows so\nwithin `DURATION` (default "+shortDuration(regfsfs.DefaultAttrTTL)+")")
	fs.BoolVar(&cfg.Debug, "debug", false, "log every FUSE request and response")
	addServiceFlags(fs, &cfg.Service)
	fs.DurationVar(&cfg.GCInterval, "gc-interval", 0, "run regfs gc (default flags) every `DURATION` inside the mount (default off)")
	fs.DurationVar(&cfg.GCGrace, "gc-grace", gc.DefaultGrace, "grace window `AGE` of --gc-interval's runs (default 1h)")
	cfg.IndexMax = defaultIndexMax
	fs.StringVar(&cfg.IndexDir, "index-dir", "", "keep the layer indexes of _files/ in `DIR`, created if missing\n(default $XDG_CACHE_HOME/regfs/index or ~/.cache/regfs/index)")
	fs.Var(size.Flag{N: &cfg.IndexMax}, "index-max", "bound the index directory to `SIZE`, least recently used removed\nfirst (default 1G; 0: no bound)")
	return fs
}

// shortDuration prints d without zero trailing units: 1m, not 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	for _, zero := range []string{"0s", "0m"} {
		if t := strings.TrimSuffix(s, zero); t != s && t != "" && !strings.HasSuffix(t, ".") && t[len(t)-1] >= 'a' {
			s = t
		}
	}
	return s
}

// writeFlags lists a command's flags, GNU style, for its --help.
func writeFlags(b *strings.Builder, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, text := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if len(f.Name) == 1 { // -o, as mount spells it
			name = "-" + f.Name
		}
		if arg != "" {
			name += " " + arg
		}
		indent := strings.Repeat(" ", 24)
		text = strings.ReplaceAll(text, "\n", "\n"+indent)
		if len(name) > 20 { // the text goes below a long name
			fmt.Fprintf(b, "  %s\n%s%s\n", name, indent, text)
			return
		}
		fmt.Fprintf(b, "  %-20s  %s\n", name, text)
	})
}

// mountUsage is regfs mount --help.
func mountUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(`Usage: regfs mount [flags] [SOURCE] MOUNTPOINT
       regfs SOURCE MOUNTPOINT [-o OPTIONS]

Mount a container registry's storage at MOUNTPOINT and serve it in the
foreground (or, with --daemon, in the background once the mount is up);
Ctrl-C or SIGTERM unmounts. MOUNTPOINT must be an empty directory that is
not already a mount point. The log goes to stderr (--log-file); the line
"msg=mounted" says the mount is ready, and under systemd (Type=notify)
READY=1 is sent then.

SOURCE names the storage instead of --driver and --root or --s3-*: a
directory (the filesystem driver's root, which must exist),
s3://BUCKET/PREFIX (the s3 driver; --s3-endpoint and --s3-region as
flags or options), http(s)://HOST[:PORT] (a registry's API, as --registry),
or inmemory. The second form is what mount -t fuse.regfs
and an fstab line run (through mount.fuse3); it is a daemon unless
-o daemon=false.

Every flag is also a mount option, spelt with _ for - (cache_size=2G,
read_only); ro, rw and allow_other are too, and mount's own options
(noauto, _netdev, nofail, user, x-*, nodev, nosuid, noexec, noatime, ...)
are accepted and ignored. An unknown option is an error.

Flags:
`)
	writeFlags(&b, fs)
	b.WriteString(`
Examples:
  regfs mount ./mnt
  regfs mount --root /var/lib/docker-registry --read-only /mnt/registry
  regfs mount --driver inmemory --cache-size 1G /tmp/scratch
  regfs mount --daemon --log-file /var/log/regfs.log -o ro,allow_other,gid=1001 \
      /var/lib/docker-registry /srv/registry
  mount -t fuse.regfs -o ro,allow_other,cache_size=2G s3://registry/prefix /srv/registry
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... regfs mount --driver s3 \
      --s3-bucket registry --s3-endpoint http://127.0.0.1:7070 --s3-region us-east-1 ./mnt
`)
	return b.String()
}

// parseMount parses regfs mount's arguments; flags may come before or after
// the positional arguments, MOUNTPOINT or SOURCE MOUNTPOINT (the form
// mount.fuse3 runs, see options.go). --help prints the usage to stdout and
// returns flag.ErrHelp.
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
	if err := applyOptions(fs, *fs.Lookup("o").Value.(optionsFlag).lists); err != nil {
		return cfg, err
	}
	switch len(positional) {
	case 0:
		return cfg, errors.New("missing MOUNTPOINT")
	case 1:
		cfg.Mountpoint = positional[0]
	case 2:
		cfg.Source, cfg.Mountpoint = positional[0], positional[1]
		if err := checkSourceAlone(fs); err != nil {
			return cfg, err
		}
		if err := applySource(fs, cfg.Source); err != nil {
			return cfg, err
		}
	default:
		return cfg, fmt.Errorf("MOUNTPOINT or SOURCE MOUNTPOINT expected, got %q", positional)
	}
	if cfg.NoDefaultPermissions && !cfg.AllowOther {
		return cfg, errors.New("--no-default-permissions applies with --allow-other only")
	}
	if cfg.GCInterval < 0 || cfg.GCGrace < 0 {
		return cfg, errors.New("--gc-interval and --gc-grace must not be negative")
	}
	if cfg.GCInterval > 0 && cfg.ReadOnly {
		return cfg, errors.New("--gc-interval needs a writable mount")
	}
	if cfg.DirCacheTime <= 0 || cfg.AttrTimeout <= 0 {
		return cfg, errors.New("--dir-cache-time and --attr-timeout must be positive")
	}
	if cfg.IndexMax < 0 {
		return cfg, errors.New("--index-max must not be negative")
	}
	if cfg.IndexDir == "" {
		cfg.IndexDir = defaultIndexDir()
	} else {
		abs, err := filepath.Abs(cfg.IndexDir)
		if err != nil {
			return cfg, err
		}
		cfg.IndexDir = abs
	}
	if err := checkRegistry(fs, &cfg); err != nil || cfg.Registry.URL != "" {
		return cfg, err
	}
	return cfg, checkStorage(&cfg.Storage, true)
}

// checkSourceAlone refuses storage flags beside a SOURCE, which names the
// storage itself; --s3-endpoint and --s3-region go with an s3:// source.
func checkSourceAlone(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "driver", "root", "s3-bucket", "s3-prefix", "registry":
			if err == nil {
				err = fmt.Errorf("--%s (%s) and a SOURCE both name the storage: use one", f.Name, strings.ReplaceAll(f.Name, "-", "_"))
			}
		}
	})
	return err
}
