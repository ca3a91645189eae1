package remote

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

// OCIError is one entry of the error list a registry sends with a 4xx or
// 5xx (distribution spec, "Error Codes").
type OCIError struct {
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Detail  json.RawMessage `json:"detail,omitempty"`
}

func (e OCIError) String() string {
	s := e.Code
	if e.Message != "" {
		s += ": " + e.Message
	}
	if d := strings.TrimSpace(string(e.Detail)); d != "" && d != "null" && d != "{}" && len(d) < 300 {
		s += " " + d
	}
	return s
}

// HTTPError is a status the call did not want, with the registry's error
// list. It names the method and the path only (never the query, headers or
// credentials). 401 and 403 unwrap to EACCES, which fs.classify maps as the
// storage errno it is.
type HTTPError struct {
	Method string
	Path   string
	Status int
	Codes  []OCIError
}

func newHTTPError(method string, u *url.URL, resp *http.Response, body []byte) *HTTPError {
	e := &HTTPError{Method: method, Path: u.Path, Status: resp.StatusCode}
	var list struct {
		Errors []OCIError `json:"errors"`
	}
	if json.Unmarshal(body, &list) == nil {
		e.Codes = list.Errors
	}
	return e
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("registry answered %s %s with %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if len(e.Codes) > 0 {
		parts := make([]string, len(e.Codes))
		for i, c := range e.Codes {
			parts[i] = c.String()
		}
		s += " (" + strings.Join(parts, "; ") + ")"
	}
	return s
}

// Unwrap makes a denial an EACCES.
func (e *HTTPError) Unwrap() error {
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden || e.has("UNAUTHORIZED", "DENIED") {
		return syscall.EACCES
	}
	return nil
}

// has tells whether the registry sent one of codes.
func (e *HTTPError) has(codes ...string) bool {
	for _, c := range e.Codes {
		for _, want := range codes {
			if c.Code == want {
				return true
			}
		}
	}
	return false
}

// storageError is e as the store reports a failed backend call: Kind says
// what the status means to a caller that does not look further.
func (e *HTTPError) storageError() *store.StorageError {
	se := &store.StorageError{Op: e.Method, Path: e.Path, Err: e}
	switch {
	case e.Status == http.StatusNotFound:
		se.Kind = store.ErrNotFound
	case e.Status == http.StatusMethodNotAllowed || e.has("UNSUPPORTED"):
		se.Kind = store.ErrUnsupported
	case e.Status == http.StatusRequestedRangeNotSatisfiable:
		se.Kind = store.ErrInvalidOffset
	}
	return se
}

// httpErr returns the *HTTPError inside err, if any.
func httpErr(err error) *HTTPError {
	var he *HTTPError
	if errors.As(err, &he) {
		return he
	}
	return nil
}

// isStatus tells whether err is the registry answering with one of statuses.
func isStatus(err error, statuses ...int) bool {
	he := httpErr(err)
	if he == nil {
		return false
	}
	for _, s := range statuses {
		if he.Status == s {
			return true
		}
	}
	return false
}

// notFound replaces a 404 (or the registry's code for a missing thing)
// with sentinel, keeping the registry's answer in the message.
func notFound(err error, sentinel error, what string) error {
	he := httpErr(err)
	if he != nil && (he.Status == http.StatusNotFound || he.has("NAME_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UPLOAD_UNKNOWN")) &&
		he.Status < 500 && he.Status != http.StatusUnauthorized && he.Status != http.StatusForbidden {
		return fmt.Errorf("%w: %s (%v)", sentinel, what, he)
	}
	return err
}

// rejectedManifest turns the registry's refusal of a manifest into a
// *store.ManifestVerificationError with one problem per code, so that fs
// answers EBADMSG and logs every reason.
func rejectedManifest(err error) error {
	he := httpErr(err)
	if he == nil || he.Status != http.StatusBadRequest || len(he.Codes) == 0 {
		return err
	}
	var errs []error
	for _, c := range he.Codes {
		reason := "registry: " + c.String()
		switch c.Code {
		case "MANIFEST_BLOB_UNKNOWN":
			errs = append(errs, fmt.Errorf("%s: %w", reason, &store.ManifestBlobUnknownError{Digest: detailDigest(c.Detail)}))
		case "BLOB_UNKNOWN", "MANIFEST_UNKNOWN":
			errs = append(errs, fmt.Errorf("%s: %w", reason, &store.ManifestChildUnknownError{Digest: detailDigest(c.Detail)}))
		case "MANIFEST_UNVERIFIED":
			errs = append(errs, &store.ManifestUnverifiedError{Reason: reason})
		default:
			errs = append(errs, &store.ManifestInvalidError{Reason: reason})
		}
	}
	return &store.ManifestVerificationError{Errs: errs}
}

// rejectedBlob turns the registry's refusal of an upload's bytes
// (DIGEST_INVALID, SIZE_INVALID, BLOB_UPLOAD_INVALID) into a
// *store.DigestMismatchError (EBADMSG) carrying every reason.
func rejectedBlob(err error, expected digest.Digest, size int64) error {
	he := httpErr(err)
	if he == nil || he.Status != http.StatusBadRequest || !he.has("DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID") {
		return err
	}
	return fmt.Errorf("%v: %w", he, &store.DigestMismatchError{Expected: expected, Actual: "(as the registry hashed it)", Size: size})
}

// detailDigest finds a digest in an error's detail, which registries spell
// as a bare string or an object with a digest field.
func detailDigest(detail json.RawMessage) digest.Digest {
	var s string
	if json.Unmarshal(detail, &s) == nil {
		return digest.Digest(s)
	}
	var o struct {
		Digest string `json:"digest"`
	}
	if json.Unmarshal(detail, &o) == nil {
		return digest.Digest(o.Digest)
	}
	return ""
}
