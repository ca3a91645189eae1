package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/distribution/reference"
	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
)

// nameProbeDomain is put in front of a repository name before handing it to
// reference.WithName, so that the reference grammar's optional domain part is
// always taken by it and the whole of the name must match the path-component
// grammar ([a-z0-9]+ with separators, joined by '/'). Without it a first
// component like "Foo.com:5000" would pass as a domain.
const nameProbeDomain = "localhost"

// ValidateRepositoryName reports whether name is a repository name the
// registry accepts: one or more '/'-separated path components of the
// github.com/distribution/reference grammar, at most 255 characters, with no
// domain part. It returns an error wrapping ErrInvalidName otherwise.
func ValidateRepositoryName(name string) error {
	return checkRepositoryName(name)
}

// ValidateTag reports whether tag matches the reference tag grammar
// ([\w][\w.-]{0,127}); it returns an error wrapping ErrInvalidName otherwise.
func ValidateTag(tag string) error {
	return checkTag(tag)
}

// ParseDigest parses a sha256 digest in canonical form (lowercase hex, 64
// digits), the only kind regfs stores; anything else is ErrInvalidDigest.
func ParseDigest(s string) (digest.Digest, error) {
	d := digest.Digest(s)
	if err := checkStoredDigest(d); err != nil {
		return "", err
	}
	return d, nil
}

// ValidateUploadID reports whether id is an upload ID as the registry makes
// them: a UUID in its canonical lowercase 36-character form. Anything else is
// an error wrapping ErrUploadUnknown (no such upload can exist).
func ValidateUploadID(id string) error {
	return checkUploadID(id)
}

func checkRepositoryName(name string) error {
	if validNames.has(name) {
		return nil
	}
	if name == "" {
		return fmt.Errorf("%w: empty repository name", ErrInvalidName)
	}
	if len(name) > reference.RepositoryNameTotalLengthMax {
		return fmt.Errorf("%w: repository name longer than %d characters", ErrInvalidName, reference.RepositoryNameTotalLengthMax)
	}
	named, err := reference.WithName(nameProbeDomain + "/" + name)
	if err != nil {
		return fmt.Errorf("%w: repository name %q: %v", ErrInvalidName, name, err)
	}
	// The probe domain must have been taken as the domain and everything
	// after it as the path; anything else means the grammar split the name
	// differently and it is not a plain path.
	if reference.Domain(named) != nameProbeDomain || reference.Path(named) != name {
		return fmt.Errorf("%w: repository name %q", ErrInvalidName, name)
	}
	validNames.add(name)
	return nil
}

// validNames and validTags remember the names that passed their checks: a
// walk of the tree checks the same names again on every request, and the
// reference grammar's regular expressions cost microseconds each time.
var validNames, validTags nameSet

// nameSet is a set of strings safe for concurrent use, lock-free to read;
// past maxValidNames entries it starts over. The zero value is empty.
type nameSet struct {
	m sync.Map
	n atomic.Int64
}

const maxValidNames = 1 << 14

func (s *nameSet) has(name string) bool {
	_, ok := s.m.Load(name)
	return ok
}

func (s *nameSet) add(name string) {
	if s.n.Add(1) > maxValidNames {
		s.m.Clear()
		s.n.Store(0)
	}
	s.m.Store(name, struct{}{})
}

// tagProbe is a fixed valid name for reference.WithTag, which validates the
// tag with the reference package's anchored tag grammar.
var tagProbe = func() reference.Named {
	n, err := reference.WithName(nameProbeDomain + "/tag-probe")
	if err != nil {
		panic(err)
	}
	return n
}()

func checkTag(tag string) error {
	if validTags.has(tag) {
		return nil
	}
	if _, err := reference.WithTag(tagProbe, tag); err != nil {
		return fmt.Errorf("%w: tag %q: %v", ErrInvalidName, tag, err)
	}
	validTags.add(tag)
	return nil
}

// checkDigest accepts only canonical sha256 digests: the format's paths
// have room for no other algorithm.
func checkStoredDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidDigest, string(d), err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: %q: only sha256 is supported", ErrInvalidDigest, string(d))
	}
	return nil
}

func checkUploadID(id string) error {
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return fmt.Errorf("%w: %q is not an upload ID", ErrUploadUnknown, id)
	}
	return nil
}

// isInvalidInput tells the argument errors that pathFor reports.
func isInvalidInput(err error) bool {
	return errors.Is(err, ErrInvalidName) || errors.Is(err, ErrInvalidDigest) || errors.Is(err, ErrUploadUnknown)
}
