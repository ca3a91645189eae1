package gc

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/store"
)

// dryRun reports the candidates as the deletions a run would make.
func (r *run) dryRun() {
	for _, rs := range r.repos {
		for _, rev := range rs.candRevs {
			rs.report.Revisions = append(rs.report.Revisions, rev.digest())
		}
		for _, l := range rs.candLinks {
			rs.report.Links = append(rs.report.Links, l.digest())
		}
		for _, up := range rs.candUploads {
			if r.fencedUpload(rs.name, up.id) {
				continue
			}
			rs.report.Uploads = append(rs.report.Uploads, UploadDeletion{ID: up.id, Size: up.size, StartedAt: rs.uploadStart(up.id)})
		}
	}
	if r.unsafeBlobs != "" {
		r.skipBlobs()
	} else {
		for _, k := range r.blobCandidates() {
			if r.fencedBlob(k) {
				continue
			}
			r.rep.Blobs = append(r.rep.Blobs, BlobDeletion{Digest: k.digest(), Size: r.blobs[k].size, Repository: r.owner[k]})
		}
	}
	if r.opts.PruneEmpty {
		for _, rs := range r.repos {
			rs.report.Removed = r.emptied(rs)
		}
	}
}

func (r *run) skipBlobs() {
	r.rep.BlobSweepSkipped = r.unsafeBlobs
	r.problem("no blob deleted: %s", r.unsafeBlobs)
}

func (r *run) fencedBlob(k key) bool {
	if r.opts.Fence != nil && r.opts.Fence.HoldsBlob(k.digest()) {
		r.rep.Spared.Fenced++
		return true
	}
	return false
}

func (r *run) fencedUpload(repo, id string) bool {
	if r.opts.Fence != nil && r.opts.Fence.HoldsUpload(repo, id) {
		r.rep.Spared.Fenced++
		return true
	}
	return false
}

// emptied tells whether the run leaves rs with nothing in it.
func (r *run) emptied(rs *repoState) bool {
	return len(rs.tags) == 0 &&
		len(rs.layers) == len(rs.report.Links) &&
		len(rs.revisions) == len(rs.report.Revisions) &&
		len(rs.uploads) == len(rs.report.Uploads)
}

// sweep deletes the candidates, re-checking each just before.
func (r *run) sweep(ctx context.Context) error {
	total := 0
	for _, rs := range r.repos {
		total += len(rs.candRevs) + len(rs.candLinks)
	}
	done := 0
	for _, rs := range r.repos {
		if len(rs.candRevs) == 0 && len(rs.candLinks) == 0 {
			continue
		}
		if err := r.sweepRepository(ctx, rs); err != nil {
			return err
		}
		done += len(rs.candRevs) + len(rs.candLinks)
		r.progress("sweep", done, total)
	}
	if err := r.sweepBlobs(ctx); err != nil {
		return err
	}
	if err := r.sweepUploads(ctx); err != nil {
		return err
	}
	if r.opts.PruneEmpty {
		if err := r.pruneEmpty(ctx); err != nil {
			return err
		}
	}
	// What a driver left of deletions and writes a crash interrupted
	// (a gc killed in the middle of a Delete, say) goes too.
	if j, ok := r.d.(driver.Janitor); ok {
		if err := j.Clean(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.problem("removing the driver's leftovers: %v", err)
		}
	}
	return nil
}

