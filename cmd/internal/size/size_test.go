package size

import "testing"

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"1", 1}, {"1048576", 1 << 20}, {"512K", 512 << 10}, {"512k", 512 << 10}, {"256M", 256 << 20},
		{"256MB", 256 << 20}, {"256MiB", 256 << 20}, {"2G", 2 << 30}, {"1T", 1 << 40}, {" 3m ", 3 << 20}, {"100B", 100}, {"1.5G", 3 << 29}, {"2 GiB", 2 << 30},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "0", "-1", "M", "12Q", "1.5.2G", "3MX", "99999999999T", "G1"} {
		if n, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", bad, n)
		}
	}
	for _, n := range []int64{1, 1000, 1 << 10, 3 << 20, 256 << 20, 5 << 30, 1<<20 + 1} {
		got, err := Parse(Format(n))
		if err != nil || got != n {
			t.Errorf("Parse(Format(%d)=%q) = %d, %v", n, Format(n), got, err)
		}
	}
	for n, want := range map[int64]string{256 << 20: "256MiB", 3 << 29: "1.5GiB", 1<<20 + 1: "1048577"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
