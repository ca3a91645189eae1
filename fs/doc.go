// Package fs maps a registry's storage (a store.Store) onto a FUSE file
// system with bazil.org/fuse. It builds no storage path and knows no on-disk
// format: every fact comes from the store, and every change goes through it.
//
// # Layout
//
//	MNT/
//	  .regfs/errors, .regfs/stats   control files (controlDir, controlFile)
//	  a/b/                           namespace directories (nsDir); any of them
//	                                 can be a repository, so each offers:
//	    _layers/sha256:<hex>         linked blobs (layersDir, layerFile)
//	    _manifests/<tag>             tags (manifestsDir, tagFile)
//	    _manifests/sha256:<hex>      revisions (revisionFile)
//	    _uploads/sha256:<hex>        uploads named by expected digest (uploadsDir, uploadFile)
//	    _uploads/<uuid>              uploads another writer left
//	    _files/<tag or digest>/      an image's files, read-only, found by
//	                                 name only (filesDir, imageDir, treeDir,
//	                                 treeFile; package image merges the layers)
//
// Nodes are small comparable values ({*FS, repository, name}), never
// pointers to per-node state: bazil keys its node table by the Node value,
// so the same logical file is always the same bazil node without a node
// cache, and the kernel cache of any node can be invalidated by building its
// value again. State that outlives a request (directories made by mkdir,
// manifests being written, open uploads, the shared bytes of open
// manifests) lives in maps on the FS. Directories embed refusals, which
// refuses once for all of them the changes a directory does not support;
// each overrides only what it supports (node.go).
//
// Inode numbers are derived, never counted, so they are stable across
// mounts: blobs and revisions take the first 8 bytes of their digest (a tag
// shares its revision's inode), everything else hashes the parent's inode
// with its own name.
//
// # Permissions
//
// Every node belongs to the daemon's user, and its mode says what a write
// can do: directories that accept changes are rwxr-xr-x, tags and uploads
// rw-r--r--, blobs, revisions and .regfs read-only, and a read-only mount
// shows no write bit at all. regfs checks no permissions itself; with
// --allow-other the kernel checks these modes (default_permissions, see
// MountOptions), so other users may read but not change anything.
//
// # Errors
//
// The store returns typed errors; errno in errors.go is the one place that
// turns them, and the few errors this package makes itself, into errnos.
// Anything it does not recognise becomes EIO and is logged once with the
// operation, the path and the cause. Rejected writes (a digest mismatch on
// an upload, a manifest that fails verification) make close(2) fail with
// EBADMSG and are listed with every reason in .regfs/errors.
//
// # Caching
//
// Blobs and revisions are immutable: they are opened with OpenKeepCache and
// their attributes are valid for an hour. Their names are not: another
// writer (the registry) may delete a blob's link or a revision, so their
// entries, like the names of tags, are valid for Options.EntryTTL only; a
// deleted name then fails the kernel's next lookup, and the long attribute
// validity cannot bring it back (attributes belong to the inode, which a
// lookup reaches only through its name). A tag's attributes (its revision,
// size and inode) are valid for Options.AttrTTL. Uploads have zero
// validity, so the kernel's idea of their size (which O_APPEND writes start
// from) is always fresh.
//
// Directories are opened with OpenCacheDir and OpenKeepCache: the kernel
// keeps each listing across opens, and a second find or ls -R asks regfs
// for none (dircache.go). A listing is dropped Options.DirCacheTTL after
// regfs served it (dirExpiry), so what other writers add or remove shows in
// listings within that time; the names and attributes of namespace
// directories (repositories among them) are valid as long, and the
// reserved _layers, _manifests and _uploads, which every namespace
// directory has, for an hour. A name looked up directly is always asked
// for: the kernel caches no "not found", so a tag or repository another
// writer just pushed opens at once, whatever the cached listing says. What
// regfs changes itself shows at once: the kernel drops the listing of a
// directory it changed through the mount (create, unlink, mkdir, rmdir,
// link), and regfs drops the others before the call returns (a commit adds
// to _layers/ and removes from _uploads/, a stored manifest adds its
// revision, rmdir forgets the removed directory's listings). Every listing
// starts with "." and "..", because an empty one has no page for the
// kernel to drop. Tags, uploads and namespaces that regfs moves, commits or
// stores also have their entries and data invalidated. A collection run by
// the mount itself (--gc-interval) hands its report to Collected, which
// drops the names and listings of what it removed.
//
// Below _files/, a tag is resolved when its name is looked up and its
// entry is valid for Options.EntryTTL; everything below it is named by the
// manifest's digest and never changes, so its entries, attributes, file
// pages and listings are kept for an hour or never dropped (files.go).
//
// A blob deleted from storage leaves the block cache (store.BlobDeleted,
// or when the store finds its data gone), and the kernel's pages of the
// layers open on it are dropped once regfs learns it is gone (an open or
// lookup fails, or Collected): a descriptor opened before then gets an
// error, not the deleted bytes (openlayers.go). A layer's open right after
// its own thread's lookup of it uses what that lookup stated; any other
// open states the layer again (layers.go).
//
// File data is read through the store's global block cache (package
// cache); the read handler is a ReadAt into the kernel's buffer. Every
// descriptor of one revision reads one shared buffer, charged to the same
// budget as the blocks (see manifestBuffers): an open the budget has no
// room for is ENOMEM.
//
// # Concurrency
//
// The kernel sends requests concurrently, reads of one file included
// (AsyncRead); bazil serves each in its own goroutine. Reads use ReadAt and
// share no cursor. Writes to one upload are serialised by the upload's
// mutex, which every handle on that upload shares; a commit holds it too.
// Resolving an upload's name to a store upload (a listing, and a resume that
// may re-hash the upload), restarting and cancelling it hold a lock of that
// name only (keyLocks), never one for every upload: a slow backend delays
// the one upload it is slow for. The FS maps are guarded by FS.mu, which is
// never held across storage I/O. Kernel invalidations are sent from their
// own goroutines: the kernel may hold the very directory lock a notification
// needs while it waits for the reply to the request that caused it.
package fs
