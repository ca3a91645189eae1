package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node                = controlDir{}
	_ fs.NodeRequestLookuper = controlDir{}
	_ fs.HandleReadDirAller  = controlDir{}
	_ fs.NodeLinker          = controlDir{}
	_ fs.NodeSymlinker       = controlDir{}
	_ fs.NodeRenamer         = controlDir{}
	_ fs.NodeCreater         = controlDir{}
	_ fs.NodeRemover         = controlDir{}
	_ fs.NodeSetattrer       = controlDir{}

	_ fs.Node          = controlFile{}
	_ fs.NodeOpener    = controlFile{}
	_ fs.NodeSetattrer = controlFile{}
)

// Control file names in .regfs/.
const (
	controlErrors = "errors"
	controlStats  = "stats"
)

// errorLogSize is how many rejected writes .regfs/errors keeps.
const errorLogSize = 100

// controlDir is .regfs/: files about the daemon itself.
type controlDir struct {
	noXattr
	f *FS
}

func (d controlDir) ino() uint64 { return childInode(rootInode, controlDirName) }

// Attr implements fs.Node.
func (d controlDir) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = d.ino()
	a.Mode = os.ModeDir | 0o555
	a.Valid = immutableTTL
	d.f.attrTimes(a)
	return nil
}

// Lookup implements fs.NodeRequestLookuper.
func (d controlDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	switch req.Name {
	case controlErrors, controlStats:
		resp.EntryValid = immutableTTL
		return controlFile{f: d.f, name: req.Name}, nil
	}
	return nil, d.f.errno("lookup", joinPath(controlDirName, req.Name), errNotFound)
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d controlDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return []fuse.Dirent{
		{Inode: childInode(d.ino(), controlErrors), Type: fuse.DT_File, Name: controlErrors},
		{Inode: childInode(d.ino(), controlStats), Type: fuse.DT_File, Name: controlStats},
	}, nil
}

// Link, Symlink, Rename, Create, Remove and Setattr implement the
// corresponding interfaces to refuse them clearly: .regfs is not writable.
func (d controlDir) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	return nil, d.f.refuse("link", joinPath(controlDirName, req.NewName))
}

func (d controlDir) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fs.Node, error) {
	return nil, d.f.refuse("symlink", joinPath(controlDirName, req.NewName))
}

func (d controlDir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	return d.f.refuse("rename", joinPath(controlDirName, req.OldName))
}

func (d controlDir) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	return nil, nil, d.f.refuse("create", joinPath(controlDirName, req.Name))
}

func (d controlDir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	return d.f.refuse("remove", joinPath(controlDirName, req.Name))
}

func (d controlDir) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return d.f.setattrFixed("setattr", controlDirName, req)
}

// refuse is the error for a change the tree does not support: EROFS on a
// read-only mount (every write is), EPERM otherwise.
func (f *FS) refuse(op, name string) error {
	if err := f.readOnly(); err != nil {
		return f.errno(op, name, err)
	}
	return f.errno(op, name, errNotSupported)
}

// setattrFixed handles Setattr on a node whose attributes cannot change:
// times are accepted and ignored (cp -p, tar and touch set them, and
// storage keeps none); mode, owner and size changes are refused.
func (f *FS) setattrFixed(op, name string, req *fuse.SetattrRequest) error {
	if err := f.readOnly(); err != nil {
		return f.errno(op, name, err)
	}
	if req.Valid.Mode() || req.Valid.Uid() || req.Valid.Gid() {
		return f.errno(op, name, errNotSupported)
	}
	if req.Valid.Size() {
		return f.errno(op, name, errImmutable)
	}
	return nil
}

// controlFile is .regfs/errors or .regfs/stats. Its content is made at open
// and served with direct I/O, so a reader sees one consistent snapshot
// whatever size the kernel last saw.
type controlFile struct {
	noXattr
	f    *FS
	name string
}

