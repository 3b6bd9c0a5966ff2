//go:build !noasm

package kernels

import (
	"testing"
	"unsafe"
)

// TestTiesArgsLayout holds the parameter block to the offsets asmgen wrote
// into the assembly.
func TestTiesArgsLayout(t *testing.T) {
	var a tiesArgs
	got := [...]uintptr{unsafe.Offsetof(a.models), unsafe.Offsetof(a.thr), unsafe.Offsetof(a.w),
		unsafe.Offsetof(a.kept), unsafe.Offsetof(a.zero), unsafe.Offsetof(a.base), unsafe.Offsetof(a.dst),
		unsafe.Offsetof(a.lambda), unsafe.Offsetof(a.idx), unsafe.Offsetof(a.eq), unsafe.Offsetof(a.equal)}
	if got != tiesArgsOffsets {
		t.Fatalf("tiesArgs offsets %v, the assembly uses %v", got, tiesArgsOffsets)
	}
}
