package fs

import (
	"context"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/inmemory"
)

// holdDriver holds the first call of one method on a path containing
// match: it tells held, then waits for the call's context to end or for
// holdFor, whichever is first, and fails with the context's error in the
// first case. With after set, the held PutContent or Delete is done before
// the hold, as when a backend did the work and its answer is lost to a
// cancelled request.
type holdDriver struct {
	driver.StorageDriver
	method, match string
	after         bool
	held          chan struct{}
	armed         atomic.Bool // set once the test's setup is done
	once          sync.Once
}

const holdFor = 2 * time.Second

func (h *holdDriver) hold(ctx context.Context, method, p string) (bool, error) {
	if !h.armed.Load() || method != h.method || !strings.Contains(p, h.match) {
		return false, nil
	}
	first := false
	h.once.Do(func() { first = true })
	if !first {
		return false, nil
	}
	h.held <- struct{}{}
	select {
	case <-ctx.Done():
		return true, ctx.Err()
	case <-time.After(holdFor):
		return true, nil
	}
}

func (h *holdDriver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	if _, err := h.hold(ctx, "Stat", p); err != nil {
		return driver.FileInfo{}, err
	}
	return h.StorageDriver.Stat(ctx, p)
}

func (h *holdDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if h.armed.Load() && h.after && h.method == "PutContent" && strings.Contains(p, h.match) {
		if err := h.StorageDriver.PutContent(ctx, p, b); err != nil {
			return err
		}
		_, err := h.hold(ctx, "PutContent", p)
		return err
	}
	if _, err := h.hold(ctx, "PutContent", p); err != nil {
		return err
	}
	return h.StorageDriver.PutContent(ctx, p, b)
}

// interruptedLink runs link(2) from old to new on a thread of its own and,
// once the driver holds the call it waits for, sends that thread a signal,
// which makes the kernel send FUSE_INTERRUPT. It returns link's own
// result: no retry on EINTR.
func interruptedLink(t *testing.T, h *holdDriver, old, new string) error {
	t.Helper()
	tids := make(chan int, 1)
	errs := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		errs <- syscall.Link(old, new)
	}()
	tid := <-tids
	h.armed.Store(true)
	select {
	case <-h.held:
	case err := <-errs:
		t.Fatalf("link ended before the driver held it: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("link never reached the held driver call")
	}
	// SIGURG: the Go runtime takes it and ignores it, so only the
	// interrupt is seen.
	if err := unix.Tgkill(os.Getpid(), tid, unix.SIGURG); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("link still blocked 30s after the signal")
	}
	return nil
}

// TestInterruptAfterWriteCompletes: a signal reaching ln after the tag's
// current link is written (while the store checks the revision is still
// there) must not fail the ln. Before, the interrupt cancelled the check,
// ln got EINTR with the tag written, and the retry every caller makes on
// EINTR (Go's os.Link, libc's users) failed with EEXIST: the co-tenancy
// soak's "ln ... as f3: file exists".
func TestInterruptAfterWriteCompletes(t *testing.T) {
	h := &holdDriver{StorageDriver: inmemory.New(), method: "PutContent", match: "/_manifests/tags/v2/current/link", after: true, held: make(chan struct{}, 1)}
	m := newMount(t, mountConfig{drv: h})
	mf, _, _ := m.pushImage("app", "v1", 1)
	err := interruptedLink(t, h, m.path("app/_manifests/v1"), m.path("app/_manifests/v2"))
	if err != nil {
		t.Fatalf("ln interrupted after its write: %v, want success", err)
	}
	if got := m.readFile(m.path("app/_manifests/v2")); string(got) != string(mf) {
		t.Error("v2 does not read as v1's manifest")
	}
}

// TestInterruptBeforeWriteChangesNothing: a signal reaching ln while it
// still only reads (it checks the revision exists) fails it with EINTR,
// and nothing is tagged.
func TestInterruptBeforeWriteChangesNothing(t *testing.T) {
	h := &holdDriver{StorageDriver: inmemory.New(), method: "Stat", match: "/_manifests/revisions/", held: make(chan struct{}, 1)}
	m := newMount(t, mountConfig{drv: h})
	m.pushImage("app", "v1", 1)
	err := interruptedLink(t, h, m.path("app/_manifests/v1"), m.path("app/_manifests/v2"))
	if err != syscall.EINTR {
		t.Fatalf("ln interrupted before any write: %v, want EINTR", err)
	}
	if _, err := m.stat(m.path("app/_manifests/v2")); !os.IsNotExist(err) {
		t.Errorf("v2 after an interrupted ln: %v, want ENOENT", err)
	}
	if d, err := m.repo("app").Tags().Get(context.Background(), "v2"); err == nil {
		t.Errorf("storage has v2 -> %s after an interrupted ln", d)
	}
}
