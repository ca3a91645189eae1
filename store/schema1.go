package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/docker/libtrust"
	"github.com/opencontainers/go-digest"
)

// schema1SignatureKey is the field under which a pretty-printed schema1
// manifest carries its JWS signatures.
const schema1SignatureKey = "signatures"

// schema1Manifest is the part of a docker schema1 manifest that verification
// reads. The v1Compatibility strings are opaque here.
type schema1Manifest struct {
	SchemaVersion int    `json:"schemaVersion"`
	Name          string `json:"name"`
	Tag           string `json:"tag"`
	FSLayers      []struct {
		BlobSum string `json:"blobSum"`
	} `json:"fsLayers"`
	History []struct {
		V1Compatibility string `json:"v1Compatibility"`
	} `json:"history"`
}

// parseSchema1 verifies a signed schema1 manifest and extracts what storing
// it needs. Its fields are read from the signed payload, not from the
// document around the signatures: the payload is what gets stored and
// digested, and the two can differ (libtrust rebuilds the payload from the
// protected header's formatLength and formatTail).
func parseSchema1(content []byte, repo, tag string) (*parsedManifest, []error) {
	canonical := content
	var sigs [][]byte
	var sigProblem error
	js, err := parsePrettySignature(content)
	if err == nil {
		sigs, err = js.Signatures()
	}
	switch {
	case err != nil:
		sigProblem = &ManifestUnverifiedError{Reason: "cannot read signatures: " + err.Error()}
	case len(sigs) == 0:
		sigProblem = &ManifestUnverifiedError{Reason: "manifest has no signatures"}
	default:
		payload, perr := js.Payload()
		if perr != nil {
			sigProblem = &ManifestUnverifiedError{Reason: "cannot decode signed payload: " + perr.Error()}
			break
		}
		canonical = payload
		if verr := verifyJWS(js); verr != nil {
			sigProblem = &ManifestUnverifiedError{Reason: verr.Error()}
		}
	}
	withSig := func(problems []error) []error {
		if sigProblem != nil {
			problems = append(problems, sigProblem)
		}
		return problems
	}

	h, err := parseManifestHeader(canonical)
	if err != nil {
		reason := err.Error()
		var inv *ManifestInvalidError
		if errors.As(err, &inv) {
			reason = inv.Reason
		}
		return nil, withSig([]error{&ManifestInvalidError{Reason: "signed payload: " + reason}})
	}
	if h.SchemaVersion == nil || *h.SchemaVersion != 1 ||
		(h.MediaType != "" && h.MediaType != MediaTypeSchema1 && h.MediaType != MediaTypeSchema1Signed) {
		return nil, withSig([]error{&ManifestInvalidError{Reason: "signed payload is not a schema1 manifest"}})
	}
	var m schema1Manifest
	if err := json.Unmarshal(canonical, &m); err != nil {
		return nil, withSig([]error{&ManifestInvalidError{Reason: "malformed schema1 manifest: " + err.Error()}})
	}

	var problems []error
	if m.Name != repo {
		problems = append(problems, &ManifestInvalidError{Reason: fmt.Sprintf(
			"name %q does not match repository %q", m.Name, repo)})
	}
	if tag != "" && m.Tag != tag {
		problems = append(problems, &ManifestInvalidError{Reason: fmt.Sprintf(
			"tag %q does not match tag %q", m.Tag, tag)})
	}
	switch {
	case len(m.FSLayers) == 0:
		problems = append(problems, &ManifestInvalidError{Reason: "fsLayers is empty"})
	case len(m.FSLayers) != len(m.History):
		problems = append(problems, &ManifestInvalidError{Reason: fmt.Sprintf(
			"fsLayers has %d entries but history has %d", len(m.FSLayers), len(m.History))})
	}

	p := &parsedManifest{MediaType: MediaTypeSchema1Signed, Canonical: canonical, Name: m.Name, Tag: m.Tag}
	seen := map[digest.Digest]bool{}
	for i, l := range m.FSLayers {
		if err := checkManifestDigest(fmt.Sprintf("fsLayers[%d].blobSum", i), l.BlobSum); err != nil {
			problems = append(problems, err)
			continue
		}
		if d := digest.Digest(l.BlobSum); !seen[d] {
			seen[d] = true
			p.Blobs = append(p.Blobs, d)
		}
	}

	problems = withSig(problems)
	if sigProblem == nil {
		// Keep the signatures only if they will verify once reassembled
		// from the canonical payload; otherwise serving re-signs with the
		// store's key, as registry 2.3+ always does.
		if signed, err := assembleSchema1(canonical, sigs); err == nil && checkSchema1(signed, canonical) == nil {
			p.Signatures = sigs
		}
	}
	return p, problems
}

