package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3Fsck runs regfs fsck --json on m's bucket and prefix and returns its
// report and exit code.
func s3Fsck(t *testing.T, m *mount) (fsckReport, int, string) {
	t.Helper()
	cmd := exec.Command(regfsBin, "fsck", "--driver", "s3", "--s3-bucket", m.Bucket,
		"--s3-endpoint", m.S3.Endpoint, "--s3-region", m.S3.Region, "--s3-prefix", m.Prefix, "--json")
	cmd.Env = append(os.Environ(), m.S3.Env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep fsckReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("regfs fsck --driver s3: exit %d; output does not parse: %v\n%s\n%s", code, jerr, out, stderr.String())
	}
	return rep, code, string(out) + stderr.String()
}

// TestS3Fsck: `regfs fsck --driver s3` on a bucket a mount wrote finds it
// clean, and reports a planted bad link and a corrupt blob with their
// paths.
func TestS3Fsck(t *testing.T) {
	m := startMount(t, "s3", mountOpts{Prefix: "reg"})
	pushImage(t, m, "team/app", "v1", 2)
	pushImage(t, m, "other", "latest", 1)
	layer := randomBytes(t, 6<<20+5) // a multipart blob
	d := pushLayer(t, m, "other", layer)

	rep, code, out := s3Fsck(t, m)
	if code != 0 || !rep.Complete || len(rep.Problems) > 0 {
		t.Fatalf("fsck of the bucket the mount wrote: exit %d, complete %v, problems %+v\n%s", code, rep.Complete, rep.Problems, out)
	}
	if rep.Blobs != 8 { // 2 configs, 3 layers, 2 manifests, 1 more layer
		t.Errorf("fsck checked %d blobs, want 8", rep.Blobs)
	}

	// Plant a link that is no digest and a blob whose bytes are not its
	// name's.
	ctx := t.Context()
	put := func(key string, body []byte) {
		t.Helper()
		k := m.Prefix + "/docker/registry/v2/" + key
		if _, err := m.S3.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: &m.Bucket, Key: &k, Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	badLink := "repositories/team/app/_layers/sha256/" + strings.Repeat("ab", 32) + "/link"
	put(badLink, []byte("not a digest"))
	corrupt := filepath.Join("blobs/sha256", d[7:9], d[7:], "data")
	put(corrupt, layer[:1000])

	rep, code, out = s3Fsck(t, m)
	if code != 1 {
		t.Errorf("fsck with planted problems: exit %d, want 1\n%s", code, out)
	}
	found := map[string]bool{}
	for _, p := range rep.Problems {
		for _, want := range []string{badLink, corrupt} {
			if strings.Contains(p.Path, want) {
				found[want] = true
			}
		}
	}
	for _, want := range []string{badLink, corrupt} {
		if !found[want] {
			t.Errorf("fsck does not report %s: %+v", want, rep.Problems)
		}
	}
}

// TestS3RegistryServesRegfs: what regfs wrote into a bucket, the registry's
// own s3 driver serves from that bucket, and skopeo pulls it byte-exact.
func TestS3RegistryServesRegfs(t *testing.T) {
	requireTools(t, registryBin, "skopeo")
	m := startMount(t, "s3", mountOpts{Prefix: "reg"})
	img := newTestImage(t, platformAMD64, layerSpec{20, 2000}, layerSpec{21, 6 << 20})
	repo := "team/app"
	sh(t, "mkdir -p "+shellQuote(m.path(repo)))
	pushBlobs(t, m, repo, img.blobs()...)
	cpManifest(t, m, repo, "v1", img.Manifest.Data)

	// distribution 2.8's s3 driver (aws-sdk-go v1): regionendpoint makes it
	// address the bucket by path, as versitygw wants.
	storage := fmt.Sprintf(`  s3:
    accesskey: %s
    secretkey: %s
    region: %s
    regionendpoint: %s
    bucket: %s
    rootdirectory: /%s
    secure: false
    v4auth: true`, m.S3.AccessKey, m.S3.SecretKey, m.S3.Region, m.S3.Endpoint, m.Bucket, m.Prefix)
	r := startRegistryWith(t, "", registryOptions{Storage: storage})

	out := newOCILayout(t)
	skopeoCopy(t, r.ref(repo, "v1"), "oci:"+out.Dir+":v1")
	if d := readLayout(t, out.Dir, "v1"); d.Digest != img.Manifest.Desc.Digest {
		t.Errorf("skopeo pulled %s:v1 as %s, pushed %s", repo, d.Digest, img.Manifest.Desc.Digest)
	}
	for _, b := range append(img.blobs(), img.Manifest) {
		if got := layoutBlob(t, out.Dir, b.Desc.Digest); !bytes.Equal(got, b.Data) {
			t.Errorf("pulled blob %s differs", b.Desc.Digest)
		}
	}
	if tags := r.tags(repo); len(tags) != 1 || tags[0] != "v1" {
		t.Errorf("registry lists tags %q, want [v1]", tags)
	}
}

// TestFsckBesideLiveMount: plain fsck (no --repair) is safe beside a live
// mount: while uploads, manifest pushes, re-tags and untags run through
// the mount, every round of fsck reports no problem: no blob or link in
// the making, and no entry of a Delete in progress taken for a crash's
// leftover.
func TestFsckBesideLiveMount(t *testing.T) {
	for _, d := range []string{"filesystem", "s3"} {
		t.Run(d, func(t *testing.T) { testFsckBesideLiveMount(t, d) })
	}
}

func testFsckBesideLiveMount(t *testing.T, driver string) {
	m := startMount(t, driver, mountOpts{Prefix: "reg"})
	stop := make(chan struct{})
	done := make(chan error, 1)
	pushed := make(chan struct{}) // closed after the first image
	go func() {
		done <- func() error {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return nil
				default:
				}
				repo := fmt.Sprintf("live/r%d", i%3)
				config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":%d}`, i))
				layer := bytes.Repeat([]byte{byte(i)}, 300000+i)
				script := fmt.Sprintf("mkdir -p %q", m.path(repo))
				for _, b := range [][]byte{config, layer} {
					p := filepath.Join(t.TempDir(), "b")
					if err := os.WriteFile(p, b, 0o644); err != nil {
						return err
					}
					script += fmt.Sprintf(" && cp %q %q", p, m.path(repo, "_uploads", sha(b)))
				}
				mf := imageManifest(t, config, layer)
				p := filepath.Join(t.TempDir(), "m")
				if err := os.WriteFile(p, mf, 0o644); err != nil {
					return err
				}
				script += fmt.Sprintf(" && cp %q %q && ln -f %q %q && rm -f %q", p, m.path(repo, "_manifests", "v1"),
					m.path(repo, "_manifests", sha(mf)), m.path(repo, "_manifests", "v2"), m.path(repo, "_manifests", "v2"))
				// And an upload left half written, open for a moment.
				script += fmt.Sprintf(" && (head -c 1000 %q > %q || true)", p, m.path(repo, "_uploads", sha(append(mf, 'x'))))
				if out, err := exec.Command("bash", "-c", script).CombinedOutput(); err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				if i == 0 {
					close(pushed)
				}
			}
		}()
	}()
	select {
	case <-pushed:
	case err := <-done:
		t.Fatalf("pushing through the mount: %v", err)
	}
	for round := 0; round < 5; round++ {
		var rep fsckReport
		var code int
		if driver == "s3" {
			rep, code, _ = s3Fsck(t, m)
		} else {
			out, err := exec.Command(regfsBin, "fsck", "--root", m.Root, "--json").Output()
			if jerr := json.Unmarshal(out, &rep); jerr != nil {
				t.Fatalf("fsck round %d: %v; output does not parse: %v\n%s", round, err, jerr, out)
			}
			if err != nil {
				code = -1
			}
		}
		if code != 0 || !rep.Complete || len(rep.Problems) > 0 {
			t.Errorf("fsck round %d beside the live mount: exit %d, complete %v, problems %+v", round, code, rep.Complete, rep.Problems)
		}
		t.Logf("fsck round %d: %d blobs, %d links", round, rep.Blobs, rep.Links)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("pushing through the mount: %v", err)
	}
}
