package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"time"

	"bazil.org/fuse"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/cmd/internal/size"
	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/driver/inmemory"
	"github.com/regfs/regfs/driver/s3"
	regfsfs "github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/store"
)

// Timing of start and shutdown.
const (
	// readyTimeout bounds the wait for the kernel to answer the first
	// stat through the new mount.
	readyTimeout = 10 * time.Second
	// busyRetry is how long unmount is retried while the mount is busy,
	// before the lazy unmount.
	busyRetry      = 3 * time.Second
	busyRetryEvery = 200 * time.Millisecond
	// serveGrace is how long Serve may take to return after the unmount.
	serveGrace = time.Second
)

// run mounts the storage cfg describes and serves it until ctx is done (a
// signal) or the mount goes away (fusermount3 -u from outside). ready is
// called once the mount answers, after systemd has been told (READY=1).
func run(ctx context.Context, cfg Config, log *slog.Logger, ready func()) error {
	mnt, err := checkMountpoint(cfg.Mountpoint)
	if err != nil {
		return err
	}
	if err := checkSource(cfg); err != nil {
		return err
	}
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = listenMetrics(cfg.MetricsAddr); err != nil {
			return err
		}
		defer metricsLn.Close()
	}
	setMemoryLimit(cfg.CacheSize)
	c := cache.NewWithOptions(cacheOptions(cfg))
	var d driver.StorageDriver
	var st store.Store
	if cfg.Registry.URL != "" {
		st, err = openRegistry(cfg, c, log)
	} else {
		d, st, err = openStore(ctx, cfg, c, log)
	}
	if err != nil {
		return err
	}
	fsys := regfsfs.New(st, regfsfs.Options{ReadOnly: cfg.ReadOnly, Logger: log, Debug: cfg.Debug, Cache: c, Owner: owner(cfg.Service),
		Version: version, Driver: cfg.Driver, GC: mountGC.Get,
		DirCacheTTL: cfg.DirCacheTime, EntryTTL: cfg.AttrTimeout, AttrTTL: cfg.AttrTimeout,
		IndexDir: cfg.IndexDir, IndexMaxBytes: cfg.IndexMax})

	conn, err := fuse.Mount(mnt, regfsfs.MountOptions(regfsfs.MountConfig{
		ReadOnly:             cfg.ReadOnly,
		AllowOther:           cfg.AllowOther,
		NoDefaultPermissions: cfg.NoDefaultPermissions,
	})...)
	if err != nil {
		return fmt.Errorf("mounting %s: %v", mnt, err)
	}
	// conn is closed only once Serve has returned: bazil's Close waits for
	// the read Serve is blocked in, which never ends while a lazily
	// unmounted mount still has users. Exiting closes the descriptor, and
	// the kernel then ends the connection.
	served := make(chan error, 1)
	go func() { served <- fsys.Serve(conn) }()

	if err := waitReady(mnt, served); err != nil {
		if unmount(log, mnt, served) {
			conn.Close()
		}
		return err
	}
	if metricsLn != nil {
		defer serveMetrics(log, metricsLn, fsys).stop()
	}
	if err := regfsfs.SetReadAhead(mnt); err != nil {
		log.Debug("kernel read-ahead left at its default", "error", err)
	}
	log.Info("mounted", append([]any{"mountpoint", mnt, "pid", os.Getpid(), "driver", cfg.Driver}, append(mountAttrs(cfg),
		"read_only", cfg.ReadOnly, "cache_size", size.Format(cfg.CacheSize))...)...)
	defer startGCInMount(ctx, cfg, st, d, log, fsys.Collected)()
	notifySystemd(log, "READY=1\nSTATUS=mounted "+mnt)
	ready()
	if cfg.AllowOther && cfg.NoDefaultPermissions {
		log.Warn("--no-default-permissions: every local user may write, rm and rmdir through the mount", "mountpoint", mnt)
	}

	select {
	case <-ctx.Done():
		notifySystemd(log, "STOPPING=1")
		log.Info("unmounting", "mountpoint", mnt)
		if unmount(log, mnt, served) {
			conn.Close()
		} else {
			// Serve still runs for the files left open: save their
			// uploads before exiting, as Serve's end would.
			fsys.SaveUploads()
		}
		log.Info("unmounted", "mountpoint", mnt)
		return nil
	case err := <-served:
		conn.Close()
		if err != nil {
			return fmt.Errorf("serving %s: %v", mnt, err)
		}
		log.Info("unmounted from outside", "mountpoint", mnt)
		return nil
	}
}

