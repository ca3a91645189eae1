package main

import (
	"io"
	"strings"
	"testing"

	"github.com/regfs/regfs/driver/s3"
)

// TestRegistryFlags: --registry mounts a registry's API, its state
// directory defaults under $XDG_STATE_HOME, and flags of the storage
// drivers or registry flags without --registry are refused.
func TestRegistryFlags(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/state")
	cfg, err := parseMount([]string{"--registry", "https://registry.example:5000", "--registry-ca", "/ca.pem", "/mnt"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Driver != driverRegistry || cfg.Registry.StateDir != "/state/regfs" || cfg.Registry.CAFile != "/ca.pem" {
		t.Errorf("parsed %+v", cfg)
	}
	for _, args := range [][]string{
		{"--registry", "http://h", "--root", "/r", "/mnt"},
		{"--registry", "http://h", "--driver", "s3", "/mnt"},
		{"--registry", "http://h", "--gc-interval", "1h", "/mnt"},
		{"--registry", "http://h", "/src", "/mnt"},
		{"--registry-ca", "/ca.pem", "/mnt"},
		{"--state-dir", "/s", "/mnt"},
		{"--registry", "http://h", "--registry-timeout", "-1s", "/mnt"},
	} {
		if _, err := parseMount(args, io.Discard, io.Discard); err == nil {
			t.Errorf("regfs mount %s: accepted", strings.Join(args, " "))
		}
	}
	// The mount helper's form: the registry's URL as the SOURCE, the
	// flags as options.
	cfg2, err := parseMount([]string{"https://registry.example:5000", "/mnt", "-o", "registry_ca=/ca.pem,state_dir=/s,ro"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg2.Registry.URL != "https://registry.example:5000" || cfg2.Registry.CAFile != "/ca.pem" || cfg2.Registry.StateDir != "/s" || !cfg2.ReadOnly || cfg2.Driver != driverRegistry {
		t.Errorf("SOURCE form parsed %+v", cfg2)
	}
	if _, err := parseMount([]string{"--registry", "http://a", "https://b", "/mnt"}, io.Discard, io.Discard); err == nil {
		t.Error("--registry beside a registry SOURCE: accepted")
	}
	o := cacheOptions(cfg)
	if !o.Ranged || o.BlockSize != s3.CacheBlockSize || o.ReadAhead != s3.CacheReadAhead || o.Attempts != 1 {
		t.Errorf("registry cache options: %+v", o)
	}
}
