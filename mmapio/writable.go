package mmapio

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrReadOnly is matched (errors.Is) by CheckWritable's error for a directory
// that this process cannot write to.
var ErrReadOnly = errors.New("read-only")

// readOnlyError says why a directory cannot be written; it wraps the errno.
type readOnlyError struct {
	dir, why string
	errno    error
}

func (e *readOnlyError) Error() string        { return e.dir + " is read-only: it " + e.why }
func (e *readOnlyError) Unwrap() error        { return e.errno }
func (e *readOnlyError) Is(target error) bool { return target == ErrReadOnly }

// CheckWritable reports whether this process may create files in dir, by
// access(2) with the effective ids: a read-only file system (EROFS) or
// missing permission (EACCES, EPERM) gives an error saying "<dir> is
// read-only" and why, so that it can be told before any free-space check.
// Other failures (dir missing, not a directory) are returned as they are.
func CheckWritable(dir string) error {
	err := unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK, unix.AT_EACCESS)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EROFS):
		return &readOnlyError{dir: dir, why: "is on a read-only file system", errno: err}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return &readOnlyError{dir: dir, why: "is not writable by this user", errno: err}
	}
	return fmt.Errorf("%s: %w", dir, err)
}
