package fs

import (
	"strconv"

	"github.com/moby/sys/mountinfo"
)

// Mount is one mount of the calling process's mount namespace: the mount
// point and its device (major:minor, which names its bdi in /sys/class/bdi
// and, for FUSE, its connection in /sys/fs/fuse/connections). The table is
// read by moby/sys/mountinfo, which the container tools use.
type Mount struct {
	Point, Dev string
}

func mountOf(i *mountinfo.Info) Mount {
	return Mount{Point: i.Mountpoint, Dev: strconv.Itoa(i.Major) + ":" + strconv.Itoa(i.Minor)}
}

// Mounts lists the mounts of the calling process's mount namespace.
func Mounts() ([]Mount, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, err
	}
	out := make([]Mount, len(infos))
	for i, info := range infos {
		out[i] = mountOf(info)
	}
	return out, nil
}

// MountAt returns the mount whose mount point is dir (absolute, clean), if
// there is one.
func MountAt(dir string) (Mount, bool, error) {
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil || len(infos) == 0 {
		return Mount{}, false, err
	}
	return mountOf(infos[0]), true, nil
}
