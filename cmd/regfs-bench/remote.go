package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/regfs/regfs/store/remote"
)

// The remote registry rows (issue 18): regfs mount --registry against a
// docker-registry on 127.0.0.1, compared with curl doing the same requests.
//
//	R1: cold cat of the layer through a fresh mount (the name looked up
//	    first, its data not read), against curl GET of the blob, and
//	    against the bare bazil file system of bareremote.go reading the
//	    blob with curl's one GET (FUSE's cost alone);
//	R2: cp of the upload file into _uploads/, against curl POST + PUT of it;
//	R3: ls -l of the tags of min(-repos, 1000) repositories on a fresh
//	    mount, against the same tags/list requests alone (one curl per
//	    repository in one process: curl's --next), and against its
//	    floor, the requests ls -l needs through the API alone: tags/list
//	    and a manifest HEAD per tag (tags/list gives no digest or size),
//	    made by one curl and by two at once; and against the FUSE cost
//	    alone, ls -l of the same tree through the bare bazil file system
//	    of baretree.go serving it from memory, and against that ls -l
//	    run at the same time as the two curls (bazil's and the API's
//	    costs together, with no regfs code).

// remoteRepos caps R3's repositories at the 1,000.
const remoteRepos = 1000

// remoteRegistry is the docker-registry the R rows run against.
type remoteRegistry struct {
	addr string
	cmd  *exec.Cmd
	done chan error
}

// startRemoteRegistry runs docker-registry over root on a free port and
// waits for /v2/.
func (b *bench) startRemoteRegistry(ctx context.Context, root string) (*remoteRegistry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	conf := filepath.Join(b.tmp, "remote-registry.yml")
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", root, addr)
	if err := os.WriteFile(conf, []byte(yml), 0o644); err != nil {
		return nil, err
	}
	r := &remoteRegistry{addr: addr, done: make(chan error, 1)}
	r.cmd = exec.Command(gcRegistryBin, "serve", conf)
	r.cmd.Stdout, r.cmd.Stderr = io.Discard, io.Discard
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.done <- r.cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		select {
		case err := <-r.done:
			return nil, fmt.Errorf("%s exited: %v", gcRegistryBin, err)
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("%s on %s not ready within 20s", gcRegistryBin, addr)
		}
	}
}

