package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// samples collects the measurements of each kind, one per run.
type samples map[string][]float64

func (s samples) add(kind string, v float64) { s[kind] = append(s[kind], v) }

// median is the median of the samples of kind (the mean of the middle two
// for an even count); 0 when there are none.
func (s samples) median(kind string) float64 {
	v := slices.Clone(s[kind])
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// rate is bytes per second.
func rate(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() }

// unit says how a Row's figures print.
type unit int

const (
	unitRate    unit = iota + 1 // bytes per second
	unitSeconds                 // a duration in seconds
	unitBytes                   // a size in bytes
)

func (u unit) format(v float64) string {
	switch u {
	case unitRate:
		return fmt.Sprintf("%.0f MiB/s", v/(1<<20))
	case unitBytes:
		return fmt.Sprintf("%.0f MiB", v/(1<<20))
	case unitSeconds:
		switch {
		case v < 1e-3:
			return fmt.Sprintf("%.1f µs", v*1e6)
		case v < 1:
			return fmt.Sprintf("%.1f ms", v*1e3)
		default:
			return fmt.Sprintf("%.2f s", v)
		}
	}
	return fmt.Sprint(v)
}

// Row is one line of the table: a regfs figure, what it is compared with,
// and how it stands against the target.
type Row struct {
	// ID is the measurement: P1 to P7.
	ID   string
	What string
	// Value is regfs's figure (median), in Unit; Text replaces it when set.
	Value float64
	Unit  unit
	Text  string
	// Against names the comparison; Compare is its figure, in Unit, or
	// CompareText replaces it.
	Against     string
	Compare     float64
	CompareText string
	// Ratio is regfs's speed over the comparison's (so > 1 is regfs
	// faster), or for P5 regfs's memory over the budget; 0 for none.
	Ratio float64
	// Target is the target in words; Goal tells whether the row
	// meets it, or Met says so directly.
	Target string
	Goal   func(Row) bool
	Met    string
}

// ratioAtLeast is a Goal met when the ratio is at least x.
func ratioAtLeast(x float64) func(Row) bool { return func(r Row) bool { return r.Ratio >= x } }

// ratioAbove is a Goal met when the ratio is above x.
func ratioAbove(x float64) func(Row) bool { return func(r Row) bool { return r.Ratio > x } }

// valueAtMost is a Goal met when regfs's figure is at most x.
func valueAtMost(x float64) func(Row) bool { return func(r Row) bool { return r.Value <= x } }

func metText(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func (r Row) cells() []string {
	value := r.Text
	if value == "" {
		value = r.Unit.format(r.Value)
	}
	compare := r.CompareText
	if compare == "" && r.Against != "" {
		compare = r.Unit.format(r.Compare)
	}
	ratio := "-"
	if r.Ratio > 0 {
		ratio = fmt.Sprintf("%.2f", r.Ratio)
	}
	met := r.Met
	if met == "" && r.Goal != nil {
		met = metText(r.Goal(r))
	}
	target := r.Target
	if target == "" {
		target = "-"
	}
	return []string{r.ID, r.What, value, r.Against, compare, ratio, target, met}
}

// Report is the outcome of a run.
type Report struct {
	Config  Config
	Rows    []Row
	Machine []string
	Took    time.Duration
}

func newReport(cfg Config) *Report { return &Report{Config: cfg} }

func (r *Report) add(row Row) { r.Rows = append(r.Rows, row) }

// row returns the first row of id whose comparison starts with against.
func (r *Report) row(id, against string) (Row, bool) {
	for _, row := range r.Rows {
		if row.ID == id && strings.HasPrefix(row.Against, against) {
			return row, true
		}
	}
	return Row{}, false
}

// write prints the report as markdown: how it was made, then the table.
func (r *Report) write(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "Measured by `regfs-bench %s` in %s.\n\n", strings.Join(os.Args[1:], " "), r.Took.Round(time.Second))
	for _, m := range r.Machine {
		fmt.Fprintf(w, "- %s\n", m)
	}
	fmt.Fprintf(w, "- data: a %s random layer, a %s layer for P5 and S6, %d repositories; median of %d runs; regfs --cache-size %s (and --dir-cache-time %v for P4, so that its warm rows measure the directory cache on any machine)\n\n",
		formatBytes(c.LayerSize), formatBytes(c.BigSize), c.Repos, c.Runs, formatBytes(c.CacheSize), listingCacheTime)
	fmt.Fprintln(w, "| id | measurement | regfs | compared with | comparison | ratio | target | met |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, row := range r.Rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row.cells(), " | "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "ratio: regfs's speed over the comparison's (> 1: regfs is faster); for P5 and S6, regfs's peak RSS over the budget.")
}

// machine describes the machine and the programs measured, for the report.
func (b *bench) machine(ctx context.Context) []string {
	var out []string
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				if _, err := fmt.Sscan(strings.TrimSpace(v), &kb); err == nil {
					mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
				}
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	out = append(out, fmt.Sprintf("machine: %s, %d cores%s, Linux %s, %s/%s",
		cpu, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), runtime.GOOS, runtime.GOARCH))
	out = append(out, "built with "+runtime.Version()+"; "+firstLine(ctx, b.regfs, "version"))
	if b.rclone != "" {
		out = append(out, "peer: "+firstLine(ctx, b.rclone, "version")+", `rclone mount --read-only` with default options")
	} else {
		out = append(out, "peer: rclone not installed (its rows are left out)")
	}
	var ra []string
	for _, k := range []string{"regfs", "bare", "rclone"} {
		if v, ok := b.readAhead[k]; ok {
			ra = append(ra, fmt.Sprintf("%s %d KiB", k, v))
		}
	}
	out = append(out, "kernel read-ahead of the mounts (bdi read_ahead_kb): "+strings.Join(ra, ", "))
	out = append(out, "date: "+time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	return out
}

// firstLine is the first line a command prints, or what went wrong.
func firstLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return fmt.Sprintf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
