//go:build !linux

package mmapio

import "os"

// startWriteback is a no-op here: Commit's fsync does all the writing.
func startWriteback(*os.File) {}
