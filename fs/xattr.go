package fs

import (
	"context"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

var (
	_ fs.NodeGetxattrer    = noXattr{}
	_ fs.NodeListxattrer   = noXattr{}
	_ fs.NodeSetxattrer    = noXattr{}
	_ fs.NodeRemovexattrer = noXattr{}
)

// noXattr is embedded in every node to answer the extended attribute
// requests with ENOSYS, which makes the kernel stop sending them for the
// whole mount (and answer EOPNOTSUPP itself): regfs has no extended
// attributes. Without it bazil answers ENOTSUP, which the kernel does not
// remember, so every write(2) cost a second round trip (the kernel asks
// for security.capability before each write, to drop privileges) and
// every entry of ls -l another one (its ACL check). Measured with
// regfs-bench; see docs/benchmarks.md.
type noXattr struct{}

// Getxattr implements fs.NodeGetxattrer.
func (noXattr) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) error {
	return fuse.Errno(syscall.ENOSYS)
}

// Listxattr implements fs.NodeListxattrer.
func (noXattr) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) error {
	return fuse.Errno(syscall.ENOSYS)
}

// Setxattr implements fs.NodeSetxattrer.
func (noXattr) Setxattr(ctx context.Context, req *fuse.SetxattrRequest) error {
	return fuse.Errno(syscall.ENOSYS)
}

// Removexattr implements fs.NodeRemovexattrer.
func (noXattr) Removexattr(ctx context.Context, req *fuse.RemovexattrRequest) error {
	return fuse.Errno(syscall.ENOSYS)
}
