package mmapio

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// CheckWritable says why files cannot be created in dir, if they cannot.
func CheckWritable(dir string) error {
	err := unix.Access(dir, unix.W_OK)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("%s is on a read-only file system", dir)
	case errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s is not writable by this user", dir)
	}
	return fmt.Errorf("%s: %w", dir, err)
}
