package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/driver/inmemory"
)

// TestTestPause checks the crash test's hook: a matching call blocks until
// its context ends and is announced once; other calls pass through.
func TestTestPause(t *testing.T) {
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
	d, err := withTestPause(inmemory.New(), "PutContent /tags/[^/]+/current/link$", logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := d.PutContent(ctx, "/a/tags/x/index/link", []byte("1")); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := d.PutContent(ctx2, "/a/tags/x/current/link", []byte("1")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("matching call: err %v, want it held until its context ended", err)
	}
	if _, err := d.GetContent(ctx, "/a/tags/x/current/link"); err == nil {
		t.Error("the paused call was carried out")
	}
	if got := log.String(); got != "level=WARN msg=test-pause method=PutContent path=/a/tags/x/current/link\n" {
		t.Errorf("log %q", got)
	}
	if _, err := withTestPause(inmemory.New(), "PutContent", logger); err == nil || !strings.Contains(err.Error(), testPauseEnv) {
		t.Errorf("a spec without a regexp: err %v", err)
	}
}

// TestTestPauseReadOnce: a read named by the hook is held the first time
// only, so that the daemon goes on serving reads after it.
func TestTestPauseReadOnce(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	inner := inmemory.New()
	ctx := context.Background()
	if err := inner.PutContent(ctx, "/a/revisions/link", []byte("1")); err != nil {
		t.Fatal(err)
	}
	d, err := withTestPause(inner, "Stat /revisions/", logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/a/other"); err == nil {
		t.Error("Stat of a missing path succeeded")
	}
	ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := d.Stat(ctx2, "/a/revisions/link"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first matching Stat: err %v, want it held until its context ended", err)
	}
	if _, err := d.Stat(ctx, "/a/revisions/link"); err != nil {
		t.Errorf("second matching Stat: %v, want it to pass", err)
	}
}
