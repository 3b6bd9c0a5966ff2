//go:build !linux

package mmapio

import "errors"

// exchange has no one-rename form here: moveIntoPlace falls back to two.
func exchange(a, b string) error { return errExchangeUnsupported }

var errExchangeUnsupported = errors.New("atomic exchange not supported")
