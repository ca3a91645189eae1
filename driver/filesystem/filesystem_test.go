package filesystem

import (
	"testing"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(t *testing.T) driver.StorageDriver {
		d, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