// openStore opens the storage driver and the store over it.
func openStore(ctx context.Context, cfg Config, c *cache.Cache, log *slog.Logger) (driver.StorageDriver, store.Store, error) {
	d, err := openDriver(ctx, cfg.Storage)
	if err != nil {
		return nil, nil, err
	}
	if j, ok := d.(driver.Janitor); ok && !cfg.ReadOnly {
		go cleanLeftovers(ctx, log, j)
	}
	if spec := os.Getenv(testPauseEnv); spec != "" {
		if d, err = withTestPause(d, spec, log); err != nil {
			return nil, nil, err
		}
	}
	st, err := store.New(d, store.Options{Cache: c, Logger: log})
	return d, st, err
}

// cacheOptions sizes the block cache for the storage. On S3 every block
// load is an HTTP request, so blocks are larger and more are read ahead
// (s3.CacheBlockSize and the rest; docs/benchmarks.md, "S3 reads (issue
// 15)"). Local storage keeps 1 MiB blocks, which bound what a small random
// read pulls in.
//
// The buffers of the first read's block and its read-ahead are made and
// faulted in at start (Prefault), so a fresh mount's first read does not
// wait for a page fault per 4 KiB: head -c1 of a layer on a fresh mount
// went from 3.6-4.5 ms to 1.6-1.8 ms (medians of 5, alternating runs). On
// S3 none are: a read that loads its block returns once its own bytes are
// in (the rest of the 16 MiB block follows), so only their pages fault
// first, and two prefaulted blocks would add 32 MiB to the daemon's memory.
//
// On S3 each block load is one GET of just that block (Ranged), read to its
// end so that its connection serves the next GET; see docs/benchmarks.md,
// "S3 reads (issue 15)", for what it changed. A registry mounted with
// --registry serves blocks the same way (ranged GETs of the blob) and gets
// the same sizes ("Remote registry (issue 18)").
func cacheOptions(cfg Config) cache.Options {
	o := cache.Options{
		Budget:    cfg.CacheSize,
		BlockSize: store.DefaultCacheBlockSize,
		Retryable: retryable,
		Prefault:  1 + cache.DefaultReadAhead,
	}
	switch cfg.Driver {
	case driverS3:
		o.BlockSize = s3.CacheBlockSize
		o.ReadAhead = s3.CacheReadAhead
		o.AheadLoads = s3.CacheAheadLoads
		o.Prefault = 0
		o.Ranged = true
	case driverRegistry:
		// A block is a ranged GET as on S3: the same sizes.
		o.BlockSize = s3.CacheBlockSize
		o.ReadAhead = s3.CacheReadAhead
		o.AheadLoads = s3.CacheAheadLoads
		o.Prefault = 0
		o.Ranged = true
		// store/remote retries what is worth it (429, 5xx, a dropped
		// connection) itself; a stall already took its timeout.
		o.Attempts = 1
	}
	o.Prefault = int(min(int64(o.Prefault), cfg.CacheSize/int64(o.BlockSize)))
	return o
}

// retryable tells the cache which failed block loads are worth another try:
// a blob that is gone (deleted under the mount) or a request the caller
// abandoned fails at once; anything else may be a backend hiccup.
func retryable(err error) bool {
	return !driver.IsNotFound(err) && !errors.Is(err, context.Canceled)
}

// cleanLeftovers removes, in the background, what crashed writers left in
// the driver's trash and staging areas (see driver.Janitor).
func cleanLeftovers(ctx context.Context, log *slog.Logger, j driver.Janitor) {
	left, err := j.Leftovers(ctx)
	if err == nil && len(left) == 0 {
		return
	}
	if err == nil {
		err = j.Clean(ctx)
	}
	if err != nil {
		log.Warn("removing what a crash left in the storage's internal areas", "error", err)
		return
	}
	log.Info("removed what a crash left in the storage's internal areas", "entries", len(left))
}

