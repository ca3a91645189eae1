package cache

import (
	"bytes"
	"testing"
)

// Bytes held outside the cache and charged to it count in its budget: a
// charge evicts blocks to make room, reads still work beside it, charges
// take at most half the budget, and Uncharge gives the room back.
func TestChargeCountsAgainstTheBudget(t *testing.T) {
	const bs = 1024
	c := NewWithOptions(Options{Budget: 8 * bs, BlockSize: bs, ReadAhead: -1, RetryDelay: -1})
	src := newSource(8*bs, 7)
	r := c.NewReader("blob", int64(len(src.data)), src.open)
	defer r.Close()
	buf := make([]byte, len(src.data))
	if _, err := r.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, src.data) {
		t.Fatalf("read: %v", err)
	}
	if s := c.Stats(); s.Bytes != 8*bs {
		t.Fatalf("%d bytes cached, want the whole budget", s.Bytes)
	}

	if !c.Charge(3 * bs) {
		t.Fatal("a charge within half the budget was refused")
	}
	s := c.Stats()
	if s.Charged != 3*bs || s.Bytes > s.Budget || s.Evictions != 3 {
		t.Errorf("after charging 3 blocks: charged %d, bytes %d of %d, %d evictions", s.Charged, s.Bytes, s.Budget, s.Evictions)
	}
	if c.Charge(bs + 1) {
		t.Error("charges took more than half the budget")
	}
	if c.Charge(-1) {
		t.Error("a negative charge was accepted")
	}
	if s := c.Stats(); s.Charged != 3*bs {
		t.Errorf("a refused charge counted: %d", s.Charged)
	}

	// Reads go on beside the charges, within what is left.
	clear(buf)
	if _, err := r.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, src.data) {
		t.Fatalf("read beside charges: %v", err)
	}
	if s := c.Stats(); s.Bytes > s.Budget || s.MaxBytes > s.Budget || s.Bytes-s.Charged > 5*bs {
		t.Errorf("beside charges: bytes %d (max %d) of %d, charged %d", s.Bytes, s.MaxBytes, s.Budget, s.Charged)
	}

	c.Uncharge(3 * bs)
	if s := c.Stats(); s.Charged != 0 || s.Bytes > 5*bs {
		t.Errorf("after Uncharge: charged %d, bytes %d", s.Charged, s.Bytes)
	}
	if !c.Charge(4 * bs) {
		t.Error("room was not given back")
	}
	c.Uncharge(4 * bs)

	// Nothing can be charged to a cache without a budget.
	if NewWithOptions(Options{}).Charge(1) {
		t.Error("a zero budget took a charge")
	}
}
