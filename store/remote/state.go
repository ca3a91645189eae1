package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

// stateDir keeps the uploads in progress of one registry, a JSON file per
// upload: <dir>/<hash of the registry URL>/uploads/<id>.json.
type stateDir struct {
	dir string

	// repos caches repos(): every lookup of a directory asks for it.
	// It is valid while gen is unchanged (this process saved or removed
	// nothing since) and the directory's mtime is modTime (nor did
	// another). Guarded by mu.
	mu         sync.Mutex
	gen        uint64
	cachedGen  uint64
	cached     []string
	cachedMod  time.Time
	cachedSome bool
}

// uploadState is an upload's file. The registry's session may be ahead of
// Offset by one chunk (regfs was killed after the registry took a PATCH and
// before the file was saved): Pending and PendingHash describe that chunk,
// saved before it is sent.
type uploadState struct {
	Repo      string        `json:"repo"`
	ID        string        `json:"id"`
	Expected  digest.Digest `json:"expected"`
	Location  string        `json:"location"`
	StartedAt time.Time     `json:"startedAt"`
	// Offset is what the registry acknowledged; Hash the SHA-256 state
	// after those bytes (encoding.BinaryMarshaler).
	Offset int64  `json:"offset"`
	Hash   []byte `json:"hash"`
	// Pending is Offset plus the chunk being sent, PendingHash the state
	// after it; zero when none is.
	Pending     int64  `json:"pending,omitempty"`
	PendingHash []byte `json:"pendingHash,omitempty"`
	// Earlier are the hash states after the last few acknowledged chunks
	// before Offset, by offset: a registry found behind Offset (it lost
	// what it had acknowledged) is resumed at its own offset when one of
	// them is there.
	Earlier map[int64][]byte `json:"earlier,omitempty"`
	// MinChunk is the registry's OCI-Chunk-Min-Length.
	MinChunk int64 `json:"minChunk,omitempty"`
}

func openStateDir(root, registry string) (*stateDir, error) {
	sum := sha256.Sum256([]byte(registry))
	dir := filepath.Join(root, hex.EncodeToString(sum[:8]), "uploads")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("upload state directory: %w", err)
	}
	// Say which registry the directory is for, for a reader of it.
	_ = os.WriteFile(filepath.Join(filepath.Dir(dir), "registry"), []byte(registry+"\n"), 0o600)
	return &stateDir{dir: dir}, nil
}

func (d *stateDir) path(id string) string { return filepath.Join(d.dir, id+".json") }

// save writes st atomically (a temporary file renamed over the old one).
func (d *stateDir) save(st *uploadState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := d.path(st.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return &store.StorageError{Op: "save upload state", Path: tmp, Err: err}
	}
	defer d.changed()
	if err := os.Rename(tmp, d.path(st.ID)); err != nil {
		return &store.StorageError{Op: "save upload state", Path: tmp, Err: err}
	}
	return nil
}

// load reads an upload's file; ErrUploadUnknown when there is none.
func (d *stateDir) load(id string) (*uploadState, error) {
	if err := store.ValidateUploadID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", store.ErrUploadUnknown, id)
	}
	if err != nil {
		return nil, &store.StorageError{Op: "read upload state", Path: d.path(id), Err: err}
	}
	var st uploadState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, &store.StorageError{Op: "read upload state", Path: d.path(id), Err: err}
	}
	return &st, nil
}

func (d *stateDir) remove(id string) error {
	defer d.changed()
	err := os.Remove(d.path(id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return &store.StorageError{Op: "remove upload state", Path: d.path(id), Err: err}
	}
	return nil
}

// list returns the states of repo's uploads, by ID.
func (d *stateDir) list(repo string) ([]*uploadState, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, &store.StorageError{Op: "list upload state", Path: d.dir, Err: err}
	}
	var out []*uploadState
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		st, err := d.load(id)
		if err != nil || st.Repo != repo {
			continue
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// repos returns the repositories with uploads in progress.
func (d *stateDir) repos() []string {
	fi, err := os.Stat(d.dir)
	if err != nil {
		return nil
	}
	d.mu.Lock()
	gen := d.gen
	if d.cachedSome && d.cachedGen == gen && d.cachedMod.Equal(fi.ModTime()) {
		out := slices.Clone(d.cached)
		d.mu.Unlock()
		return out
	}
	d.mu.Unlock()
	out := d.readRepos()
	d.mu.Lock()
	if d.gen == gen {
		d.cached, d.cachedGen, d.cachedMod, d.cachedSome = slices.Clone(out), gen, fi.ModTime(), true
	}
	d.mu.Unlock()
	return out
}

// changed invalidates the cache of repos.
func (d *stateDir) changed() {
	d.mu.Lock()
	d.gen++
	d.mu.Unlock()
}

// readRepos is repos, read from the files.
func (d *stateDir) readRepos() []string {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if st, err := d.load(id); err == nil {
				out = append(out, st.Repo)
			}
		}
	}
	return out
}