func (r *remoteRegistry) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// curlUpload pushes path to repo as one blob: POST, then one PUT ?digest=
// of the whole file (a monolithic upload).
func curlUpload(ctx context.Context, addr, repo string, bl blob) (time.Duration, error) {
	start := time.Now()
	resp, err := http.Post("http://"+addr+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		return 0, fmt.Errorf("POST of an upload: %s", resp.Status)
	}
	u, err := url.Parse(loc)
	if err != nil {
		return 0, err
	}
	if !u.IsAbs() {
		loc = "http://" + addr + loc
	}
	sep := "?"
	if u.RawQuery != "" {
		sep = "&"
	}
	// -T streams the file (--data-binary would read it into memory).
	if _, err := runCmd(ctx, io.Discard, "curl", "-sSf", "-T", bl.path, "-H", "Content-Type: application/octet-stream",
		loc+sep+"digest="+bl.dgst.String()); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// remote measures R1-R3.
func (b *bench) remote(ctx context.Context, rep *Report) error {
	for _, tool := range []string{gcRegistryBin, "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			rep.add(Row{ID: "R1", What: "remote registry rows", Text: "not measured", Against: tool + " not installed"})
			return nil
		}
	}
	root := filepath.Join(b.tmp, "remote-registry")
	repos := min(b.cfg.Repos, remoteRepos)
	if _, err := writeGCRegistry(ctx, root, repos); err != nil {
		return err
	}
	reg, err := b.startRemoteRegistry(ctx, root)
	if err != nil {
		return err
	}
	defer reg.stop()
	regURL := "http://" + reg.addr
	// The tree R3's ls -l walks, for the bare tree (baretree.go).
	gcRepos := make([]string, repos)
	for i := range repos {
		gcRepos[i] = fmt.Sprintf("gc%05d/app", i)
	}
	entries, err := registryManifests(root, gcRepos)
	if err != nil {
		return err
	}
	tree := filepath.Join(b.tmp, "bare-tree")
	if err := writeBareTree(tree, entries); err != nil {
		return err
	}
	layer, up := b.ds.layer, b.ds.upload
	if _, err := curlUpload(ctx, reg.addr, "bench/app", layer); err != nil {
		return fmt.Errorf("pushing the layer: %w", err)
	}
	s := samples{}
	for run := range b.cfg.Runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		// R1: curl, then a cold cat through a fresh mount (its cache empty).
		d, err := runCmd(ctx, io.Discard, "curl", "-sSf", "-o", os.DevNull, regURL+"/v2/bench/app/blobs/"+layer.dgst.String())
		if err != nil {
			return err
		}
		s.add("curl get", rate(layer.size, d))
		err = b.withMount(b.startRegfsRemote(regURL))(func(m *mount) error {
			// The lookups (a catalog of the whole registry among them)
			// are made first: the row is about the bytes, as curl's is.
			r, err := statThenCat(filepath.Join(m.dir, "bench/app/_layers", layer.dgst.String()), layer.size)
			if err != nil {
				return err
			}
			s.add("regfs cat", r)
			return nil
		})
		if err != nil {
			return err
		}
		// The bare bazil file system serving the same blob from the
		// same GET curl makes: what FUSE alone costs.
		err = b.withMount(b.startBareRemote(regURL+"/v2/bench/app/blobs/"+layer.dgst.String(), layer.size))(func(m *mount) error {
			r, err := statThenCat(filepath.Join(m.dir, bareRemoteFile), layer.size)
			if err != nil {
				return err
			}
			s.add("bare cat", r)
			return nil
		})
		if err != nil {
			return err
		}

		// R2: a fresh repository per run for each, so both upload all of it.
		d, err = curlUpload(ctx, reg.addr, "bench/curl"+strconv.Itoa(run), up)
		if err != nil {
			return err
		}
		s.add("curl put", rate(up.size, d))
		err = b.withMount(b.startRegfsRemote(regURL))(func(m *mount) error {
			dir := filepath.Join(m.dir, "bench/cp"+strconv.Itoa(run))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			d, err := runCmd(ctx, nil, "cp", up.path, filepath.Join(dir, "_uploads", up.dgst.String()))
			if err != nil {
				return err
			}
			if fi, err := os.Stat(filepath.Join(dir, "_layers", up.dgst.String())); err != nil || fi.Size() != up.size {
				return fmt.Errorf("the upload through --registry is not a %d-byte layer: %v", up.size, err)
			}
			s.add("regfs cp", rate(up.size, d))
			return nil
		})
		if err != nil {
			return err
		}

		// R3: every repository's tags/list in one curl, then ls -l of
		// every _manifests on a fresh mount.
		args := []string{"-sSf"}
		for i := range repos {
			if i > 0 {
				args = append(args, "--next", "-sSf")
			}
			args = append(args, "-o", os.DevNull, fmt.Sprintf("%s/v2/gc%05d/app/tags/list", regURL, i))
		}
		if d, err = runCmd(ctx, io.Discard, "curl", args...); err != nil {
			return err
		}
		s.add("curl tags", d.Seconds())
		// R3's floor: what ls -l needs through the API, alone. tags/list
		// gives no digest or size, so each tag takes a manifest request
		// as well (here a HEAD with regfs's Accept header; each
		// repository of the layout has the one tag "latest").
		if d, err = runCmd(ctx, io.Discard, "curl", remoteFloorArgs(regURL, 0, repos)...); err != nil {
			return err
		}
		s.add("curl tags+head", d.Seconds())
		// The same requests from two curls at once, each half of the
		// repositories: what the registry serves when its client keeps
		// more than one request in flight, as regfs's read-ahead does.
		if d, err = curlFloorParallel(ctx, regURL, repos, remoteFloorCurls); err != nil {
			return err
		}
		s.add("curl tags+head parallel", d.Seconds())
		// What a fresh mount's first lookup waits for: the registry's
		// walk of its storage for the catalog (not part of curl's time).
		if d, err = runCmd(ctx, io.Discard, "curl", "-sSf", "-o", os.DevNull, regURL+"/v2/_catalog?n=1000"); err != nil {
			return err
		}
		s.add("curl catalog", d.Seconds())
		var regfsListing []string
		err = b.withMount(b.startRegfsRemote(regURL))(func(m *mount) error {
			cpu := markCPU(m.pid(), reg.cmd.Process.Pid)
			d, listing, err := lsManifests(ctx, m.dir, repos)
			if err != nil {
				return err
			}
			spent := cpu.spent()
			regfsListing = listing
			s.add("regfs ls", d.Seconds())
			if st, err := regfsStats(m.dir); err == nil {
				var calls int64
				for _, n := range st.DriverCalls {
					calls += n
				}
				b.log.Info("R3 ls -l through --registry", "took", d.Round(time.Millisecond), "requests", st.DriverCalls,
					"requests_per_repository", float64(calls)/float64(repos), "fuse_requests_per_repository", float64(fuseRequests(statsSnapshot{}, st))/float64(repos),
					"regfs_cpu", spent[0], "registry_cpu", spent[1])
			}
			return nil
		})
		if err != nil {
			return err
		}
		// The same ls -l through the bare tree on a fresh mount: what
		// bazil.org/fuse and the kernel cost alone. Its output must be
		// regfs's but for the dates.
		err = b.withMount(b.startBareTree(tree))(func(m *mount) error {
			cpu := markCPU(m.pid())
			d, listing, err := lsManifests(ctx, m.dir, repos)
			if err != nil {
				return err
			}
			if err := sameListing(regfsListing, listing); err != nil {
				return fmt.Errorf("ls -l through the bare tree is not regfs's: %w", err)
			}
			s.add("bare ls", d.Seconds())
			b.log.Info("R3 ls -l through the bare tree", "took", d.Round(time.Millisecond), "bare_cpu", cpu.spent()[0])
			return nil
		})
		if err != nil {
			return err
		}
		// That ls -l on another fresh mount, at the same time as the
		// parallel floor's two curls, until both are done: bazil's and
		// the API's costs on the same cores, no regfs code.
		err = b.withMount(b.startBareTree(tree))(func(m *mount) error {
			cpu := markCPU(m.pid(), reg.cmd.Process.Pid)
			start := time.Now()
			var listing []string
			lsDone := make(chan error, 1)
			go func() {
				var err error
				_, listing, err = lsManifests(ctx, m.dir, repos)
				lsDone <- err
			}()
			_, err := curlFloorParallel(ctx, regURL, repos, remoteFloorCurls)
			if err = errors.Join(err, <-lsDone); err != nil {
				return err
			}
			d := time.Since(start)
			spent := cpu.spent()
			if err := sameListing(regfsListing, listing); err != nil {
				return fmt.Errorf("ls -l through the bare tree is not regfs's: %w", err)
			}
			s.add("bare ls + curls", d.Seconds())
			b.log.Info("R3 ls -l through the bare tree with the 2 curls", "took", d.Round(time.Millisecond), "bare_cpu", spent[0], "registry_cpu", spent[1])
			return nil
		})
		if err != nil {
			return err
		}
	}
	v := s.median("regfs cat")
	rep.add(Row{ID: "R1", What: fmt.Sprintf("cold cat of a %s layer through --registry", formatBytes(layer.size)), Value: v, Unit: unitRate,
		Against: "curl GET of the same blob", Compare: s.median("curl get"), Ratio: v / s.median("curl get"), Target: ">= 0.8x", Goal: ratioAtLeast(0.8)})
	rep.add(Row{ID: "R1", What: fmt.Sprintf("cold cat of a %s layer through --registry", formatBytes(layer.size)), Value: v, Unit: unitRate,
		Against: "a bare bazil.org/fuse file system serving the blob from one GET per open file (its FUSE cost alone)", Compare: s.median("bare cat"), Ratio: v / s.median("bare cat")})
	bare := s.median("bare cat")
	rep.add(Row{ID: "R1", What: "cold cat of the same layer through the bare bazil.org/fuse file system (one GET per open file)", Value: bare, Unit: unitRate,
		Against: "curl GET of the same blob", Compare: s.median("curl get"), Ratio: bare / s.median("curl get")})
	v = s.median("regfs cp")
	rep.add(Row{ID: "R2", What: fmt.Sprintf("cp of a %s layer into _uploads/ through --registry", formatBytes(up.size)), Value: v, Unit: unitRate,
		Against: "curl POST + monolithic PUT of the same file", Compare: s.median("curl put"), Ratio: v / s.median("curl put"), Target: ">= 0.7x", Goal: ratioAtLeast(0.7)})
	v = s.median("regfs ls")
	b.log.Info("R3", "catalog_alone", time.Duration(s.median("curl catalog")*float64(time.Second)).Round(time.Millisecond))
	rep.add(Row{ID: "R3", What: fmt.Sprintf("ls -l of %d repositories' tags through --registry", repos), Value: v, Unit: unitSeconds,
		Against: "the same tags/list requests alone (curl)", Compare: s.median("curl tags"), Ratio: s.median("curl tags") / v, Target: ">= 0.5x", Goal: ratioAtLeast(0.5)})
	rep.add(Row{ID: "R3", What: fmt.Sprintf("ls -l of %d repositories' tags through --registry", repos), Value: v, Unit: unitSeconds,
		Against: remoteFloorAgainst, Compare: s.median("curl tags+head"), Ratio: s.median("curl tags+head") / v})
	rep.add(Row{ID: "R3", What: fmt.Sprintf("ls -l of %d repositories' tags through --registry", repos), Value: v, Unit: unitSeconds,
		Against: remoteFloorParallelAgainst, Compare: s.median("curl tags+head parallel"), Ratio: s.median("curl tags+head parallel") / v})
	rep.add(Row{ID: "R3", What: fmt.Sprintf("ls -l of %d repositories' tags through --registry", repos), Value: v, Unit: unitSeconds,
		Against: remoteBareTreeAgainst, Compare: s.median("bare ls"), Ratio: s.median("bare ls") / v})
	rep.add(Row{ID: "R3", What: fmt.Sprintf("ls -l of %d repositories' tags through --registry", repos), Value: v, Unit: unitSeconds,
		Against: remoteCombinedAgainst, Compare: s.median("bare ls + curls"), Ratio: s.median("bare ls + curls") / v})
	floor := s.median("curl tags+head")
	rep.add(Row{ID: "R3", What: remoteFloorWhat, Value: floor, Unit: unitSeconds,
		Against: "the same tags/list requests alone (curl)", Compare: s.median("curl tags"), Ratio: s.median("curl tags") / floor})
	bareLS := s.median("bare ls")
	rep.add(Row{ID: "R3", What: remoteBareTreeWhat, Value: bareLS, Unit: unitSeconds,
		Against: "the same tags/list requests alone (curl)", Compare: s.median("curl tags"), Ratio: s.median("curl tags") / bareLS})
	combined := s.median("bare ls + curls")
	rep.add(Row{ID: "R3", What: remoteCombinedWhat, Value: combined, Unit: unitSeconds,
		Against: "the same tags/list requests alone (curl)", Compare: s.median("curl tags"), Ratio: s.median("curl tags") / combined})
	return nil
}

