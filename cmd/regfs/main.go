// Command regfs mounts a container registry's storage as a directory tree.
//
//	regfs mount [flags] [SOURCE] MOUNTPOINT
//	regfs SOURCE MOUNTPOINT -o OPTIONS   (mount.fuse3's form)
//	regfs fsck [flags]
//	regfs gc [flags]
//	regfs version [MOUNTPOINT]
//
// main only parses the command line into a Config and hands it to run; see
// mount.go for what mounting does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// version is stamped at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(regfs(os.Args[1:], os.Stdout, os.Stderr))
}

// regfs runs the command line args and returns the exit status: 0 on
// success, 1 when the command failed, 2 for a usage error.
func regfs(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "mount":
		return mountMain(rest, stdout, stderr)
	case "fsck":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return fsckMain(ctx, rest, stdout, stderr)
	case "gc":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return gcMain(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		return versionMain(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] == "mount" {
			fmt.Fprint(stdout, mountUsage(newMountFlags(&Config{})))
			return 0
		}
		if len(rest) > 0 && rest[0] == "fsck" {
			fmt.Fprint(stdout, fsckUsage(newFsckFlags(&FsckConfig{})))
			return 0
		}
		if len(rest) > 0 && rest[0] == "gc" {
			fmt.Fprint(stdout, gcUsage(newGCFlags(&GCConfig{})))
			return 0
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		if isHelperForm(args) {
			// mount.fuse3 runs regfs SOURCE MOUNTPOINT -o OPTIONS and waits:
			// a daemon by default, which -o daemon=false turns off.
			return mountMain(append([]string{"--daemon"}, args...), stdout, stderr)
		}
		fmt.Fprintf(stderr, "regfs: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

// leaveWorkingDir makes cfg's paths absolute and moves a daemon to /, so
// that it does not keep the directory it was started in busy.
func leaveWorkingDir(cfg *Config) error {
	for _, p := range []*string{&cfg.Mountpoint, &cfg.Root, &cfg.LogFile} {
		if *p == "" || (p == &cfg.LogFile && *p == "syslog") {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return os.Chdir("/")
}

// defaultPath is PATH when mount(8) gives none: /bin/sh's default.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// isHelperForm tells whether args are the mount helper form, SOURCE
// MOUNTPOINT [-o OPTIONS]: two arguments before any flag.
func isHelperForm(args []string) bool {
	return len(args) >= 2 && !strings.HasPrefix(args[0], "-") && !strings.HasPrefix(args[1], "-")
}

// mountMain runs regfs mount's arguments and returns the exit status.
func mountMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseMount(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "regfs mount: %v\nRun 'regfs mount --help' for usage.\n", err)
		return 2
	}
	if os.Getenv("PATH") == "" {
		// mount(8) runs its helpers without PATH; bazil runs fusermount3
		// (for the unmount too) by name.
		os.Setenv("PATH", defaultPath)
	}
	report := daemonChild()
	if err := checkSource(cfg); err != nil {
		report.failed(err)
		fmt.Fprintf(stderr, "regfs: %v\n", err)
		return 1
	}
	if cfg.Daemon && report.f == nil {
		if err := startDaemon(append([]string{"mount"}, args...)); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 1
		}
		return 0
	}
	fail := func(err error) int {
		report.failed(err)
		fmt.Fprintf(stderr, "regfs: %v\n", err)
		return 1
	}
	if report.f != nil {
		if err := leaveWorkingDir(&cfg); err != nil {
			return fail(err)
		}
	}
	logw, closeLog, err := openLog(cfg.Service, stderr)
	if err != nil {
		return fail(err)
	}
	defer closeLog()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, newLogger(logw, cfg.Debug), report.ready); err != nil {
		if logw != stderr {
			newLogger(logw, false).Error("regfs mount failed", "error", err)
		}
		return fail(err)
	}
	return 0
}

const usage = `regfs mounts a container registry's storage as a directory tree.

Usage:
  regfs mount [flags] MOUNTPOINT   mount the storage at MOUNTPOINT, in the foreground
  regfs SOURCE MOUNTPOINT -o OPTS  the same for mount -t fuse.regfs and fstab (a daemon)
  regfs fsck [flags]               check the storage: re-hash blobs, check links and tags
  regfs gc [flags]                 delete what nothing needs: unlinked blobs, old uploads
  regfs version [MOUNTPOINT]       print the version (and a mount's FUSE protocol)
  regfs help [mount|fsck|gc]       show this help, or a command's

The storage is docker/distribution's own layout (a registry's rootdirectory), so
a registry and regfs can share it. Browse with ls, read with cat and cp, push
layers by copying them into _uploads/, manifests by copying them into
_manifests/<tag>.

Example:
  regfs mount ./mnt                                   (storage in ~/.local/share/regfs)
  regfs mount --root /var/lib/docker-registry /mnt/registry

Run 'regfs mount --help', 'regfs fsck --help' or 'regfs gc --help' for their flags.
`
