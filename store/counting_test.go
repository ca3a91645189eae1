package store

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/inmemory"
)

// TestDriverCalls checks that the store counts every driver call it makes,
// by method, and that listing a repository's layers reads no blob.
func TestDriverCalls(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, inmemory.New())
	sr, ok := s.(StatsReporter)
	if !ok {
		t.Fatal("the store reports no Stats")
	}
	calls := func() map[string]int64 { return sr.Stats().DriverCalls }
	for name, n := range calls() {
		if n != 0 {
			t.Errorf("a new store made %d %s calls", n, name)
		}
	}
	if len(calls()) != int(numOps) {
		t.Errorf("DriverCalls has %d methods, want %d", len(calls()), numOps)
	}

	content := []byte("layer")
	dgst := digest.FromBytes(content)
	r := repo(t, s, "team/app")
	up, err := r.Uploads().Create(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(content); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	afterPush := calls()
	if afterPush["Writer"] == 0 || afterPush["Move"] == 0 || afterPush["PutContent"] == 0 {
		t.Errorf("a push made no Writer, Move or PutContent call: %v", afterPush)
	}

	if _, err := s.Children(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if ds, err := r.Layers().List(ctx); err != nil || len(ds) != 1 {
		t.Fatalf("List = %v, %v", ds, err)
	}
	got := calls()
	if d := got["Walk"] - afterPush["Walk"]; d != 2 {
		t.Errorf("Children and Layers().List made %d Walk calls, want one each", d)
	}
	for _, op := range []string{"Reader", "GetContent", "List", "Stat"} {
		if got[op] != afterPush[op] {
			t.Errorf("listing made %d %s calls, want none", got[op]-afterPush[op], op)
		}
	}
}
