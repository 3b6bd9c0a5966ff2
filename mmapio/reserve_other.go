//go:build !linux

package mmapio

import "os"

// reserve extends f to its final size (sparse: no fallocate on this system).
func reserve(f *os.File, size int64) error { return f.Truncate(size) }
