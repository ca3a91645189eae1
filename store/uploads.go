package store

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver"
)

// uploadService is the UploadService of one repository.
type uploadService struct {
	repo *repository
}

// Create implements UploadService. It writes startedat (as the registry
// does) and regfs's expected-digest file, so that the upload is visible,
// with size 0, to every other reader at once. On a driver that stages
// (driver.Stager: S3, which has no rename) the bytes are staged toward the
// blob's key from the start, so that the commit does not copy them (see
// upload.staged); elsewhere they go to data, which the commit renames.
func (u *uploadService) Create(ctx context.Context, expected digest.Digest) (Upload, error) {
	if err := checkStoredDigest(expected); err != nil {
		return nil, err
	}
	s := u.repo.s
	id := uuid.NewString()
	name := u.repo.name
	started := time.Now().UTC().Truncate(time.Second)
	release := s.writes.openUpload(name, id, expected)
	if err := s.driver.PutContent(ctx, mustPath(uploadStartedAtPathSpec{name: name, id: id}), []byte(started.Format(time.RFC3339))); err != nil {
		release()
		return nil, err
	}
	if err := s.writeLink(ctx, mustPath(uploadExpectedPathSpec{name: name, id: id}), expected); err != nil {
		release()
		return nil, err
	}
	up := &upload{
		repo:     u.repo,
		ctx:      ctx,
		id:       id,
		expected: expected,
		started:  started,
		savedAt:  -1,
		release:  release,
		staged:   true,
	}
	fw, err := up.openWriter(ctx, false)
	if errors.Is(err, ErrUnsupported) {
		up.staged = false
		fw, err = up.openWriter(ctx, false)
	}
	if err != nil {
		release()
		return nil, err
	}
	up.fw, up.wb = fw, newWriteBehindTo(fw)
	s.log.Debug("upload created", "repository", name, "upload", id, "expected", expected, "staged", up.staged)
	return up, nil
}

// openWriter opens the writer of the upload's bytes: the staged writer
// toward the blob's key, or the writer of data.
func (up *upload) openWriter(ctx context.Context, appending bool) (driver.FileWriter, error) {
	s := up.repo.s
	if !up.staged {
		return s.driver.Writer(ctx, up.dataPath(), appending)
	}
	st, ok := s.driver.(driver.Stager)
	if !ok {
		return nil, fmt.Errorf("%w: staged writes", ErrUnsupported)
	}
	return st.StageWriter(ctx, mustPath(blobDataPathSpec{digest: up.expected}), up.stagedPath(), appending)
}

// Resume implements UploadService. The size is the data's size in storage;
// the hash state comes from hashstates/sha256/<size> when one was saved at
// that size, else the data is hashed once.
//
// A staged upload resumes from its staged writer, which holds the size;
// its bytes cannot be read back (S3 does not read the parts of a multipart
// upload in progress), so it needs the hash state saved at that size,
// which Flush writes before the bytes are recorded.
//
// An upload with neither data nor a staged record (none written yet, or
// a crash after the commit made the blob and before it removed the
// upload) starts its bytes anew, staged where the driver stages.
func (u *uploadService) Resume(ctx context.Context, id string) (Upload, error) {
	info, kind, err := u.stat(ctx, id)
	if err != nil {
		return nil, err
	}
	staged := kind == bytesStaged
	if staged && info.Expected == "" {
		return nil, fmt.Errorf("%w: upload %s has staged bytes and no readable expected digest: it cannot resume, only be removed", ErrUploadUnknown, id)
	}
	s := u.repo.s
	up := &upload{
		repo:     u.repo,
		ctx:      ctx,
		id:       id,
		expected: info.Expected,
		started:  info.StartedAt,
		size:     info.Size,
		wb:       newWriteBehind(),
		release:  s.writes.openUpload(u.repo.name, id, info.Expected),
		staged:   staged,
	}
	switch {
	case staged:
		fw, err := up.openWriter(ctx, true)
		if err != nil {
			up.release()
			return nil, err
		}
		up.fw, up.size = fw, fw.Size()
		up.wb.setWriter(fw)
	case kind == bytesNone && info.Expected != "":
		up.staged = true
		fw, err := up.openWriter(ctx, false)
		if errors.Is(err, ErrUnsupported) {
			up.staged = false
			break
		}
		if err != nil {
			up.release()
			return nil, err
		}
		up.fw = fw
		up.wb.setWriter(fw)
	}
	state, err := s.driver.GetContent(ctx, mustPath(uploadHashStatePathSpec{name: u.repo.name, id: id, offset: up.size}))
	switch {
	case err == nil:
		uerr := up.wb.hash().(encoding.BinaryUnmarshaler).UnmarshalBinary(state)
		if uerr == nil {
			up.savedAt = up.size
			up.stateUnverified = true
			return up, nil
		}
		// A state the registry or a crash left half-written: start over.
		s.log.Warn("upload hash state unreadable, re-hashing", "repository", u.repo.name, "upload", id, "error", uerr)
	case !isNotFound(err):
		up.abandon()
		return nil, err
	}
	if staged && up.size > 0 {
		up.abandon()
		return nil, fmt.Errorf("%w: upload %s has %d bytes staged and no hash state of them: it cannot resume, only restart", ErrUploadUnknown, id, up.size)
	}
	if err := up.rehash(ctx); err != nil {
		up.abandon()
		return nil, err
	}
	return up, nil
}

