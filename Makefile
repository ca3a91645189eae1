# regfs Makefile. `make` alone lists the targets.
.DEFAULT_GOAL := help

GO      ?= go
BIN     ?= bin/regfs
MNT     ?= ./mnt
# VERSION is stamped into `regfs version` (main.version) at link time.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# FUZZTIME bounds each fuzz target in `make test`: long enough to catch shallow
# crashes, short enough for CI.
FUZZTIME ?= 10s
# TESTFLAGS: -race everywhere (FUSE reads arrive concurrently); -count=1 so a
# cached pass never hides a mount that no longer works.
TESTFLAGS ?= -race -count=1 -timeout 40m

.PHONY: help build run test unit fuzz bench lint vet fmt-check clean

help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/regfs.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/regfs

run: build ## Mount the default storage at ./mnt (or MNT=dir); Ctrl-C unmounts.
	mkdir -p $(MNT)
	./$(BIN) mount $(MNT)

test: lint unit fuzz ## Everything CI runs: lint, race tests (incl. FUSE and integration), brief fuzzing.

unit: ## Race-enabled tests of every package, FUSE mounts and integration included.
	$(GO) test $(TESTFLAGS) ./...

fuzz: ## Run each fuzz target for FUZZTIME.
	@for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# bench needs root (FUSE mounts, the mount's sysfs read-ahead) and ~3 minutes: it
# generates its own data, prints one markdown table of ratios measured side by side
# (regfs against a bare bazil passthrough, direct reads, sha256 alone; rclone mount
# where installed), then the S3 rows (regfs on versitygw against plain ranged GETs:
# S1 cold cat, S5 first byte; S3 cp into _uploads against the SDK's upload manager,
# S4 ls -l of 1,000 repositories against ListObjectsV2), the cache reader against
# direct file reads, and F1/F2 (a 1 GiB gzip layer's index build against
# compress/gzip alone; a small file read from a saved index). BENCHFLAGS passes flags to
# cmd/regfs-bench (e.g. BENCHFLAGS="-runs 5" or "-only P1,P3").
BENCHFLAGS ?=
bench: build ## Side-by-side speed ratios (docs/benchmarks.md), S3 row, cache benchmarks.
	$(GO) run ./cmd/regfs-bench -regfs $(BIN) $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench 'BenchmarkS3(ColdCat|FirstByte)' -benchtime 3x ./integration/
	$(GO) test -run '^$$' -bench 'BenchmarkS3(Upload|List)' -benchtime 3x ./integration/
	$(GO) test -run '^$$' -bench . -benchtime 3x ./cache/
	REGFS_BENCH_LAYER_MB=1024 $(GO) test -run '^$$' -bench 'BenchmarkF[12]$$' -benchtime 1x ./image/

lint: vet fmt-check ## gofmt, go vet, and staticcheck when installed.
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; else echo "staticcheck not installed: skipped"; fi

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

clean: ## Remove build output and test caches.
	rm -rf bin
	$(GO) clean -testcache