// R3's FUSE floor (the bare tree of baretree.go) and its combined floor
// (that with the parallel floor's curls at the same time), as compared
// with and as measured.
const (
	remoteBareTreeAgainst = "ls -l of the same tree through a bare bazil.org/fuse file system from memory (its FUSE cost alone)"
	remoteBareTreeWhat    = "ls -l of the same tree through a bare bazil.org/fuse file system from memory"
	remoteCombinedAgainst = "the bare ls -l and the 2 curls of the parallel floor at once, until both are done (bazil's and the API's costs, no regfs code)"
	remoteCombinedWhat    = "the bare ls -l and the 2 curls of the parallel floor at once, until both are done"
)

// lsManifests runs ls -l of the _manifests of the first repos
// repositories of R3's layout below mnt and returns how long it took and
// its output without the mount's path or the dates (sameListing).
func lsManifests(ctx context.Context, mnt string, repos int) (time.Duration, []string, error) {
	dirs := make([]string, repos)
	for i := range repos {
		dirs[i] = filepath.Join(mnt, fmt.Sprintf("gc%05d/app/_manifests", i))
	}
	var out bytes.Buffer
	d, err := runCmd(ctx, &out, "ls", append([]string{"-l"}, dirs...)...)
	if err != nil {
		return 0, nil, err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		l = strings.TrimPrefix(l, mnt)
		// Mode, links, owner, group, size; then the date (3 fields).
		if f := strings.Fields(l); len(f) >= 9 {
			l = strings.Join(append(f[:5:5], f[8:]...), " ")
		}
		lines = append(lines, l)
	}
	// Per directory: its name, "total", the tag and the revision, and a
	// blank line between directories.
	if len(lines) < 3*repos {
		return 0, nil, fmt.Errorf("ls -l of %d repositories' _manifests printed %d lines", repos, len(lines))
	}
	return d, lines, nil
}

