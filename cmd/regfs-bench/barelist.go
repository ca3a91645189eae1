package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	regfsfs "github.com/regfs/regfs/fs"
)

// bareEnvList, set with bareEnvMount in the bare child's environment,
// makes it serve the bare listing instead of the passthrough: a root
// holding the comma-separated directory names it gives, from memory.
const bareEnvList = "REGFS_BENCH_BARE_LIST"

// bareListMain serves the bare listing at $REGFS_BENCH_BARE_MOUNT until
// SIGTERM or SIGINT, then unmounts.
func bareListMain() int {
	names := strings.Split(os.Getenv(bareEnvList), ",")
	slices.Sort(names)
	if err := serveBareFS(os.Getenv(bareEnvMount), bareList{names: names}); err != nil {
		fmt.Fprintf(os.Stderr, "bare: %v\n", err)
		return 1
	}
	return 0
}

// bareList is the least a FUSE file system can do to list directory names
// it holds in memory, sorted, and answer their lookups: what ls -l of the
// repositories of an S3 mount costs bazil.org/fuse and the kernel (S4),
// with no storage behind it. Its entries and attributes are valid for as
// long as regfs's namespace directories' (fs.DefaultDirCacheTTL), and the
// kernel keeps its listing (FOPEN_CACHE_DIR) as regfs's.
type bareList struct{ names []string }

var (
	_ fs.FS                  = bareList{}
	_ fs.Node                = bareListDir{}
	_ fs.NodeRequestLookuper = bareListDir{}
	_ fs.NodeOpener          = bareListDir{}
	_ fs.HandleReadDirAller  = bareListDir{}
)

func (b bareList) Root() (fs.Node, error) { return bareListDir{names: &b.names}, nil }

// bareListDir is the root (names not nil) or one of the directories it
// lists, empty. bazil keeps nodes as map keys: they must be comparable.
type bareListDir struct {
	bareNoXattr
	names *[]string
	ino   uint64
}

func (d bareListDir) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = max(d.ino, 1)
	a.Mode = os.ModeDir | 0o755
	a.Valid = regfsfs.DefaultDirCacheTTL
	return nil
}

func (d bareListDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	if d.names == nil {
		return nil, fuse.Errno(syscall.ENOENT)
	}
	if _, ok := slices.BinarySearch(*d.names, req.Name); !ok {
		return nil, fuse.Errno(syscall.ENOENT)
	}
	resp.EntryValid = regfsfs.DefaultDirCacheTTL
	return bareListDir{ino: nameInode(req.Name)}, nil
}

func (d bareListDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	resp.Flags |= fuse.OpenCacheDir | fuse.OpenKeepCache
	return d, nil
}

func (d bareListDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	if d.names == nil {
		return nil, nil
	}
	out := make([]fuse.Dirent, 0, len(*d.names))
	for _, n := range *d.names {
		out = append(out, fuse.Dirent{Inode: nameInode(n), Name: n, Type: fuse.DT_Dir})
	}
	return out, nil
}

// nameInode is a directory's inode number: a hash of its name, never 0 or
// the root's 1.
func nameInode(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64() | 2
}
