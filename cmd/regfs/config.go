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
		rootHelp += ";\ncreated if missing"
	} else {
		rootHelp += "\n"
	}
	fs.StringVar(&st.Root, "root", "", rootHelp+" (default $XDG_DATA_HOME/regfs or ~/.local/share/regfs)")
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
	fs.BoolVar(&cfg.ReadOnly, "read-only", false, "refuse every write with EROFS")
	fs.BoolVar(&cfg.AllowOther, "allow-other", false, "let other users use the mount, as the modes allow: only the\ndaemon's user may write (needs user_allow_other in /etc/fuse.conf\nwhen not root)")
	fs.BoolVar(&cfg.NoDefaultPermissions, "no-default-permissions", false, "with --allow-other, let every user do what the daemon's user may:\nthe kernel checks no modes (unsafe unless every local user is trusted)")
	fs.Var(size.Flag{N: &cfg.CacheSize}, "cache-size", "block cache budget `SIZE` in bytes, with K, M, G or T (default 256M)")
	fs.DurationVar(&cfg.DirCacheTime, "dir-cache-time", cfg.DirCacheTime, "how long directory listings and the names of namespace directories\n(repositories) are cached: what another writer adds or removes shows\nin listings within `DURATION`; regfs's own changes show at once\n(default "+shortDuration(regfsfs.DefaultDirCacheTTL)+")")
	fs.DurationVar(&cfg.AttrTimeout, "attr-timeout", cfg.AttrTimeout, "how long the names of layers, revisions and tags and the attributes\nof tags are cached: a tag another writer moves or deletes shows so\nwithin `DURATION` (default "+shortDuration(regfsfs.DefaultAttrTTL)+")")
	fs.BoolVar(&cfg.Debug, "debug", false, "log every FUSE request and response")
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
	b.WriteString(`Usage: regfs mount [flags] MOUNTPOINT

Mount a container registry's storage at MOUNTPOINT and serve it in the
foreground; Ctrl-C or SIGTERM unmounts. MOUNTPOINT must be an empty directory
that is not already a mount point. The log goes to stderr; the line
"msg=mounted" says the mount is ready.

Flags:
`)
	writeFlags(&b, fs)
	b.WriteString(`
Examples:
  regfs mount ./mnt
  regfs mount --root /var/lib/docker-registry --read-only /mnt/registry
  regfs mount --driver inmemory --cache-size 1G /tmp/scratch
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... regfs mount --driver s3 \
      --s3-bucket registry --s3-endpoint http://127.0.0.1:7070 --s3-region us-east-1 ./mnt
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
	if cfg.NoDefaultPermissions && !cfg.AllowOther {
		return cfg, errors.New("--no-default-permissions applies with --allow-other only")
	}
	if cfg.DirCacheTime <= 0 || cfg.AttrTimeout <= 0 {
		return cfg, errors.New("--dir-cache-time and --attr-timeout must be positive")
	}
	return cfg, checkStorage(&cfg.Storage, true)
}
