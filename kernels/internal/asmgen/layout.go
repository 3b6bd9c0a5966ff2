package main

import (
	"bytes"
	"fmt"
	"log"
	"strings"
)

// A parameter block the assembly reads and writes: one list of fields gives
// both the Go type (written into the generated declarations) and the
// offsets the generated code uses, for 64-bit targets (amd64, arm64), so no
// offset is kept by hand. The package's layout tests compare the Go
// compiler's offsets with the generated table.
type field struct {
	name, typ string // a blank name pads
	doc       string
}

type layout struct {
	name, doc string
	fields    []field
	off       map[string]int
}

// sizeAlign is the size and alignment of the Go types the blocks use.
func sizeAlign(typ string) (int, int) {
	n := 1
	for strings.HasPrefix(typ, "[") {
		i := strings.Index(typ, "]")
		var k int
		fmt.Sscanf(typ[1:i], "%d", &k)
		n *= k
		typ = typ[i+1:]
	}
	var sz int
	switch {
	case strings.HasPrefix(typ, "*"), typ == "int", typ == "uintptr":
		sz = 8
	case typ == "uint32", typ == "int32", typ == "float32":
		sz = 4
	default:
		log.Fatalf("layout: unknown type %s", typ)
	}
	return n * sz, sz
}

func newLayout(name, doc string, fields ...field) *layout {
	l := &layout{name: name, doc: doc, fields: fields, off: map[string]int{}}
	off := 0
	for _, f := range fields {
		sz, al := sizeAlign(f.typ)
		off = (off + al - 1) &^ (al - 1)
		if f.name != "_" {
			l.off[f.name] = off
		}
		off += sz
	}
	return l
}

// at is the offset of the named field.
func (l *layout) at(name string) int {
	off, ok := l.off[name]
	if !ok {
		log.Fatalf("layout %s: no field %s", l.name, name)
	}
	return off
}

// goDecl writes the Go type and its offset table (name + "Layout").
func (l *layout) goDecl(b *bytes.Buffer) {
	fmt.Fprintf(b, "\n// %s\ntype %s struct {\n", l.doc, l.name)
	for _, f := range l.fields {
		if f.doc != "" {
			fmt.Fprintf(b, "\t// %s\n", strings.ReplaceAll(f.doc, "\n", "\n\t// "))
		}
		fmt.Fprintf(b, "\t%s %s\n", f.name, f.typ)
	}
	fmt.Fprintf(b, "}\n\n// %sLayout is the offset of each field of %s the assembly uses.\n", l.name, l.name)
	fmt.Fprintf(b, "var %sLayout = []struct {\n\tname string\n\toff  uintptr\n}{\n", l.name)
	for _, f := range l.fields {
		if f.name != "_" {
			fmt.Fprintf(b, "\t{%q, %d},\n", f.name, l.off[f.name])
		}
	}
	b.WriteString("}\n")
}