// openDriver makes the storage driver st names.
func openDriver(ctx context.Context, st Storage) (driver.StorageDriver, error) {
	switch st.Driver {
	case driverInmemory:
		return inmemory.New(), nil
	case driverFilesystem:
		d, err := filesystem.New(st.Root)
		if err != nil {
			return nil, fmt.Errorf("storage root %s: %v", st.Root, errors.Unwrap(err))
		}
		return d, nil
	case driverS3:
		d, err := s3.New(ctx, s3.Params{Bucket: st.S3Bucket, Endpoint: st.S3Endpoint, Region: st.S3Region, RootDirectory: st.S3Prefix})
		if err != nil {
			return nil, fmt.Errorf("s3 bucket %s: %v", st.S3Bucket, err)
		}
		return d, nil
	}
	return nil, fmt.Errorf("unknown driver %q", st.Driver)
}

// owner is who owns the tree, from --uid, --gid and --umask.
func owner(s Service) *regfsfs.Owner {
	o := &regfsfs.Owner{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Umask: os.FileMode(s.Umask)}
	if s.UID >= 0 {
		o.UID = uint32(s.UID)
	}
	if s.GID >= 0 {
		o.GID = uint32(s.GID)
	}
	return o
}

// storageAttrs are the log attributes that say which storage is mounted.
func storageAttrs(st Storage) []any {
	switch st.Driver {
	case driverFilesystem:
		return []any{"root", st.Root}
	case driverS3:
		attrs := []any{"bucket", st.S3Bucket, "prefix", st.S3Prefix}
		if st.S3Endpoint != "" {
			attrs = append(attrs, "endpoint", st.S3Endpoint)
		}
		return attrs
	}
	return nil
}

// checkSource refuses a filesystem SOURCE that is not a directory: the
// driver would create it, and a mistyped fstab line should not make a new,
// empty registry.
func checkSource(cfg Config) error {
	if cfg.Source == "" || cfg.Driver != driverFilesystem {
		return nil
	}
	fi, err := os.Stat(cfg.Root)
	if err != nil {
		return fmt.Errorf("mount source %s: %v", cfg.Source, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return fmt.Errorf("mount source %s is not a directory", cfg.Source)
	}
	return nil
}

// waitReady returns once the kernel answers a stat through the mount, so
// that the "mounted" line means the mount is usable.
func waitReady(mnt string, served <-chan error) error {
	statted := make(chan error, 1)
	go func() {
		_, err := os.Stat(mnt)
		statted <- err
	}()
	select {
	case err := <-statted:
		if err != nil {
			return fmt.Errorf("mount %s does not answer: %v", mnt, err)
		}
		return nil
	case err := <-served:
		return fmt.Errorf("serving %s stopped before it was ready: %v", mnt, err)
	case <-time.After(readyTimeout):
		return fmt.Errorf("mount %s did not answer within %v", mnt, readyTimeout)
	}
}

// unmount unmounts mnt and waits for Serve to return. A busy mount (a
// process has a file open or its working directory inside) is retried for
// busyRetry, telling the operator what to do, then unmounted lazily: it
// disappears from the tree at once and goes away when the last user does.
// It reports whether Serve returned.
func unmount(log *slog.Logger, mnt string, served <-chan error) bool {
	deadline := time.Now().Add(busyRetry)
	warned := false
	for {
		err := fuse.Unmount(mnt)
		if err == nil || !isMountPoint(mnt) {
			break
		}
		if !warned {
			log.Warn("mount is busy: close files/leave the directory using it, or run `fusermount3 -u -z "+mnt+"`",
				"mountpoint", mnt, "error", err)
			warned = true
		}
		if time.Now().After(deadline) {
			log.Warn("mount still busy: unmounting lazily", "mountpoint", mnt)
			if out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); err != nil {
				log.Error("lazy unmount failed", "mountpoint", mnt, "error", err, "output", string(out))
			}
			break
		}
		time.Sleep(busyRetryEvery)
	}
	select {
	case err := <-served:
		if err != nil {
			log.Error("serving ended with an error", "error", err)
		}
		return true
	case <-time.After(serveGrace):
		// After a lazy unmount the kernel keeps the connection while files
		// are open; exiting closes it and their users get ENOTCONN.
		log.Warn("exiting with files still open on the lazily unmounted mount", "mountpoint", mnt)
		return false
	}
}
