package testenv

import "testing"

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "0": false, "false": false, "FALSE": false, " false ": false,
		"true": true, "1": true, "yes": true, "TRUE": true, "github-actions": true,
	} {
		t.Setenv("CI", v)
		if got := InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", v, got, want)
		}
	}
}

// TestSkipOrFail calls SkipOrFail on a recording testing.TB under each
// setting and checks that it failed (CI) or skipped (elsewhere).
func TestSkipOrFail(t *testing.T) {
	for _, c := range []struct {
		ci         string
		wantFailed bool
	}{{"", false}, {"false", false}, {"1", true}, {"true", true}} {
		t.Setenv("CI", c.ci)
		ft := &fakeTB{}
		func() {
			defer func() { _ = recover() }()
			SkipOrFail(ft, "widget %s is missing", "x")
		}()
		if ft.failed != c.wantFailed || ft.skipped == c.wantFailed {
			t.Errorf("CI=%q: failed %v skipped %v, want failed %v", c.ci, ft.failed, ft.skipped, c.wantFailed)
		}
	}
}

// fakeTB records what SkipOrFail did; Fatalf and Skip end the call with a
// panic, as runtime.Goexit would end a real test's goroutine.
type fakeTB struct {
	testing.TB
	failed, skipped bool
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(string, ...any) {
	f.failed = true
	panic("fatal")
}
func (f *fakeTB) Skip(...any) {
	f.skipped = true
	panic("skip")
}
