package main

import (
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/remote"
)

// driverRegistry is what .regfs/stats and the log call a mount of a
// registry's API (--registry).
const driverRegistry = "registry"

// Registry says which registry API regfs mount --registry serves.
type Registry struct {
	// URL is the registry's base URL; "" mounts storage instead.
	URL string
	// CAFile and Insecure: see remote.Options.
	CAFile   string
	Insecure bool
	// StateDir keeps the uploads in progress.
	StateDir string
	// Timeout bounds a call that makes no progress.
	Timeout time.Duration
}

// addRegistryFlags defines the --registry flags on fs.
func addRegistryFlags(fs *flag.FlagSet, r *Registry) {
	fs.StringVar(&r.URL, "registry", "", "mount the registry serving the distribution API at `URL`\n(http:// or https://HOST[:PORT]) instead of storage; credentials\ncome from ~/.docker/config.json, its credential helpers, or\n$REGISTRY_AUTH_FILE")
	fs.StringVar(&r.CAFile, "registry-ca", "", "with --registry, also trust the CA certificates in PEM `FILE`")
	fs.BoolVar(&r.Insecure, "registry-insecure", false, "with --registry, do not verify the registry's TLS certificate")
	fs.StringVar(&r.StateDir, "state-dir", "", "with --registry, keep the state of uploads in progress in `DIR`\n(default $XDG_STATE_HOME/regfs or ~/.local/state/regfs)")
	fs.DurationVar(&r.Timeout, "registry-timeout", 0, "with --registry, fail a request the registry makes no progress on\nfor `DURATION` (ETIMEDOUT; default "+shortDuration(remote.DefaultTimeout)+")")
}

// checkRegistry validates the registry flags against the others.
func checkRegistry(fs *flag.FlagSet, cfg *Config) error {
	r := &cfg.Registry
	if r.URL == "" {
		var err error
		fs.Visit(func(f *flag.Flag) {
			if strings.HasPrefix(f.Name, "registry-") || f.Name == "state-dir" {
				err = errors.New("--" + f.Name + " applies with --registry only")
			}
		})
		return err
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "driver", "root", "s3-bucket", "s3-endpoint", "s3-region", "s3-prefix", "gc-interval":
			err = errors.New("--" + f.Name + " does not apply with --registry (the registry keeps its own storage)")
		}
	})
	if err != nil {
		return err
	}
	if cfg.Source != "" && cfg.Source != r.URL {
		return errors.New("--registry and a SOURCE both name the storage: use one")
	}
	if r.Timeout < 0 {
		return errors.New("--registry-timeout must not be negative")
	}
	if r.StateDir == "" {
		if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
			r.StateDir = filepath.Join(d, "regfs")
		} else if home, herr := os.UserHomeDir(); herr == nil {
			r.StateDir = filepath.Join(home, ".local", "state", "regfs")
		} else {
			return errors.New("cannot find a default state directory ($HOME is not set): use --state-dir DIR")
		}
	}
	cfg.Driver = driverRegistry
	return nil
}

// openRegistry makes the store over the registry cfg names.
func openRegistry(cfg Config, c *cache.Cache, log *slog.Logger) (store.Store, error) {
	return remote.New(remote.Options{URL: cfg.Registry.URL, CAFile: cfg.Registry.CAFile, Insecure: cfg.Registry.Insecure,
		StateDir: cfg.Registry.StateDir, Cache: c, Logger: log, Timeout: cfg.Registry.Timeout,
		// The catalog and the tags, digests and revisions read are reused
		// as long as the kernel may keep the listings and attributes
		// they make.
		CatalogTTL: cfg.DirCacheTime, AttrTTL: cfg.AttrTimeout})
}

// mountAttrs are the log attributes that say what is mounted.
func mountAttrs(cfg Config) []any {
	if cfg.Registry.URL != "" {
		return []any{"registry", cfg.Registry.URL, "state_dir", cfg.Registry.StateDir}
	}
	return storageAttrs(cfg.Storage)
}