// sameListing tells how two outputs of lsManifests differ, if they do.
func sameListing(want, got []string) error {
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			return fmt.Errorf("line %d is %q, want %q", i+1, g, w)
		}
	}
	return nil
}

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture Go runs on.
const userHZ = 100

// cpuMark is the CPU time some processes had used at one moment.
type cpuMark struct {
	pids []int
	at   []time.Duration
}

// markCPU notes the CPU time each of pids has used so far.
func markCPU(pids ...int) cpuMark {
	m := cpuMark{pids: pids}
	for _, p := range pids {
		m.at = append(m.at, procCPU(p))
	}
	return m
}

// spent is the CPU time each process has used since the mark, in the
// mark's order.
func (m cpuMark) spent() []time.Duration {
	out := make([]time.Duration, len(m.pids))
	for i, p := range m.pids {
		out[i] = procCPU(p) - m.at[i]
	}
	return out
}

// procCPU is the CPU time (user and system, all threads) process pid has
// used, from /proc/PID/stat; 0 when it cannot be read (the figure is only
// logged).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing one. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+s) * time.Second / userHZ
}

// remoteFloorAgainst names R3's floor row's comparison.
const remoteFloorAgainst = "tags/list and a manifest HEAD per tag alone (curl): the requests ls -l needs"

