//go:build !unix

package audit

import (
	"errors"
	"os"
)

func lockFile(*os.File) error {
	return errors.New("lock: audit logs need flock, which this platform lacks")
}
