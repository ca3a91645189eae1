package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"

	"github.com/regfs/regfs/driver"
)

// testPauseEnv names a hook for tests, not an option for users: when the
// variable holds "<method> <regexp>", the daemon stops for good before the
// first storage call of that method (PutContent, Move, Delete or Writer;
// "*" for any of them; or Stat or GetContent, named alone, of which only
// the first matching call is held, so that the daemon goes on serving
// reads after it) whose path (for Move, the destination) matches the
// regular expression, after logging it (msg=test-pause). The crash test (integration/crash_test.go) waits for that
// line and sends SIGKILL, reaching states that random kill times rarely hit,
// such as a revision stored but not yet tagged. Unset, nothing is wrapped.
const testPauseEnv = "REGFS_TEST_PAUSE"

// testPauseMsg is the message the paused daemon logs.
const testPauseMsg = "test-pause"

// withTestPause wraps d as spec (the value of testPauseEnv) asks.
func withTestPause(d driver.StorageDriver, spec string, log *slog.Logger) (driver.StorageDriver, error) {
	method, expr, ok := strings.Cut(spec, " ")
	re, err := regexp.Compile(expr)
	if !ok || err != nil {
		return nil, fmt.Errorf("%s=%q: want \"<method> <regexp>\" (%v)", testPauseEnv, spec, err)
	}
	return &pauseDriver{StorageDriver: d, method: method, re: re, log: log}, nil
}

// pauseDriver is the driver testPauseEnv asks for.
type pauseDriver struct {
	driver.StorageDriver
	method string
	re     *regexp.Regexp
	log    *slog.Logger
	read   atomic.Bool // a Stat or GetContent was held already
}

// at blocks a matching call until its context ends (in practice, until the
// test kills the daemon).
func (p *pauseDriver) at(ctx context.Context, method, path string) error {
	if (p.method != "*" && p.method != method) || !p.re.MatchString(path) {
		return nil
	}
	p.log.Warn(testPauseMsg, "method", method, "path", path)
	<-ctx.Done()
	return ctx.Err()
}

func (p *pauseDriver) PutContent(ctx context.Context, path string, content []byte) error {
	if err := p.at(ctx, "PutContent", path); err != nil {
		return err
	}
	return p.StorageDriver.PutContent(ctx, path, content)
}

func (p *pauseDriver) Writer(ctx context.Context, path string, append bool) (driver.FileWriter, error) {
	if err := p.at(ctx, "Writer", path); err != nil {
		return nil, err
	}
	return p.StorageDriver.Writer(ctx, path, append)
}

func (p *pauseDriver) Move(ctx context.Context, src, dst string) error {
	if err := p.at(ctx, "Move", dst); err != nil {
		return err
	}
	return p.StorageDriver.Move(ctx, src, dst)
}

func (p *pauseDriver) Delete(ctx context.Context, path string) error {
	if err := p.at(ctx, "Delete", path); err != nil {
		return err
	}
	return p.StorageDriver.Delete(ctx, path)
}

func (p *pauseDriver) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	if p.method == "Stat" && p.re.MatchString(path) && p.read.CompareAndSwap(false, true) {
		if err := p.at(ctx, "Stat", path); err != nil {
			return driver.FileInfo{}, err
		}
	}
	return p.StorageDriver.Stat(ctx, path)
}

func (p *pauseDriver) GetContent(ctx context.Context, path string) ([]byte, error) {
	if p.method == "GetContent" && p.re.MatchString(path) && p.read.CompareAndSwap(false, true) {
		if err := p.at(ctx, "GetContent", path); err != nil {
			return nil, err
		}
	}
	return p.StorageDriver.GetContent(ctx, path)
}
