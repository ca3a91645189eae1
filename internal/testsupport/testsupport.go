// Package testsupport holds the test helpers that several packages' tests
// share, so that each exists once. It imports nothing of regfs (the store's
// own tests use it); helpers that need regfs packages live in its
// subpackages.
package testsupport

import (
	"errors"
	"fmt"
	"testing"

	"github.com/docker/libtrust"
)

// SignSchema1 signs a schema1 manifest's payload with each key, as docker
// 1.x clients did (a libtrust JWS under "signatures"), and returns the
// signed manifest.
func SignSchema1(tb testing.TB, payload []byte, keys ...libtrust.PrivateKey) []byte {
	tb.Helper()
	js, err := libtrust.NewJSONSignature(payload)
	if err != nil {
		tb.Fatal(err)
	}
	for _, k := range keys {
		if err := js.Sign(k); err != nil {
			tb.Fatal(err)
		}
	}
	signed, err := js.PrettySignature("signatures")
	if err != nil {
		tb.Fatal(err)
	}
	return signed
}

// VerifySchema1 verifies a signed schema1 manifest's signatures and returns
// its payload (the canonical bytes its digest is computed over) and the IDs
// of the keys that signed it. A manifest without a signature is an error.
func VerifySchema1(b []byte) (payload []byte, keyIDs []string, err error) {
	js, err := libtrust.ParsePrettySignature(b, "signatures")
	if err != nil {
		return nil, nil, fmt.Errorf("parsing JWS: %w", err)
	}
	keys, err := js.Verify()
	if err != nil {
		return nil, nil, fmt.Errorf("verifying signatures: %w", err)
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("no signature")
	}
	for _, k := range keys {
		keyIDs = append(keyIDs, k.KeyID())
	}
	payload, err = js.Payload()
	if err != nil {
		return nil, nil, err
	}
	return payload, keyIDs, nil
}
