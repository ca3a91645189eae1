package main

import (
	"os"
	"runtime/debug"
)

// memoryHeadroom is what regfs's Go memory limit allows beyond the block
// cache's budget: FUSE request and response buffers (bazil allocates two of
// up to 128 KiB per read, at most 64 reads in flight), upload hash backlogs
// (8 MiB each, store's maxUploadBacklog), the store's manifest cache (8 MiB,
// store's manifestCacheBudget) and
// the runtime itself. Manifests open for reading are not in it: they are
// charged to the cache budget (see fs's manifestBuffers). 48 MiB let S6
// (regfs-bench: two readers of a 4 GiB layer on S3, 256 MiB budget) peak
// at 323 MiB, over its target of budget + 64 MiB, as the binary's own
// pages come on top; 40 MiB gave 314 MiB (docs/benchmarks.md, "S3 reads").
const memoryHeadroom = 40 << 20

// setMemoryLimit caps the Go runtime's memory at the cache budget plus
// memoryHeadroom, unless GOMEMLIMIT sets a limit of its own.
//
// The cache's blocks are on the Go heap and are most of it, and with
// GOGC=100 the collector lets garbage (the FUSE library's per-request
// buffers, a few hundred MiB per GiB read) grow as large as the live heap
// before collecting: a 256 MiB cache made a 541 MiB process (regfs-bench P5,
// two readers of a 4 GiB layer). Under the limit the collector runs as the
// process nears it instead: 306 MiB, at the same CPU time per GiB read
// (0.8 s). Keeping the blocks off the heap (mmap) was tried as well: 276
// MiB, but the then small heap made the collector run three times as often
// (1.4 s of CPU per GiB, cold reads 30% slower); see docs/benchmarks.md.
func setMemoryLimit(cacheSize int64) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	debug.SetMemoryLimit(cacheSize + memoryHeadroom)
}