// remoteFloorWhat names R3's floor measured against the tags/list
// requests alone: where the API alone puts the row's ratio.
const remoteFloorWhat = "the requests ls -l needs alone (curl: tags/list and a manifest HEAD per tag)"

// remoteFloorCurls is how many curls make R3's parallel floor: one per
// core of the machine the rows were set for.
const remoteFloorCurls = 2

// remoteFloorParallelAgainst names R3's parallel floor.
const remoteFloorParallelAgainst = "the same requests from 2 curls at once, half the repositories each"

// curlFloorParallel makes the floor's requests from n curls at once, each
// for its share of the repositories, and returns when the last is done.
func curlFloorParallel(ctx context.Context, regURL string, repos, n int) (time.Duration, error) {
	start := time.Now()
	errc := make(chan error, n)
	for k := range n {
		go func() {
			_, err := runCmd(ctx, io.Discard, "curl", remoteFloorArgs(regURL, k*repos/n, (k+1)*repos/n)...)
			errc <- err
		}()
	}
	var errs []error
	for range n {
		errs = append(errs, <-errc)
	}
	return time.Since(start), errors.Join(errs...)
}

// remoteFloorArgs is one curl making, for the repositories [lo, hi), per
// repository its tags/list and a HEAD of its tag's manifest with the
// Accept header regfs sends.
func remoteFloorArgs(regURL string, lo, hi int) []string {
	accept := "Accept: " + strings.Join(remote.ManifestAccept(), ", ")
	var args []string
	for i := lo; i < hi; i++ {
		if i > lo {
			args = append(args, "--next")
		}
		repo := fmt.Sprintf("%s/v2/gc%05d/app", regURL, i)
		args = append(args, "-sSf", "-o", os.DevNull, repo+"/tags/list",
			"--next", "-sSf", "-o", os.DevNull, "-I", "-H", accept, repo+"/manifests/latest")
	}
	return args
}

// startRegfsRemote mounts the registry at url with --registry, a fresh
// state directory and an empty cache.
func (b *bench) startRegfsRemote(url string) (*mount, error) {
	dir := b.newMountpoint("regfs-remote")
	state := dir + "-state"
	argv := []string{b.regfs, "mount", "--registry", url, "--state-dir", state,
		"--cache-size", strconv.FormatInt(b.cfg.CacheSize, 10), dir}
	m, err := b.mounts.start("regfs-remote", dir, argv, nil, "msg=mounted")
	if err != nil {
		return nil, errors.Join(err, os.RemoveAll(state))
	}
	return m, nil
}

// statThenCat looks p up, then reads it whole and returns the read's rate:
// the lookups come first, so that the rate is about the bytes, as curl's
// is. A read of other than size bytes is an error.
func statThenCat(p string, size int64) (float64, error) {
	if _, err := os.Stat(p); err != nil {
		return 0, err
	}
	n, d, err := readAll(p)
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("cat of %s read %d bytes, want %d", p, n, size)
	}
	return rate(size, d), nil
}