// recheckRepository reads a repository's tags and revisions again and
// recomputes what it keeps, marking it live. It reports false when the
// repository could not be read again: nothing in it may then be deleted.
func (r *run) recheckRepository(ctx context.Context, rs *repoState, repo store.Repository) (map[key]bool, map[key]bool, bool, error) {
	tags, err := repo.Tags().List(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, false, ctx.Err()
		}
		r.problem("re-reading the tags of %s: %v", rs.name, err)
		return nil, nil, false, nil
	}
	targets := map[string]key{}
	for _, t := range tags {
		k, state, err := r.readTag(ctx, rs.name, t)
		if err != nil {
			return nil, nil, false, err
		}
		switch state {
		case tagRead:
			targets[t] = k
		case tagUnknown:
			return nil, nil, false, nil
		}
	}
	rs.tagTargets = targets
	rs.tags = tags
	revs, err := repo.Manifests().List(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, false, ctx.Err()
		}
		r.problem("re-reading the revisions of %s: %v", rs.name, err)
		return nil, nil, false, nil
	}
	if rs.fresh == nil {
		rs.fresh = map[key]bool{}
	}
	for _, d := range revs {
		k, ok := keyOf(d)
		if !ok {
			continue
		}
		if _, seen := rs.revisions[k]; seen {
			continue
		}
		// Pushed since the scan: kept, and what it references with it.
		if rs.revisions == nil {
			rs.revisions = map[key]time.Time{}
		}
		rs.revisions[k] = r.now
		rs.fresh[k] = true
		info := &revInfo{}
		if err := r.readRevision(ctx, rs.name, k, info); err != nil {
			return nil, nil, false, err
		}
		rs.info[k] = info
		if info.broken {
			return nil, nil, false, nil
		}
	}
	kept := r.keptRevisions(rs)
	referenced := map[key]bool{}
	for rev := range kept {
		r.markRevision(rs, rev, referenced)
	}
	for _, t := range rs.tagTargets {
		r.live[t] = true
	}
	return kept, referenced, true, nil
}

// keepRepository marks every candidate of rs live, when rs could not be
// re-checked.
func (r *run) keepRepository(rs *repoState) {
	referenced := map[key]bool{}
	for _, rev := range rs.candRevs {
		r.markRevision(rs, rev, referenced)
	}
	for _, l := range rs.candLinks {
		r.live[l] = true
	}
}

// sweepRepository deletes rs's candidate revisions, then its candidate
// links, after a re-check of its tags and revisions.
func (r *run) sweepRepository(ctx context.Context, rs *repoState) error {
	repo, err := r.st.Repository(rs.name)
	if err != nil {
		r.keepRepository(rs)
		return nil
	}
	kept, referenced, ok, err := r.recheckRepository(ctx, rs, repo)
	if err != nil {
		return err
	}
	if !ok {
		r.keepRepository(rs)
		return nil
	}
	for _, rev := range rs.candRevs {
		if kept[rev] {
			r.rep.Spared.Recheck++
			continue
		}
		p := pathOf(store.Location{Kind: store.PathRevisionLink, Repository: rs.name, Digest: rev.digest()})
		keep, gone, err := r.restat(ctx, p)
		if err != nil {
			return err
		}
		if gone {
			continue
		}
		if !keep {
			err := repo.Manifests().Delete(ctx, rev.digest())
			switch {
			case err == nil:
				rs.report.Revisions = append(rs.report.Revisions, rev.digest())
				r.log.Info("gc deleted revision", "repository", rs.name, "digest", rev.digest())
				continue
			case errors.Is(err, store.ErrManifestUnknown):
				continue
			case ctx.Err() != nil:
				return ctx.Err()
			}
			r.problem("deleting revision %s of %s: %v", rev.digest(), rs.name, err)
		}
		r.markRevision(rs, rev, referenced)
	}
	for _, l := range rs.candLinks {
		if referenced[l] {
			r.rep.Spared.Recheck++
			r.live[l] = true
			continue
		}
		if r.fencedBlob(l) {
			r.live[l] = true
			continue
		}
		p := pathOf(store.Location{Kind: store.PathLayerLink, Repository: rs.name, Digest: l.digest()})
		keep, gone, err := r.restat(ctx, p)
		if err != nil {
			return err
		}
		if gone {
			continue
		}
		if !keep {
			err := repo.Layers().Unlink(ctx, l.digest())
			switch {
			case err == nil:
				rs.report.Links = append(rs.report.Links, l.digest())
				r.log.Info("gc removed link", "repository", rs.name, "digest", l.digest())
				continue
			case errors.Is(err, store.ErrBlobUnknown):
				continue
			case ctx.Err() != nil:
				return ctx.Err()
			}
			r.problem("removing link %s of %s: %v", l.digest(), rs.name, err)
		}
		r.live[l] = true
	}
	return nil
}