// Attr implements fs.Node. The size is the current content's; it changes
// at any time, so it is never cached.
func (c controlFile) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = childInode(childInode(rootInode, controlDirName), c.name)
	a.Mode = 0o444
	a.Size = uint64(len(c.content()))
	a.Valid = 0
	c.f.attrTimes(a)
	return nil
}

// Open implements fs.NodeOpener.
func (c controlFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	p := joinPath(controlDirName, c.name)
	if !req.Flags.IsReadOnly() {
		if err := c.f.readOnly(); err != nil {
			return nil, c.f.errno("open", p, err)
		}
		return nil, c.f.errno("open", p, errImmutable)
	}
	resp.Flags |= fuse.OpenDirectIO
	return &bytesHandle{f: c.f, path: p, data: c.content()}, nil
}

// Setattr implements fs.NodeSetattrer.
func (c controlFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return c.f.setattrFixed("setattr", joinPath(controlDirName, c.name), req)
}

func (c controlFile) content() []byte {
	switch c.name {
	case controlErrors:
		return c.f.errLog.render()
	case controlStats:
		return c.f.statsJSON()
	}
	return nil
}

// counters are the FS's own statistics.
type counters struct {
	bytesRead         atomic.Int64
	bytesWritten      atomic.Int64
	reads             atomic.Int64
	writes            atomic.Int64
	uploadsCommitted  atomic.Int64
	uploadsRejected   atomic.Int64
	manifestsStored   atomic.Int64
	manifestsRejected atomic.Int64

	mu sync.Mutex
	// errnos counts errors returned to the kernel by errno name. Guarded
	// by mu.
	errnos map[string]int64
}

func (c *counters) countErrno(e syscall.Errno) {
	c.mu.Lock()
	c.errnos[errnoName(e)]++
	c.mu.Unlock()
}

// Stats is the content of .regfs/stats.
type Stats struct {
	UptimeSeconds     int64            `json:"uptime_seconds"`
	ReadOnly          bool             `json:"read_only"`
	BytesRead         int64            `json:"bytes_read"`
	BytesWritten      int64            `json:"bytes_written"`
	Reads             int64            `json:"reads"`
	Writes            int64            `json:"writes"`
	UploadsInFlight   int              `json:"uploads_in_flight"`
	UploadsCommitted  int64            `json:"uploads_committed"`
	UploadsRejected   int64            `json:"uploads_rejected"`
	ManifestsStored   int64            `json:"manifests_stored"`
	ManifestsRejected int64            `json:"manifests_rejected"`
	ErrorsByErrno     map[string]int64 `json:"errors_by_errno"`
	Cache             *CacheStats      `json:"cache,omitempty"`
	// DriverCalls counts the storage driver calls by method: what the
	// operations so far cost the backend.
	DriverCalls map[string]int64 `json:"driver_calls"`
}

// CacheStats is the block cache part of Stats.
type CacheStats struct {
	Hits       int64 `json:"hits"`
	Misses     int64 `json:"misses"`
	Loads      int64 `json:"loads"`
	ReadAheads int64 `json:"read_aheads"`
	Evictions  int64 `json:"evictions"`
	Bytes      int64 `json:"bytes"`
	MaxBytes   int64 `json:"max_bytes"`
	Budget     int64 `json:"budget"`
}

