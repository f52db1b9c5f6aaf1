//go:build unix

package audit

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive, non-blocking flock on f. flock locks belong to the open file,
// so a second Open in the same process conflicts just as one in another process does.
func lockFile(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w (another process, or another Open in this one, is appending to it)", ErrLocked)
		}
		return fmt.Errorf("lock: %w", err)
	}
	return nil
}