// restat stats p just before it is deleted: keep when it was written
// inside the grace window or cannot be stat'ed (a problem), gone when it
// is no longer there.
func (r *run) restat(ctx context.Context, p string) (keep, gone bool, err error) {
	fi, err := r.d.Stat(ctx, p)
	switch {
	case err == nil:
	case driver.IsNotFound(err):
		return false, true, nil
	case ctx.Err() != nil:
		return true, false, ctx.Err()
	default:
		r.problem("stat %s: %v", p, err)
		return true, false, nil
	}
	if r.recent(fi.ModTime) {
		r.rep.Spared.Grace++
		return true, false, nil
	}
	return false, false, nil
}

// sweepBlobs deletes the blobs that are not live, after walking every
// repository's links again: a blob linked or made a revision since the
// scan stays.
func (r *run) sweepBlobs(ctx context.Context) error {
	if r.unsafeBlobs != "" {
		r.skipBlobs()
		return nil
	}
	cands := r.blobCandidates()
	if len(cands) == 0 {
		return nil
	}
	var (
		linked    map[key]bool
		uploading map[int64]bool
		walked    time.Time
	)
	for i, k := range cands {
		if i%256 == 0 {
			r.progress("sweep blobs", i, len(cands))
		}
		// The link set is walked again before the first deletion, and again
		// whenever the last walk is older than rewalkEvery, so that a link
		// written during the sweep is seen within about a walk's time.
		if linked == nil || time.Since(walked) > rewalkEvery {
			walked = time.Now()
			var (
				ok  bool
				err error
			)
			linked, uploading, ok, err = r.linkSet(ctx)
			if err != nil {
				return err
			}
			if !ok {
				r.skipBlobs()
				return nil
			}
		}
		if linked[k] || uploading[r.blobs[k].size] {
			r.rep.Spared.Recheck++
			continue
		}
		if r.fencedBlob(k) {
			continue
		}
		dataPath := pathOf(store.Location{Kind: store.PathBlobData, Digest: k.digest()})
		keep, gone, err := r.restat(ctx, dataPath)
		if err != nil {
			return err
		}
		if keep || gone {
			continue
		}
		dir := pathOf(store.Location{Kind: store.PathBlob, Digest: k.digest()})
		if err := r.d.Delete(ctx, dir); err != nil && !driver.IsNotFound(err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.problem("deleting blob %s: %v", k.digest(), err)
			continue
		}
		store.BlobDeleted(r.st, k.digest())
		r.rep.Blobs = append(r.rep.Blobs, BlobDeletion{Digest: k.digest(), Size: r.blobs[k].size, Repository: r.owner[k]})
		r.log.Info("gc deleted blob", "digest", k.digest(), "size", r.blobs[k].size)
	}
	r.progress("sweep blobs", len(cands), len(cands))
	return nil
}

// rewalkEvery bounds how old the link set a blob deletion is checked
// against may be.
var rewalkEvery = 5 * time.Second

// linkSet walks every repository again and returns every digest a layer,
// revision or signature link names now, and the sizes of the uploads
// written to lately. ok is false when a directory could not be listed.
//
// The sizes cover a push that re-sends a blob whose bytes are stored but
// garbage: the registry (and regfs) then keep the stored bytes and their
// old time, and link them once the upload is verified. Until the link is
// written the upload's data is still there, as large as the blob: a blob
// of that size is spared.
func (r *run) linkSet(ctx context.Context) (map[key]bool, map[int64]bool, bool, error) {
	now, err := walkRepositories(ctx, r.d, r.opts.Workers, false)
	if err != nil {
		return nil, nil, false, err
	}
	if len(now.unreadable) > 0 {
		r.noteUnreadable(now)
		return nil, nil, false, nil
	}
	linked := map[key]bool{}
	uploading := map[int64]bool{}
	for _, rs := range now.repos {
		for _, up := range rs.uploads {
			if r.recent(up.modTime) || time.Since(up.modTime) < rewalkEvery {
				uploading[up.size] = true
			}
		}
		for _, ls := range rs.layers {
			linked[ls.k] = true
		}
		for k, sigs := range rs.signatures {
			linked[k] = true
			for _, s := range sigs {
				linked[s] = true
			}
		}
		for k := range rs.revisions {
			linked[k] = true
		}
	}
	return linked, uploading, true, nil
}

