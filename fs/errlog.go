package fs

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/regfs/regfs/store"
)

// errorLogSize is how many rejected writes .regfs/errors keeps.
const errorLogSize = 100

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

// refuseRename records a refused rename in .regfs/errors and the log,
// with why, and returns its errno: mv prints only the errno ("Operation
// not permitted", "Invalid cross-device link"), which does not say what
// regfs refused or what to do instead.
func (f *FS) refuseRename(from, to string, err error) error {
	f.reject(from, fmt.Errorf("rename to %s refused: %w", to, err))
	return f.errno("rename", from, err)
}

// renameTarget is the path of name in the directory node dir, for the
// reason of a refused rename; just name when dir is not regfs's.
func renameTarget(dir any, name string) string {
	if d, ok := dir.(interface{ path(string) string }); ok {
		return d.path(name)
	}
	return name
}

// because is an error saying why, that errno maps as kind.
type because struct {
	why  string
	kind error
}

func (e *because) Error() string { return e.why }
func (e *because) Unwrap() error { return e.kind }
