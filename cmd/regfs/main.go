// Command regfs mounts a container registry's storage as a directory tree.
//
//	regfs mount [flags] MOUNTPOINT
//	regfs fsck [flags]
//	regfs gc [flags]
//	regfs version
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
		cfg, err := parseMount(rest, stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "regfs mount: %v\nRun 'regfs mount --help' for usage.\n", err)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := run(ctx, cfg, stderr); err != nil {
			fmt.Fprintf(stderr, "regfs: %v\n", err)
			return 1
		}
		return 0
	case "fsck":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return fsckMain(ctx, rest, stdout, stderr)
	case "gc":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return gcMain(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "regfs %s\n", version)
		return 0
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
		fmt.Fprintf(stderr, "regfs: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

const usage = `regfs mounts a container registry's storage as a directory tree.

Usage:
  regfs mount [flags] MOUNTPOINT   mount the storage at MOUNTPOINT, in the foreground
  regfs fsck [flags]               check the storage: re-hash blobs, check links and tags
  regfs gc [flags]                 delete what nothing needs: unlinked blobs, old uploads
  regfs version                    print the version
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