// signSchema1 rebuilds a signed schema1 manifest from its stored canonical
// payload and the signatures stored beside it, so that a client reading it
// back can verify it with libtrust. Without stored signatures (registry 2.3+
// stores none), or when the stored ones do not verify once reassembled, it
// signs the payload with key as the registry does when serving; key may be
// nil only when stored signatures are expected to suffice.
//
// The result is checked before it is returned: it verifies and its payload
// is exactly payload, so the digest a client computes matches the revision.
func signSchema1(payload []byte, signatures [][]byte, key libtrust.PrivateKey) ([]byte, error) {
	var storedErr error
	if len(signatures) > 0 {
		signed, err := assembleSchema1(payload, signatures)
		if err == nil {
			err = checkSchema1(signed, payload)
		}
		if err == nil {
			return signed, nil
		}
		storedErr = fmt.Errorf("stored signatures: %w", err)
	}
	if key == nil {
		if storedErr != nil {
			return nil, storedErr
		}
		return nil, errors.New("schema1 manifest has no stored signatures and no signing key")
	}
	var signed []byte
	err := libtrustSafely(func() error {
		js, err := libtrust.NewJSONSignature(payload)
		if err != nil {
			return err
		}
		if err := js.Sign(key); err != nil {
			return err
		}
		signed, err = js.PrettySignature(schema1SignatureKey)
		return err
	})
	if err == nil {
		err = checkSchema1(signed, payload)
	}
	if err != nil {
		return nil, fmt.Errorf("signing schema1 manifest: %w", err)
	}
	return signed, nil
}

// assembleSchema1 attaches stored signatures to a canonical payload.
func assembleSchema1(payload []byte, signatures [][]byte) ([]byte, error) {
	var signed []byte
	err := libtrustSafely(func() error {
		js, err := libtrust.NewJSONSignature(payload, signatures...)
		if err != nil {
			return err
		}
		signed, err = js.PrettySignature(schema1SignatureKey)
		return err
	})
	return signed, err
}

// checkSchema1 tells whether signed verifies and carries exactly payload.
func checkSchema1(signed, payload []byte) error {
	js, err := parsePrettySignature(signed)
	if err != nil {
		return err
	}
	if err := verifyJWS(js); err != nil {
		return err
	}
	got, err := js.Payload()
	if err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return errors.New("signed payload differs from the stored manifest")
	}
	return nil
}

// parsePrettySignature is libtrust.ParsePrettySignature made safe for
// untrusted input.
func parsePrettySignature(content []byte) (*libtrust.JSONSignature, error) {
	var js *libtrust.JSONSignature
	err := libtrustSafely(func() error {
		var err error
		js, err = libtrust.ParsePrettySignature(content, schema1SignatureKey)
		return err
	})
	return js, err
}

// verifyJWS checks every signature of js; libtrust accepts none at all, so
// that is refused here.
func verifyJWS(js *libtrust.JSONSignature) error {
	return libtrustSafely(func() error {
		keys, err := js.Verify()
		if err != nil {
			return fmt.Errorf("signature does not verify: %w", err)
		}
		if len(keys) == 0 {
			return errors.New("manifest has no signatures")
		}
		return nil
	})
}

// libtrustSafely runs f, turning a panic into an error. libtrust is
// unmaintained and panics on some hostile input (a negative formatLength in
// a protected header slices out of range); a manifest written through the
// mount must never take the daemon down.
func libtrustSafely(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed JWS: %v", r)
		}
	}()
	return f()
}
