package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// Mount options (-o). mount(8) and mount.fuse3 hand regfs its options as
// one comma-separated list: `regfs SOURCE MOUNTPOINT -o ro,cache_size=2G`.
// Every regfs mount flag has an option spelling, its name with '_' for
// '-' (--cache-size is cache_size=2G, --read-only is read_only); a boolean
// takes no value or =true/=false. The standard options below are accepted
// as mount expects.

// optionAliases are standard mount options that set a regfs flag.
var optionAliases = map[string]struct{ flag, value string }{
	"ro":          {"read-only", "true"},
	"rw":          {"read-only", "false"},
	"allow_other": {"allow-other", "true"},
}

// ignoredOptions are standard options that mean nothing to regfs, or that
// mount(8), systemd or the kernel act on before regfs runs, so they are
// accepted and ignored:
//   - noauto, auto, _netdev, nofail, user, users, nouser, owner, group,
//     defaults, comment=, x-*: for mount(8) and systemd, not the file
//     system;
//   - dev, nodev, suid, nosuid: FUSE mounts are always nodev and nosuid,
//     and regfs has neither device nor set-id files;
//   - exec, noexec: no file in the tree has an execute bit;
//   - atime, noatime, relatime, norelatime, strictatime, nostrictatime,
//     lazytime, nolazytime, diratime, nodiratime: regfs keeps no access
//     times (every time is the mount time);
//   - sync, async, dirsync: what is written is committed at close either
//     way;
//   - default_permissions: on with allow_other already (see
//     --no-default-permissions); without it only the mounting user reaches
//     the mount;
//   - fsname=, subtype=: regfs names its mounts regfs itself.
var ignoredOptions = map[string]bool{
	"noauto": true, "auto": true, "_netdev": true, "nofail": true,
	"user": true, "users": true, "nouser": true, "owner": true, "group": true, "defaults": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true, "noexec": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "lazytime": true, "nolazytime": true,
	"diratime": true, "nodiratime": true,
	"sync": true, "async": true, "dirsync": true,
	"default_permissions": true,
}

// ignoredValueOptions are ignored options with a value (name=value).
var ignoredValueOptions = map[string]bool{"comment": true, "fsname": true, "subtype": true}

// notOptions are flags with no option spelling: they say how to run the
// command, not what to mount.
var notOptions = map[string]bool{"o": true, "help": true}

// optionsFlag is the -o flag: it collects the lists to apply after the
// other flags, so that -o and --flags combine whatever their order.
type optionsFlag struct{ lists *[]string }

func (o optionsFlag) String() string {
	if o.lists == nil {
		return ""
	}
	return strings.Join(*o.lists, ",")
}

// Set implements flag.Value.
func (o optionsFlag) Set(v string) error {
	*o.lists = append(*o.lists, v)
	return nil
}

// applyOptions sets the flags of fs that the comma-separated option lists
// name. An option it does not know is an error that names it.
func applyOptions(fs *flag.FlagSet, lists []string) error {
	for _, list := range lists {
		for _, opt := range strings.Split(list, ",") {
			if err := applyOption(fs, opt); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyOption(fs *flag.FlagSet, opt string) error {
	name, value, hasValue := strings.Cut(opt, "=")
	switch {
	case name == "":
		if hasValue {
			return fmt.Errorf("mount option %q has no name", opt)
		}
		return nil // "ro,,rw" or a trailing comma
	case strings.HasPrefix(name, "x-"), ignoredValueOptions[name]:
		return nil
	case ignoredOptions[name]:
		if hasValue {
			return fmt.Errorf("mount option %q takes no value", name)
		}
		return nil
	}
	if a, ok := optionAliases[name]; ok {
		if hasValue {
			return fmt.Errorf("mount option %q takes no value", name)
		}
		return fs.Set(a.flag, a.value)
	}
	flagName := strings.ReplaceAll(name, "_", "-")
	f := fs.Lookup(flagName)
	if f == nil || notOptions[flagName] || strings.Contains(name, "-") {
		return fmt.Errorf("unknown mount option %q", name)
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() && !hasValue {
		value = "true"
	} else if !hasValue {
		return fmt.Errorf("mount option %s needs a value: %s=%s", name, name, optionArg(f))
	}
	if err := fs.Set(flagName, value); err != nil {
		return fmt.Errorf("mount option %s=%s: %v", name, value, err)
	}
	return nil
}

// optionArg is the placeholder of f's value in its usage text.
func optionArg(f *flag.Flag) string {
	arg, _ := flag.UnquoteUsage(f)
	if arg == "" {
		return "VALUE"
	}
	return arg
}

// Sources. The mount helper form names the storage as mount's SOURCE:
//
//	/var/lib/docker-registry   a directory: the filesystem driver's root
//	s3://bucket/prefix         the s3 driver: bucket and key prefix
//	inmemory (or memory)       the inmemory driver
//
// A relative directory called inmemory or memory is ./inmemory.

// applySource sets the storage flags of fs from a mount SOURCE.
func applySource(fs *flag.FlagSet, source string) error {
	set := func(name, value string) error { return fs.Set(name, value) }
	switch {
	case source == "":
		return errors.New("empty mount source: want a directory, s3://BUCKET/PREFIX or inmemory")
	case source == "inmemory" || source == "memory":
		return set("driver", driverInmemory)
	case strings.HasPrefix(source, "s3://"):
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(source, "s3://"), "/")
		if bucket == "" {
			return fmt.Errorf("mount source %q names no bucket: want s3://BUCKET/PREFIX", source)
		}
		if err := set("driver", driverS3); err != nil {
			return err
		}
		if err := set("s3-bucket", bucket); err != nil {
			return err
		}
		if p := strings.Trim(prefix, "/"); p != "" {
			return set("s3-prefix", p)
		}
		return nil
	case strings.HasPrefix(source, "http://") || strings.HasPrefix(source, "https://"):
		return set("registry", source) // a registry's API (registry.go)
	case strings.Contains(source, "://"):
		return fmt.Errorf("mount source %q: unknown scheme, want a directory, s3://BUCKET/PREFIX, http(s)://REGISTRY or inmemory", source)
	}
	if err := set("driver", driverFilesystem); err != nil {
		return err
	}
	return set("root", source)
}
