// Package testenv is the one place that decides whether tests run in CI, and
// so whether a missing tool or device skips a test or fails it.
//
// Outside CI, a test that needs something the machine lacks (/dev/fuse,
// fusermount3, versitygw, docker-registry, skopeo, a sysfs read-ahead knob,
// root) skips with a message that says what is missing. In CI the same
// absence is a failure: CI installs everything (.ci/run), so a skip there
// would be a pass that tested nothing.
package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI: the CI environment variable is
// set to anything but "", "0" or "false" (any case). CI services set
// CI=true; CI=1 and CI=yes count too.
func InCI() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "", "0", "false":
		return false
	}
	return true
}

// SkipOrFail ends tb because something it needs is missing: it fails in
// CI and skips elsewhere, with the same message.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("in CI (CI=%q) this must run: %s", os.Getenv("CI"), msg)
	}
	tb.Skip(msg)
}
