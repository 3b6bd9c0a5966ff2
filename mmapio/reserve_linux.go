package mmapio

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reserve gives f its final size with the blocks allocated, so ENOSPC shows now;
// where the file system cannot preallocate, the file is extended sparse.
func reserve(f *os.File, size int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, 0, size)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
			return f.Truncate(size)
		}
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
}