// Stats returns the FS's counters now.
func (f *FS) Stats() Stats {
	s := Stats{
		UptimeSeconds:     int64(time.Since(f.started).Seconds()),
		ReadOnly:          f.opts.ReadOnly,
		BytesRead:         f.stats.bytesRead.Load(),
		BytesWritten:      f.stats.bytesWritten.Load(),
		Reads:             f.stats.reads.Load(),
		Writes:            f.stats.writes.Load(),
		UploadsCommitted:  f.stats.uploadsCommitted.Load(),
		UploadsRejected:   f.stats.uploadsRejected.Load(),
		ManifestsStored:   f.stats.manifestsStored.Load(),
		ManifestsRejected: f.stats.manifestsRejected.Load(),
		ErrorsByErrno:     map[string]int64{},
	}
	f.stats.mu.Lock()
	for k, v := range f.stats.errnos {
		s.ErrorsByErrno[k] = v
	}
	f.stats.mu.Unlock()
	f.mu.Lock()
	s.UploadsInFlight = len(f.uploads)
	f.mu.Unlock()
	if sr, ok := f.st.(store.StatsReporter); ok {
		s.DriverCalls = sr.Stats().DriverCalls
	}
	if c := f.opts.Cache; c != nil {
		cs := c.Stats()
		s.Cache = &CacheStats{
			Hits: cs.Hits, Misses: cs.Misses, Loads: cs.Loads, ReadAheads: cs.ReadAheads,
			Evictions: cs.Evictions, Bytes: cs.Bytes, MaxBytes: cs.MaxBytes, Budget: cs.Budget,
		}
	}
	return s
}

func (f *FS) statsJSON() []byte {
	b, err := json.MarshalIndent(f.Stats(), "", "  ")
	if err != nil {
		// Stats holds only numbers and strings; this cannot happen.
		return []byte("{}\n")
	}
	return append(b, '\n')
}

// rejection is one entry of .regfs/errors.
type rejection struct {
	time    time.Time
	path    string
	reasons []string
}

// errorLog keeps the last errorLogSize rejected writes.
type errorLog struct {
	mu sync.Mutex
	// entries is a ring, oldest first once full. Guarded by mu.
	entries []rejection
	next    int
}

func (l *errorLog) add(r rejection) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) < errorLogSize {
		l.entries = append(l.entries, r)
		return
	}
	l.entries[l.next] = r
	l.next = (l.next + 1) % errorLogSize
}

// render formats the log: per entry, a line with the RFC 3339 time and the
// path, then each reason on its own indented line.
func (l *errorLog) render() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	n := len(l.entries)
	for i := 0; i < n; i++ {
		r := l.entries[(l.next+i)%n]
		b.WriteString(r.time.UTC().Format(time.RFC3339))
		b.WriteString(" ")
		b.WriteString(r.path)
		b.WriteString("\n")
		for _, reason := range r.reasons {
			b.WriteString("  ")
			b.WriteString(strings.ReplaceAll(reason, "\n", " "))
			b.WriteString("\n")
		}
	}
	return []byte(b.String())
}

// reject records a rejected write in .regfs/errors and the log, listing
// every reason err carries.
func (f *FS) reject(p string, err error) {
	reasons := reasonsOf(err)
	f.errLog.add(rejection{time: time.Now(), path: p, reasons: reasons})
	f.log.Warn("write rejected", "path", p, "reasons", reasons)
}

// Bounds of one rejection's reasons. A manifest can carry tens of
// thousands of problems (every layer missing) or a reason can quote
// megabytes of input (a schema1 name); .regfs/errors keeps errorLogSize
// entries and the log writes each on one line, so both must stay small.
const (
	maxReasons     = 50
	maxReasonBytes = 1024
)

// reasonsOf lists the problems in err: each of a manifest verification's,
// or err itself; at most maxReasons of them, each cut at maxReasonBytes,
// and a last line saying how many more there were.
func reasonsOf(err error) []string {
	errs := []error{err}
	var v *store.ManifestVerificationError
	if errors.As(err, &v) && len(v.Errs) > 0 {
		errs = v.Errs
	}
	out := make([]string, 0, min(len(errs), maxReasons+1))
	for _, e := range errs[:min(len(errs), maxReasons)] {
		r := e.Error()
		if len(r) > maxReasonBytes {
			r = strings.ToValidUTF8(r[:maxReasonBytes], "") + fmt.Sprintf("... (%d bytes)", len(r))
		}
		out = append(out, r)
	}
	if n := len(errs) - maxReasons; n > 0 {
		out = append(out, fmt.Sprintf("... and %d more problems", n))
	}
	return out
}
