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
	// CacheSize is the block cache budget in bytes.
	CacheSize int64
	Debug     bool
	// GCInterval runs a collection that often inside the mount (0: never),
	// with GCGrace as its grace window.
	GCInterval, GCGrace time.Duration
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
	addStorageFlags(fs, &cfg.Storage, true)
	fs.BoolVar(&cfg.ReadOnly, "read-only", false, "refuse every write with EROFS")
	fs.BoolVar(&cfg.AllowOther, "allow-other", false, "let other users use the mount (needs user_allow_other in /etc/fuse.conf\nwhen not root)")
	fs.Var(size.Flag{N: &cfg.CacheSize}, "cache-size", "block cache budget `SIZE` in bytes, with K, M, G or T (default 256M)")
	fs.BoolVar(&cfg.Debug, "debug", false, "log every FUSE request and response")
	fs.DurationVar(&cfg.GCInterval, "gc-interval", 0, "run regfs gc (default flags) every `DURATION` inside the mount (default off)")
	fs.DurationVar(&cfg.GCGrace, "gc-grace", gc.DefaultGrace, "grace window `AGE` of --gc-interval's runs (default 1h)")
	return fs
}

// writeFlags lists a command's flags, GNU style, for its --help.
func writeFlags(b *strings.Builder, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, text := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if arg != "" {
			name += " " + arg
		}
		text = strings.ReplaceAll(text, "\n", "\n"+strings.Repeat(" ", 24))
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
	if cfg.GCInterval < 0 || cfg.GCGrace < 0 {
		return cfg, errors.New("--gc-interval and --gc-grace must not be negative")
	}
	if cfg.GCInterval > 0 && cfg.ReadOnly {
		return cfg, errors.New("--gc-interval needs a writable mount")
	}
	return cfg, checkStorage(&cfg.Storage, true)
}
