// Package image shows the files inside container images without unpacking
// them: it indexes each layer once and merges the layers into one read-only
// tree.
//
// # Layers and their index
//
// An [Indexer] reads a layer blob once, sequentially, and builds its index: every
// tar entry with the offset of its content in the uncompressed stream and, for
// gzip layers, decompressor checkpoints about every [CheckpointSpacing] bytes of
// output (the zran technique: the compressed bit position where a deflate block
// starts and the 32 KiB of output before it). A later read of a file anywhere in
// the layer decompresses from the nearest checkpoint before it only. The
// inflater is this package's own (RFC 1951, pure Go): Go's compress/flate cannot
// start in the middle of a stream.
//
// Plain tar layers need no checkpoints: content offsets are blob offsets. zstd
// layers are read frame by frame: where a layer has several frames, a read
// starts at the frame that holds its first byte; a layer of one frame (what
// most encoders write) is decompressed from its start for a read that cannot
// continue an earlier one.
//
// # Persistence
//
// Indexes are kept in [Options.Dir], one file per layer named by the layer
// digest. A layer digest names immutable bytes, so an index is never
// invalidated; it is written to a temporary file and renamed into place, and
// carries its own checksum, so an interrupted build leaves nothing that is
// trusted later and a damaged file is rebuilt. The directory is bounded by
// [Options.MaxBytes], least recently used first.
//
// # Merging
//
// [Merge] applies layers in order the way the OCI image specification says:
// `.wh.<name>` deletes name from the layers below, `.wh..wh..opq` empties a
// directory of what the layers below put there, and whiteout files never
// show. Hard links share one [Node] (with its link count), symlinks keep the
// target as stored and are never followed.
//
// # Concurrency
//
// An Indexer, a Layer and a Tree are safe for concurrent use. Building one
// layer's index happens once however many callers ask for it at the same time.
//
// Nothing here writes to registry storage: blobs are only read through [Blobs].
package image
