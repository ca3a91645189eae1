package s3

// The block cache settings regfs mounts this driver with (cmd/regfs), here
// so that the benchmark compares regfs with a plain client making requests
// of the same size, as many at a time (cmd/regfs-bench, rows S1 and S5).
// docs/benchmarks.md, "S3 reads (issue 15)", has the measurements behind
// them.
const (
	// CacheBlockSize is the cache's block size: each block is one ranged
	// GET. Larger requests cost the server and the client less per byte
	// (versitygw's CPU per GiB read: 4 MiB ranges 0.91-1.01 s, 8 MiB
	// 0.76-0.82 s, 16 MiB 0.58-0.70 s). The first byte does not wait for
	// a whole block (see cache.Options.Ranged), but a random read still
	// has the server send its whole block.
	CacheBlockSize = 16 << 20
	// CacheReadAhead is the most blocks read ahead of a sequential reader
	// (the window grows to it; see cache.Options.Ranged).
	CacheReadAhead = 8
	// CacheAheadLoads is the most read-ahead GETs one open file keeps in
	// flight: the whole window (loads in flight are also capped at half
	// the cache budget, across files). Fewer than the window, so that the
	// loads that end go on past a slow one, measured no faster on
	// loopback.
	CacheAheadLoads = 8
)
