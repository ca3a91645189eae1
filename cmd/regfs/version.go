package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
)

// versionMain prints the version, the Go version and the FUSE library, and
// with a MOUNTPOINT what the daemon serving it says of itself: its version
// and the FUSE protocol the kernel negotiated (from .regfs/stats).
func versionMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 || (len(args) == 1 && len(args[0]) > 0 && args[0][0] == '-') {
		fmt.Fprintf(stderr, "regfs version: want at most a MOUNTPOINT, got %q\nUsage: regfs version [MOUNTPOINT]\n", args)
		return 2
	}
	fmt.Fprintf(stdout, "regfs %s\n", version)
	fmt.Fprintf(stdout, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "bazil.org/fuse" {
				fmt.Fprintf(stdout, "fuse library %s %s\n", m.Path, m.Version)
			}
		}
	}
	if len(args) == 0 {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(args[0], ".regfs", "stats"))
	if err != nil {
		fmt.Fprintf(stderr, "regfs version: %s is not a regfs mount: %v\n", args[0], err)
		return 1
	}
	var s struct {
		Version      string `json:"version"`
		GoVersion    string `json:"go_version"`
		FuseProtocol string `json:"fuse_protocol"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		fmt.Fprintf(stderr, "regfs version: %s/.regfs/stats: %v\n", args[0], err)
		return 1
	}
	fmt.Fprintf(stdout, "mount %s: regfs %s, go %s, FUSE protocol %s\n", args[0], s.Version, s.GoVersion, s.FuseProtocol)
	return 0
}
