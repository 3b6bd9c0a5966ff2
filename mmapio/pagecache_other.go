//go:build !linux

package mmapio

import "os"

// startWriteback is a no-op here: Commit's fsync does all the writing.
func startWriteback(*os.File) {}

// Prefetch is a no-op here; mappings still get madvise(WILLNEED).
func Prefetch(path string, off, n int64) {}

// PrefetchFile is a no-op here.
func PrefetchFile(f *os.File, off, n int64) {}

// adviseLargeFolios is a no-op here.
func adviseLargeFolios([]byte) {}
