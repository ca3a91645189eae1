package remote

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/regfs/regfs/store"
)

func itoa(n int) string { return strconv.Itoa(n) }

// decodeJSON decodes a registry's answer, a *StorageError when it is not
// what the API says it is.
func decodeJSON(body []byte, v any, what string) error {
	if err := json.Unmarshal(body, v); err != nil {
		return &store.StorageError{Op: "decode", Path: what, Err: fmt.Errorf("registry sent a malformed %s: %v", what, err)}
	}
	return nil
}

// nextLink returns the target of a paginated answer's Link rel="next"
// header (RFC 5988, as distribution sends it: <url>; rel="next"), or "".
func nextLink(resp *http.Response) string {
	for _, l := range resp.Header.Values("Link") {
		for _, part := range strings.Split(l, ",") {
			part = strings.TrimSpace(part)
			if !strings.Contains(part, `rel="next"`) && !strings.Contains(part, "rel=next") {
				continue
			}
			i, j := strings.IndexByte(part, '<'), strings.IndexByte(part, '>')
			if i >= 0 && j > i {
				return part[i+1 : j]
			}
		}
	}
	return ""
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
