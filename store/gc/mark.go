package gc

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
)

// keptRevisions returns the revisions of rs to keep: the tagged ones, all
// of them unless DeleteUntagged (or when the repository cannot be swept, a
// tag could not be read, or a manifest's references are unknown), those
// inside the grace window and those seen since the mark, then, until
// nothing changes, the children of kept indexes and the revisions whose
// subject is kept.
func (r *run) keptRevisions(rs *repoState) map[key]bool {
	kept := map[key]bool{}
	var work []key
	keep := func(k key) {
		if _, isRev := rs.revisions[k]; isRev && !kept[k] {
			kept[k] = true
			work = append(work, k)
		}
	}
	for _, t := range rs.tagTargets {
		keep(t)
	}
	keepAll := !r.opts.DeleteUntagged || rs.tagsUnknown
	referrers := map[key][]key{}
	for rev, mt := range rs.revisions {
		info := rs.info[rev]
		if keepAll || r.recent(mt) || rs.fresh[rev] || info == nil || info.broken {
			keep(rev)
		}
		if info != nil && info.hasSubj {
			referrers[info.subject] = append(referrers[info.subject], rev)
		}
	}
	for len(work) > 0 {
		k := work[len(work)-1]
		work = work[:len(work)-1]
		if info := rs.info[k]; info != nil {
			for _, c := range info.children {
				keep(c)
			}
		}
		for _, ref := range referrers[k] {
			keep(ref)
		}
	}
	return kept
}

// markRevision marks what a kept revision keeps alive: its manifest blob,
// its signatures, its config and layers, its children. referenced
// collects the same for the repository's unreferenced-link check.
func (r *run) markRevision(rs *repoState, rev key, referenced map[key]bool) {
	mark := func(k key) {
		r.live[k] = true
		referenced[k] = true
	}
	mark(rev)
	for _, s := range rs.signatures[rev] {
		mark(s)
	}
	info := rs.info[rev]
	if info == nil {
		return
	}
	mark(info.target)
	for _, b := range info.blobs {
		mark(b)
	}
	for _, c := range info.children {
		mark(c)
	}
}

// mark computes the live set and the candidates for deletion.
func (r *run) mark() {
	for _, rs := range r.repos {
		rs.report = &RepoReport{Name: rs.name, Revisions: []digest.Digest{}, Links: []digest.Digest{}, Uploads: []UploadDeletion{}}
		rs.kept = r.keptRevisions(rs)
		referenced := map[key]bool{}
		brokenKept := false
		for rev := range rs.kept {
			r.markRevision(rs, rev, referenced)
			if info := rs.info[rev]; info != nil && info.broken {
				brokenKept = true
			}
		}
		for _, t := range rs.tagTargets {
			r.live[t] = true // a tag at something that is no revision
		}
		for rev := range rs.revisions {
			if !rs.kept[rev] {
				rs.candRevs = append(rs.candRevs, rev)
			}
		}
		sortKeys(rs.candRevs)
		for _, ls := range rs.layers {
			link, mt := ls.k, time.Unix(0, ls.mtime)
			switch {
			case !r.opts.UnreferencedLayers || brokenKept || referenced[link]:
				r.live[link] = true
			case r.recent(mt):
				r.live[link] = true
				r.rep.Spared.Grace++
			default:
				rs.candLinks = append(rs.candLinks, link)
			}
		}
		sortKeys(rs.candLinks)
		if brokenKept && r.unsafeBlobs == "" {
			r.unsafeBlobs = fmt.Sprintf("a kept manifest of %s could not be read, so what it references is unknown", rs.name)
		}
		r.markUploads(rs)
	}
	// Attribute the blobs that the candidates free to their repository,
	// for the per-repository bytes.
	for _, rs := range r.repos {
		for _, rev := range rs.candRevs {
			r.own(rs.name, rev)
			for _, s := range rs.signatures[rev] {
				r.own(rs.name, s)
			}
			if info := rs.info[rev]; info != nil {
				r.own(rs.name, info.target)
				for _, b := range info.blobs {
					r.own(rs.name, b)
				}
			}
		}
		for _, l := range rs.candLinks {
			r.own(rs.name, l)
		}
	}
}

func (r *run) own(repo string, k key) {
	if _, ok := r.owner[k]; !ok && !r.live[k] {
		r.owner[k] = repo
	}
}

// markUploads picks the uploads started longer than UploadAge ago (or,
// without a readable startedat, last written that long ago) that nothing
// wrote to inside the grace window.
func (r *run) markUploads(rs *repoState) {
	ids := make([]string, 0, len(rs.uploads))
	for id := range rs.uploads {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		up := rs.uploads[id]
		started, ok := rs.startedAt[id]
		if !ok {
			started = up.modTime
		}
		if r.now.Sub(started) <= r.opts.UploadAge {
			continue
		}
		if r.recent(up.modTime) {
			r.rep.Spared.Grace++
			continue
		}
		rs.candUploads = append(rs.candUploads, up)
	}
}

// blobCandidates returns the blobs that are not live and were not written
// inside the grace window, sorted.
func (r *run) blobCandidates() []key {
	var out []key
	for k, b := range r.blobs {
		if r.live[k] {
			continue
		}
		if r.recent(time.Unix(0, b.mtime)) {
			r.rep.Spared.Grace++
			continue
		}
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

func sortKeys(ks []key) {
	slices.SortFunc(ks, func(a, b key) int {
		for i := range a {
			if a[i] != b[i] {
				return int(a[i]) - int(b[i])
			}
		}
		return 0
	})
}

// startedAt is when an upload started, for the report.
func (rs *repoState) uploadStart(id string) time.Time { return rs.startedAt[id] }
