package fs

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

// TestEveryNodeHasNoXattrs checks that every node answers the extended
// attribute requests with ENOSYS, the answer the kernel remembers for the
// whole mount; one node answering bazil's default ENOTSUP would bring back
// a round trip per write.
func TestEveryNodeHasNoXattrs(t *testing.T) {
	f := New(nil, Options{})
	ctx := context.Background()
	for _, n := range []fs.Node{
		newRootDir(f), newNSDir(f, "a"), newControlDir(f), controlFile{f: f},
		newLayersDir(f, "a"), layerFile{f: f}, newManifestsDir(f, "a"), tagFile{f: f},
		revisionFile{f: f}, newUploadsDir(f, "a"), uploadFile{f: f},
	} {
		checks := map[string]error{}
		if g, ok := n.(fs.NodeGetxattrer); ok {
			checks["getxattr"] = g.Getxattr(ctx, &fuse.GetxattrRequest{Name: "security.capability"}, &fuse.GetxattrResponse{})
		}
		if l, ok := n.(fs.NodeListxattrer); ok {
			checks["listxattr"] = l.Listxattr(ctx, &fuse.ListxattrRequest{}, &fuse.ListxattrResponse{})
		}
		if s, ok := n.(fs.NodeSetxattrer); ok {
			checks["setxattr"] = s.Setxattr(ctx, &fuse.SetxattrRequest{Name: "user.x"})
		}
		if r, ok := n.(fs.NodeRemovexattrer); ok {
			checks["removexattr"] = r.Removexattr(ctx, &fuse.RemovexattrRequest{Name: "user.x"})
		}
		if len(checks) != 4 {
			t.Errorf("%T implements %d of the 4 xattr requests", n, len(checks))
		}
		for op, err := range checks {
			if !errors.Is(err, fuse.Errno(syscall.ENOSYS)) {
				t.Errorf("%T %s: %v, want ENOSYS", n, op, err)
			}
		}
	}
}

// TestXattrsNotSupported checks what a user sees: EOPNOTSUPP, from the
// kernel once regfs said ENOSYS.
func TestXattrsNotSupported(t *testing.T) {
	m := newMount(t, mountConfig{})
	for i := 0; i < 2; i++ {
		err := m.do(func() error {
			_, err := syscall.Getxattr(m.path(".regfs"), "user.x", make([]byte, 64))
			return err
		})
		wantErrno(t, "getxattr", err, syscall.EOPNOTSUPP)
		err = m.do(func() error { return syscall.Setxattr(m.path(".regfs"), "user.x", []byte("v"), 0) })
		wantErrno(t, "setxattr", err, syscall.EOPNOTSUPP)
	}
}