// sweepUploads removes the old uploads, each re-stat'ed just before.
func (r *run) sweepUploads(ctx context.Context) error {
	for _, rs := range r.repos {
		if len(rs.candUploads) == 0 {
			continue
		}
		repo, err := r.st.Repository(rs.name)
		if err != nil {
			continue
		}
		for _, up := range rs.candUploads {
			if r.fencedUpload(rs.name, up.id) {
				continue
			}
			p := pathOf(store.Location{Kind: store.PathUploadData, Repository: rs.name, Upload: up.id})
			keep, gone, err := r.restat(ctx, p)
			if err == nil && gone {
				// A staged upload (S3) keeps its progress here instead.
				p = pathOf(store.Location{Kind: store.PathUploadStaged, Repository: rs.name, Upload: up.id})
				keep, _, err = r.restat(ctx, p)
			}
			if err != nil {
				return err
			}
			if keep {
				continue
			}
			err = repo.Uploads().Cancel(ctx, up.id)
			switch {
			case err == nil:
				rs.report.Uploads = append(rs.report.Uploads, UploadDeletion{ID: up.id, Size: up.size, StartedAt: rs.uploadStart(up.id)})
				r.log.Info("gc removed upload", "repository", rs.name, "upload", up.id, "size", up.size)
			case errors.Is(err, store.ErrUploadUnknown):
			case ctx.Err() != nil:
				return ctx.Err()
			default:
				r.problem("removing upload %s of %s: %v", up.id, rs.name, err)
			}
		}
	}
	return nil
}

// pruneEmpty removes the repositories the run left empty; the store
// checks again that each is empty, and leaves one that is not.
func (r *run) pruneEmpty(ctx context.Context) error {
	for _, rs := range r.repos {
		if !r.emptied(rs) {
			continue
		}
		err := r.st.RemoveRepository(ctx, rs.name)
		switch {
		case err == nil:
			rs.report.Removed = true
			r.log.Info("gc removed empty repository", "repository", rs.name)
		case errors.Is(err, store.ErrRepositoryNotEmpty), errors.Is(err, store.ErrRepositoryUnknown):
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			r.problem("removing empty repository %s: %v", rs.name, err)
		}
	}
	return nil
}

// finish builds the report's per-repository entries and totals.
func (r *run) finish() {
	blobsOf := map[string][2]int64{}
	for _, b := range r.rep.Blobs {
		r.rep.Total.Blobs++
		r.rep.Total.Bytes += b.Size
		if b.Repository != "" {
			v := blobsOf[b.Repository]
			v[0]++
			v[1] += b.Size
			blobsOf[b.Repository] = v
		}
	}
	sort.Slice(r.rep.Blobs, func(i, j int) bool { return r.rep.Blobs[i].Digest < r.rep.Blobs[j].Digest })
	for _, rs := range r.repos {
		rr := rs.report
		if rr == nil {
			continue
		}
		v := blobsOf[rs.name]
		rr.Blobs, rr.Bytes = int(v[0]), v[1]
		for _, up := range rr.Uploads {
			rr.Bytes += up.Size
			r.rep.Total.Bytes += up.Size
		}
		r.rep.Total.Revisions += len(rr.Revisions)
		r.rep.Total.Links += len(rr.Links)
		r.rep.Total.Uploads += len(rr.Uploads)
		if rr.Removed {
			r.rep.Total.Repositories++
		}
		if len(rr.Revisions)+len(rr.Links)+len(rr.Uploads)+rr.Blobs > 0 || rr.Removed {
			r.rep.Repositories = append(r.rep.Repositories, *rr)
		}
	}
}