// abandon ends an upload that Resume could not open.
func (up *upload) abandon() {
	if up.fw != nil {
		_ = up.fw.Close() // nothing written: changes nothing
		up.fw = nil
	}
	up.release()
}

// List implements UploadService. Directories under _uploads/ whose names are
// not upload IDs are not uploads and are skipped.
func (u *uploadService) List(ctx context.Context) ([]UploadInfo, error) {
	names, err := u.repo.s.list(ctx, mustPath(uploadsPathSpec{name: u.repo.name}))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []UploadInfo
	for _, n := range names {
		if checkUploadID(n) != nil {
			continue
		}
		info, err := u.Stat(ctx, n)
		if errors.Is(err, ErrUploadUnknown) {
			continue // gone since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// Stat implements UploadService. Uploads other writers (the registry) left
// have no expected digest; a missing startedat gives a zero StartedAt and
// missing data a zero size, as the registry creates data lazily.
func (u *uploadService) Stat(ctx context.Context, id string) (UploadInfo, error) {
	info, _, err := u.stat(ctx, id)
	return info, err
}

// bytesKind tells where an upload's bytes are.
type bytesKind int

const (
	bytesNone   bytesKind = iota // neither data nor a staged record
	bytesData                    // data
	bytesStaged                  // staged (upload.staged): the record knows the size
)

// stat is Stat, and tells where the upload's bytes are.
func (u *uploadService) stat(ctx context.Context, id string) (UploadInfo, bytesKind, error) {
	info, kind, err := u.statFiles(ctx, id)
	if err != nil || kind != bytesStaged {
		return info, kind, err
	}
	if info.Expected == "" {
		// Nobody can reach the blob it was staged toward: it is listed,
		// never resumed (as one another writer left), and Cancel
		// removes it.
		return info, kind, nil
	}
	up := &upload{repo: u.repo, id: id, expected: info.Expected, staged: true}
	fw, err := up.openWriter(ctx, true)
	if isNotFound(err) {
		return info, bytesNone, nil // committed or cancelled since
	}
	if err != nil {
		return UploadInfo{}, kind, err
	}
	info.Size = fw.Size()
	_ = fw.Close() // nothing written: changes nothing
	return info, kind, nil
}

// statFiles is stat from the upload's files alone.
func (u *uploadService) statFiles(ctx context.Context, id string) (UploadInfo, bytesKind, error) {
	dir, err := pathFor(uploadPathSpec{name: u.repo.name, id: id})
	if err != nil {
		return UploadInfo{}, bytesNone, err
	}
	s := u.repo.s
	fi, err := s.driver.Stat(ctx, dir)
	if err != nil {
		if isNotFound(err) {
			return UploadInfo{}, bytesNone, fmt.Errorf("%w: %s in %s", ErrUploadUnknown, id, u.repo.name)
		}
		return UploadInfo{}, bytesNone, err
	}
	if !fi.IsDir {
		return UploadInfo{}, bytesNone, fmt.Errorf("%w: %s in %s is not a directory", ErrUploadUnknown, id, u.repo.name)
	}
	info := UploadInfo{ID: id}
	if b, err := s.driver.GetContent(ctx, mustPath(uploadStartedAtPathSpec{name: u.repo.name, id: id})); err == nil {
		if t, perr := time.Parse(time.RFC3339, string(b)); perr == nil {
			info.StartedAt = t.UTC()
		}
	} else if !isNotFound(err) {
		return UploadInfo{}, bytesNone, err
	}
	if d, err := s.readLink(ctx, mustPath(uploadExpectedPathSpec{name: u.repo.name, id: id})); err == nil {
		info.Expected = d
	} else if !isNotFound(err) && !s.skipBadLink(err) {
		// A corrupt expected digest leaves an upload nobody can verify,
		// like one the registry left: listed, never committed.
		return UploadInfo{}, bytesNone, err
	}
	kind := bytesNone
	if dfi, err := s.driver.Stat(ctx, mustPath(uploadDataPathSpec{name: u.repo.name, id: id})); err == nil {
		kind = bytesData
		info.Size = dfi.Size
		info.ModTime = dfi.ModTime
	} else if !isNotFound(err) {
		return UploadInfo{}, bytesNone, err
	} else if sfi, err := s.driver.Stat(ctx, mustPath(uploadStagedPathSpec{name: u.repo.name, id: id})); err == nil {
		kind = bytesStaged
		info.ModTime = sfi.ModTime
	} else if !isNotFound(err) {
		return UploadInfo{}, bytesNone, err
	}
	switch {
	case !info.ModTime.IsZero():
	case !info.StartedAt.IsZero():
		info.ModTime = info.StartedAt
	default:
		info.ModTime = fi.ModTime
	}
	return info, kind, nil
}

// Cancel implements UploadService.
func (u *uploadService) Cancel(ctx context.Context, id string) error {
	dir, err := pathFor(uploadPathSpec{name: u.repo.name, id: id})
	if err != nil {
		return err
	}
	if err := u.abortStaged(ctx, id); err != nil {
		return err
	}
	if err := u.repo.s.driver.Delete(ctx, dir); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: %s in %s", ErrUploadUnknown, id, u.repo.name)
		}
		return err
	}
	u.repo.s.log.Debug("upload cancelled", "repository", u.repo.name, "upload", id)
	return nil
}

// abortStaged discards the staged bytes of upload id, if it has any, so
// that removing the upload leaves nothing behind in the backend. One whose
// expected digest is gone cannot be reached: it is logged, and left to the
// driver's Janitor.
func (u *uploadService) abortStaged(ctx context.Context, id string) error {
	s := u.repo.s
	if _, err := s.driver.Stat(ctx, mustPath(uploadStagedPathSpec{name: u.repo.name, id: id})); err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	expected, err := s.readLink(ctx, mustPath(uploadExpectedPathSpec{name: u.repo.name, id: id}))
	if err != nil {
		s.log.Warn("removing a staged upload whose expected digest is unreadable: its staged bytes stay for the driver's janitor", "repository", u.repo.name, "upload", id, "error", err)
		return nil
	}
	up := &upload{repo: u.repo, id: id, expected: expected, staged: true}
	fw, err := up.openWriter(ctx, true)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fw.Cancel(ctx)
}

// upload is one upload in progress. It is not safe for concurrent use.
type upload struct {
	repo *repository
	// ctx is the context the upload was created or resumed with: it
	// bounds the writers the upload opens after that call returned (the
	// caller's mount, so that unmounting stops them).
	ctx      context.Context
	id       string
	expected digest.Digest
	started  time.Time

	// fw is the open driver writer on data; nil until the first write
	// after a Flush (or Resume), then reopened in append mode.
	fw driver.FileWriter
	// wb stores and hashes the data behind the writes; once wb.drain
	// returns, the data in storage is exactly the first size bytes and
	// the hash covers them.
	wb *writeBehind
	// size is the bytes written: stored, or queued in wb to be.
	size int64
	// lost is the last storage failure settle reported, until a write
	// at the end succeeds.
	lost error
	// savedAt is the size at which the hash state was last saved; -1 when
	// none was saved by this value.
	savedAt int64
	// stateUnverified is set when the hash continues from a state read
	// from storage, which may be well-formed and still wrong (copied from
	// another upload of the same size); a digest mismatch then re-hashes
	// the stored bytes once before it is believed.
	stateUnverified bool
	// staged is set when the upload's bytes are staged toward the blob's
	// key (driver.Stager, on S3) rather than written to data: fw is then
	// a staged writer, whose progress is in the staged record, and the
	// commit, once the digest is verified, completes the blob in place of
	// a Move (a full copy on S3). Staged bytes cannot be read back, so a
	// staged upload never re-hashes: its hash state is saved before each
	// record of its bytes.
	staged bool
	done   bool
	// release ends the upload's hold on the store's write fence.
	release func()
}

var errUploadClosed = errors.New("upload closed")

func (up *upload) ID() string              { return up.id }
func (up *upload) Expected() digest.Digest { return up.expected }
func (up *upload) Size() int64             { return up.size }

// WriteAt implements Upload: an upload only grows at its end. After a
// storage failure, a write beyond the end (where the writer, told of the
// bytes it sent, resumes) gets that failure again rather than
// ErrInvalidOffset, until a write at the end succeeds.
func (up *upload) WriteAt(p []byte, off int64) (int, error) {
	if up.done {
		return 0, errUploadClosed
	}
	if up.wb.failed() {
		if err := up.settle(); err != nil {
			return 0, err
		}
	}
	if off != up.size {
		if up.lost != nil && off > up.size {
			return 0, up.lost
		}
		return 0, fmt.Errorf("%w: offset %d, upload %s has %d bytes", ErrInvalidOffset, off, up.id, up.size)
	}
	if up.fw == nil {
		// The writer's lifetime is the upload's, ended by Flush or Close,
		// and bounded by the context the upload was opened with.
		fw, err := up.openWriter(up.ctx, true)
		if isNotFound(err) && up.size == 0 {
			fw, err = up.openWriter(up.ctx, false)
		}
		if err != nil {
			return 0, err
		}
		if fw.Size() != up.size {
			_ = fw.Close()
			return 0, fmt.Errorf("%w: upload %s data has %d bytes, expected %d (another writer?)", ErrInvalidOffset, up.id, fw.Size(), up.size)
		}
		up.fw = fw
		up.wb.setWriter(fw)
	}
	up.wb.add(p)
	up.size += int64(len(p))
	up.lost = nil
	return len(p), nil
}

// Write implements Upload. The bytes are queued for the driver and the
// hash (see writeBehind): Write returns before they are stored, while the
// caller sends the next ones. A storage failure is returned by the next
// Write, Flush or Commit, and Size is then what storage holds.
func (up *upload) Write(p []byte) (int, error) {
	return up.WriteAt(p, up.size)
}

// settle waits until every byte written is stored and hashed, or dropped
// after a storage failure, which it returns; size is then what storage
// holds.
func (up *upload) settle() error {
	dropped, err := up.wb.drain()
	up.size -= dropped
	if err != nil {
		up.lost = err
		up.repo.s.log.Warn("upload data not stored", "repository", up.repo.name, "upload", up.id, "bytes_lost", dropped, "size", up.size, "error", err)
	}
	return err
}

func (up *upload) dataPath() string {
	return mustPath(uploadDataPathSpec{name: up.repo.name, id: up.id})
}

func (up *upload) stagedPath() string {
	return mustPath(uploadStagedPathSpec{name: up.repo.name, id: up.id})
}

// Flush implements Upload: closing the driver writer makes the bytes
// durable; the hash state saved at the new size lets a later Resume skip
// re-reading them. The state is saved first and the older ones removed
// last, as the registry does, so that a crash in between leaves a state at
// whichever size the bytes stored have (a staged upload cannot re-hash).
func (up *upload) Flush(ctx context.Context) error {
	if up.done {
		return errUploadClosed
	}
	if err := up.settle(); err != nil {
		return err
	}
	save := up.savedAt != up.size
	if save {
		if err := up.putHashState(ctx); err != nil {
			return err
		}
	}
	if up.fw != nil {
		err := up.fw.Close()
		up.fw = nil
		if err != nil {
			return err
		}
	}
	if !save {
		return nil
	}
	return up.pruneHashStates(ctx)
}

func (up *upload) saveHashState(ctx context.Context) error {
	if err := up.putHashState(ctx); err != nil {
		return err
	}
	return up.pruneHashStates(ctx)
}

// putHashState saves the hash state at the upload's size.
func (up *upload) putHashState(ctx context.Context) error {
	s := up.repo.s
	state, err := up.wb.hash().(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("store: saving hash state of upload %s: %w", up.id, err)
	}
	if err := s.driver.PutContent(ctx, mustPath(uploadHashStatePathSpec{name: up.repo.name, id: up.id, offset: up.size}), state); err != nil {
		return err
	}
	up.savedAt = up.size
	return nil
}

// pruneHashStates removes the hash states at other sizes than the last
// saved.
func (up *upload) pruneHashStates(ctx context.Context) error {
	s := up.repo.s
	dir := mustPath(uploadHashStatesPathSpec{name: up.repo.name, id: up.id})
	names, err := s.list(ctx, dir)
	if err != nil {
		return err
	}
	keep := strconv.FormatInt(up.savedAt, 10)
	for _, n := range names {
		if n == keep {
			continue
		}
		if err := s.driver.Delete(ctx, path.Join(dir, n)); err != nil && !isNotFound(err) {
			return err
		}
	}
	return nil
}

// rehash feeds the hasher the upload's data from storage once; used when no
// saved state matches the data's size.
func (up *upload) rehash(ctx context.Context) error {
	up.wb.reset()
	up.stateUnverified = false
	if up.size == 0 {
		up.savedAt = -1
		return nil
	}
	rc, err := up.repo.s.driver.Reader(ctx, up.dataPath(), 0)
	if err != nil {
		return err
	}
	defer rc.Close()
	n, err := io.Copy(up.wb.hash(), rc)
	if err != nil {
		return fmt.Errorf("store: re-hashing upload %s: %w", up.id, err)
	}
	up.size = n
	up.savedAt = -1
	up.repo.s.log.Debug("upload re-hashed", "repository", up.repo.name, "upload", up.id, "size", n)
	return nil
}

// Commit implements Upload. Verify (size and digest) -> store the data as
// the blob (moved there, or replacing a stored copy that is damaged) ->
// link -> remove the upload. On a mismatch nothing moves and the upload
// stays resumable.
func (up *upload) Commit(ctx context.Context) (Descriptor, error) {
	if up.staged {
		return up.commitStaged(ctx)
	}
	if err := up.Flush(ctx); err != nil {
		return Descriptor{}, err
	}
	s := up.repo.s
	if up.expected == "" {
		return Descriptor{}, fmt.Errorf("%w: upload %s has no expected digest", ErrInvalidDigest, up.id)
	}
	actual := digest.NewDigest(digest.SHA256, up.wb.hash())
	if actual != up.expected && up.stateUnverified {
		// The hash went on from a saved state; a wrong one (copied from
		// another upload of the same size) would fail the upload forever.
		// The stored bytes decide, and the state saved is theirs.
		s.log.Warn("upload digest mismatch after a resumed hash state, re-hashing the stored data", "repository", up.repo.name, "upload", up.id, "got", actual)
		if err := up.rehash(ctx); err != nil {
			return Descriptor{}, err
		}
		if err := up.saveHashState(ctx); err != nil {
			return Descriptor{}, err
		}
		actual = digest.NewDigest(digest.SHA256, up.wb.hash())
	}
	stored := up.size
	if fi, err := s.driver.Stat(ctx, up.dataPath()); err == nil {
		stored = fi.Size
	} else if !isNotFound(err) {
		return Descriptor{}, err
	} else if up.size != 0 {
		// An earlier Commit may have moved the data and lost the answer
		// (a backend timeout after the move): the blob it became, with the
		// digest and size this upload hashed, lets the commit finish.
		n, err := s.blobSize(ctx, actual)
		if err != nil && !errors.Is(err, ErrBlobUnknown) {
			return Descriptor{}, err
		}
		if err != nil || actual != up.expected || n != up.size {
			return Descriptor{}, fmt.Errorf("%w: data of upload %s vanished", ErrUploadUnknown, up.id)
		}
	}
	if actual != up.expected || stored != up.size {
		if up.lost != nil {
			// The bytes are short because storing them failed (a full
			// disk): that failure is the answer, not a bad upload. What
			// was stored stays for the rest to be appended.
			return Descriptor{}, up.lost
		}
		return Descriptor{}, &DigestMismatchError{Expected: up.expected, Actual: actual, Size: stored}
	}
	desc := Descriptor{Digest: actual, Size: up.size}
	blobPath := mustPath(blobDataPathSpec{digest: actual})
	blobExisted, damaged, err := up.storedBlob(ctx, blobPath)
	if err != nil {
		return Descriptor{}, err
	}
	if !blobExisted {
		err := s.driver.Move(ctx, up.dataPath(), blobPath)
		switch {
		case isNotFound(err) && up.size == 0:
			// The registry creates data lazily: an empty upload may have none.
			err = s.driver.PutContent(ctx, blobPath, nil)
		case isNotFound(err):
			// Another store holding this upload open (a second mount of
			// the same storage that resumed it) moved the data since the
			// check above. The blob it became has the digest verified
			// here; its size tells it is that blob.
			if n, berr := s.blobSize(ctx, actual); berr == nil && n == up.size {
				err = nil
				blobExisted = true
			}
		}
		if err != nil {
			return Descriptor{}, err
		}
		if damaged {
			s.replaced(actual)
		}
	}
	return up.finishCommit(ctx, desc, blobExisted)
}

// finishCommit links the blob committed and removes the upload.
func (up *upload) finishCommit(ctx context.Context, desc Descriptor, deduplicated bool) (Descriptor, error) {
	s := up.repo.s
	if err := s.writeLink(ctx, mustPath(layerLinkPathSpec{name: up.repo.name, digest: desc.Digest}), desc.Digest); err != nil {
		return Descriptor{}, err
	}
	if err := s.driver.Delete(ctx, mustPath(uploadPathSpec{name: up.repo.name, id: up.id})); err != nil && !isNotFound(err) {
		return Descriptor{}, err
	}
	up.done = true
	up.release()
	s.log.Debug("upload committed", "repository", up.repo.name, "upload", up.id, "digest", desc.Digest, "size", desc.Size, "deduplicated", deduplicated, "staged", up.staged)
	return desc, nil
}

// commitStaged is Commit of a staged upload: verify the digest the bytes
// hashed to as they were written -> commit the staged writer, which makes
// the blob at its key (or discard the staged bytes when a sound blob is
// there already) -> link -> remove the upload. On a mismatch nothing is
// committed, and the bytes are recorded (Flush) for the rest to be
// appended.
func (up *upload) commitStaged(ctx context.Context) (Descriptor, error) {
	if up.done {
		return Descriptor{}, errUploadClosed
	}
	if err := up.settle(); err != nil {
		return Descriptor{}, err
	}
	s := up.repo.s
	actual := digest.NewDigest(digest.SHA256, up.wb.hash())
	if actual != up.expected {
		if up.lost != nil {
			return Descriptor{}, up.lost
		}
		if err := up.Flush(ctx); err != nil {
			return Descriptor{}, err
		}
		return Descriptor{}, &DigestMismatchError{Expected: up.expected, Actual: actual, Size: up.size}
	}
	desc := Descriptor{Digest: actual, Size: up.size}
	blobPath := mustPath(blobDataPathSpec{digest: actual})
	blobExisted, damaged, err := up.storedBlob(ctx, blobPath)
	if err != nil {
		return Descriptor{}, err
	}
	fw := up.fw
	if fw == nil {
		fw, err = up.openWriter(ctx, true)
		if isNotFound(err) && up.size == 0 {
			// Nothing was ever staged: the empty blob.
			fw, err = up.openWriter(ctx, false)
		}
		if isNotFound(err) && !blobExisted {
			// Another store holding this upload open committed it
			// since: the blob it made has the digest verified here;
			// its size tells it is that blob.
			if n, berr := s.blobSize(ctx, actual); berr == nil && n == up.size {
				return up.finishCommit(ctx, desc, true)
			}
			return Descriptor{}, fmt.Errorf("%w: staged bytes of upload %s vanished", ErrUploadUnknown, up.id)
		}
		if err != nil && !(isNotFound(err) && blobExisted) {
			return Descriptor{}, err
		}
		up.fw = fw
	}
	if blobExisted {
		if fw != nil {
			if err := fw.Cancel(ctx); err != nil {
				return Descriptor{}, err
			}
			up.fw = nil
		}
		return up.finishCommit(ctx, desc, true)
	}
	if err := fw.Commit(ctx); err != nil {
		if isNotFound(err) {
			// Committed or cancelled through another store since: what
			// this writer holds is dropped (Close would record it).
			_ = fw.Cancel(ctx)
			up.fw = nil
			if n, berr := s.blobSize(ctx, actual); berr == nil && n == up.size {
				return up.finishCommit(ctx, desc, true)
			}
			return Descriptor{}, fmt.Errorf("%w: staged bytes of upload %s vanished", ErrUploadUnknown, up.id)
		}
		// The writer stays open: a later Commit retries.
		return Descriptor{}, err
	}
	err = fw.Close()
	up.fw = nil
	if err != nil {
		return Descriptor{}, err
	}
	if damaged {
		s.replaced(actual)
	}
	return up.finishCommit(ctx, desc, false)
}

// healHashLimit is the largest stored blob that a commit of the same
// digest re-hashes when its size is right. Up to it the check costs about
// as much as the upload itself did; beyond it only the size is checked.
const healHashLimit = 4 << 20

// storedBlob tells whether the blob at blobPath is stored and sound (ok),
// so the commit can keep it and drop its own copy of the bytes, or stored
// and damaged: of the wrong size, or small and not hashing to its name.
// The verified bytes of this upload replace a damaged one (content
// addressed storage must heal, not trust, what it finds).
func (up *upload) storedBlob(ctx context.Context, blobPath string) (ok, damaged bool, err error) {
	s := up.repo.s
	fi, err := s.driver.Stat(ctx, blobPath)
	if isNotFound(err) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	why := ""
	switch {
	case fi.IsDir:
		return false, false, fmt.Errorf("store: blob data %s is a directory", blobPath)
	case fi.Size != up.size:
		why = fmt.Sprintf("stored size %d, verified upload %d bytes", fi.Size, up.size)
	case fi.Size <= healHashLimit && fi.Size > 0:
		got, err := s.hashBlob(ctx, blobPath)
		if isNotFound(err) {
			return false, false, nil
		}
		if err != nil {
			return false, false, err
		}
		if got != up.expected {
			why = "stored bytes hash to " + got.String()
		}
	}
	if why == "" {
		return true, false, nil
	}
	s.log.Warn("replacing a damaged blob with the verified upload", "repository", up.repo.name, "upload", up.id, "digest", up.expected, "problem", why)
	return false, true, nil
}

// hashBlob hashes the bytes stored at p.
func (s *storage) hashBlob(ctx context.Context, p string) (digest.Digest, error) {
	rc, err := s.driver.Reader(ctx, p, 0)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	dg := digest.SHA256.Digester()
	if _, err := io.Copy(dg.Hash(), rc); err != nil {
		return "", err
	}
	return dg.Digest(), nil
}

// Close implements Upload.
func (up *upload) Close() error {
	if up.done {
		return nil
	}
	err := up.Flush(context.Background())
	up.done = true
	up.release()
	return err
}

// Cancel implements Upload.
func (up *upload) Cancel(ctx context.Context) error {
	_ = up.settle() // the writer must be idle before it is closed
	if up.fw != nil && up.staged {
		_ = up.fw.Cancel(ctx) // else the service's Cancel aborts it
		up.fw = nil
	}
	if up.fw != nil {
		_ = up.fw.Close()
		up.fw = nil
	}
	up.done = true
	up.release()
	return up.repo.Uploads().Cancel(ctx, up.id)
}
