package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// The systemd unit in contrib/ is Type=notify and its ExecStart is a
// command line regfs mount accepts, so the unit cannot drift from the
// flags.
func TestContribUnit(t *testing.T) {
	b, err := os.ReadFile("../../contrib/systemd/regfs.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = v
		}
	}
	if keys["Type"] != "notify" {
		t.Errorf("Type=%s, want notify", keys["Type"])
	}
	args := strings.Fields(keys["ExecStart"])
	if len(args) < 3 || !strings.HasSuffix(args[0], "/regfs") || args[1] != "mount" {
		t.Fatalf("ExecStart=%s: want regfs mount ...", keys["ExecStart"])
	}
	cfg, err := parseMount(args[2:], io.Discard, io.Discard)
	if err != nil {
		t.Fatalf("ExecStart=%s: %v", keys["ExecStart"], err)
	}
	if cfg.Daemon {
		t.Error("a Type=notify unit runs regfs in the foreground, not --daemon")
	}
}
