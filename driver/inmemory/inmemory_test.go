package inmemory

import (
	"testing"

	"github.com/regfs/regfs/driver"
	"github.com/regfs/regfs/driver/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(*testing.T) driver.StorageDriver { return New() })
}
