//go:build !noasm && !purego && gc

package kernels

import (
	"reflect"
	"testing"
)

// TestTiesArgsLayout holds the parameter block to the offsets the generator
// computed and wrote into the assembly.
func TestTiesArgsLayout(t *testing.T) {
	typ := reflect.TypeFor[tiesArgs]()
	for _, f := range tiesArgsLayout {
		sf, ok := typ.FieldByName(f.name)
		if !ok || sf.Offset != f.off {
			t.Errorf("tiesArgs.%s at offset %d (found %v), the assembly uses %d", f.name, sf.Offset, ok, f.off)
		}
	}
}
