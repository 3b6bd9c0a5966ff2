package mmapio

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nlpodyssey/safetensors"
)

// fileBytes is a safetensors file with the given header (unpadded, as written) and
// dataLen bytes of data: the reader must not care who wrote it.
func fileBytes(header string, dataLen int) []byte {
	b := make([]byte, 8, 8+len(header)+dataLen)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	for i := range dataLen {
		b = append(b, byte(i*7+1))
	}
	return b
}

func writeRaw(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// badHeaders are files every reader must refuse; want are phrases the error must
// contain (besides the file name, always checked).
var badHeaders = []struct {
	name string
	file []byte
	want []string
}{
	{"empty file", []byte{}, []string{"empty file"}},
	{"short file", []byte{1, 0, 0}, []string{"too small"}},
	{"absurd header length", append(binary.LittleEndian.AppendUint64(nil, 200_000_000), "{}"...), []string{"absurd"}},
	{"header past the end", append(binary.LittleEndian.AppendUint64(nil, 1000), `{"a":{}}`...), []string{"runs past the end"}},
	{"empty header", binary.LittleEndian.AppendUint64(nil, 0), []string{"empty header"}},
	{"invalid JSON", fileBytes(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`, 4), []string{"not valid JSON"}},
	{"not an object", fileBytes(`[1,2]`, 0), []string{"expected an object"}},
	{"trailing JSON", fileBytes(`{} {}`, 0), []string{"data after its JSON object"}},
	{"trailing NULs", fileBytes("{}\x00\x00", 0), []string{"not valid JSON"}},
	{"invalid UTF-8 in a name", fileBytes("{\"w\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), []string{"invalid UTF-8 at byte 11"}},
	{"invalid UTF-8 in metadata", fileBytes("{\"__metadata__\":{\"k\":\"\xc3\"}}", 0), []string{"invalid UTF-8"}},
	{"duplicate tensor", fileBytes(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), []string{`tensor "w"`, "duplicate tensor name"}},
	{"duplicate metadata", fileBytes(`{"__metadata__":{},"__metadata__":{}}`, 0), []string{"duplicate key \"__metadata__\""}},
	{"duplicate metadata key", fileBytes(`{"__metadata__":{"a":"1","a":"2"}}`, 0), []string{`duplicate key "a"`}},
	{"duplicate field", fileBytes(`{"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, `duplicate key "dtype"`}},
	{"metadata not a string", fileBytes(`{"__metadata__":{"n":1}}`, 0), []string{`"n"`, "expected a string"}},
	{"unknown dtype", fileBytes(`{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}`, 4), []string{`tensor "w"`, `unknown dtype "F12"`}},
	{"dtype not a string", fileBytes(`{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, 4), []string{`tensor "w"`, "expected a string"}},
	{"missing shape", fileBytes(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, 4), []string{`tensor "w"`, `missing "shape"`}},
	{"extra field", fileBytes(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, 4), []string{`tensor "w"`, `unexpected key "x"`}},
	{"three offsets", fileBytes(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}`, 4), []string{`tensor "w"`, "2 elements"}},
	{"shape size mismatch", fileBytes(`{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}`, 20), []string{`tensor "w"`, "needs 24 bytes", "hold 20"}},
	{"offsets out of range", fileBytes(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), []string{`tensor "w"`, "out of range"}},
	{"offsets reversed", fileBytes(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4), []string{`tensor "w"`, "end before they begin"}},
	{"overlap", fileBytes(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6), []string{`"a" [0, 4] and "b" [2, 6] overlap`}},
	{"same offsets", fileBytes(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}`, 4), []string{`"a" [0, 4] and "b" [0, 4] overlap`}},
	{"gap", fileBytes(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, 6), []string{`gap of 2 bytes between tensor "a" [0, 2] and tensor "b" [4, 6]`}},
	{"gap first", fileBytes(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 4), []string{`tensor "a"`, "gap of 2 bytes before the first tensor"}},
	{"trailing data", fileBytes(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 5), []string{"file size 66 != 8 + header 53 + data 2", `"a"`}},
	{"data but no tensors", fileBytes(`{}`, 3), []string{"file size 13 != 8 + header 2 + data 0", "no tensors"}},
	{"negative dim", fileBytes(`{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}`, 0), []string{`tensor "w"`, "negative value -1"}},
	{"negative offset", fileBytes(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[-1,0]}}`, 0), []string{`tensor "w"`, "negative value -1"}},
	{"fractional dim", fileBytes(`{"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,0]}}`, 0), []string{`tensor "w"`, "1.5 is not a natural number"}},
	{"exponent dim", fileBytes(`{"w":{"dtype":"U8","shape":[1e2],"data_offsets":[0,100]}}`, 100), []string{`tensor "w"`, "not a natural number"}},
	{"huge dim", fileBytes(`{"w":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,0]}}`, 0), []string{`tensor "w"`, "overflows a 64-bit integer"}},
	{"overflowing shape", fileBytes(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, 0), []string{`tensor "w"`, "overflows"}},
	{"overflowing bytes", fileBytes(`{"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}`, 0), []string{`tensor "w"`, "overflows"}},
	{"half a byte", fileBytes(`{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, "whole number of bytes"}},
	{"null tensor", fileBytes(`{"w":null}`, 0), []string{`tensor "w"`, "expected an object, found null"}},
}

func TestBadHeaders(t *testing.T) {
	dir := t.TempDir()
	for _, c := range badHeaders {
		t.Run(c.name, func(t *testing.T) {
			p := writeRaw(t, dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors", c.file)
			_, err := OpenModel(p)
			if err == nil {
				t.Fatalf("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, p) {
				t.Errorf("error does not name the file %s: %v", p, err)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

func TestGoodHeaders(t *testing.T) {
	for _, c := range []struct {
		name   string
		file   []byte
		tensor []string // names in offset order
	}{
		{"no tensors", fileBytes(`{}`, 0), nil},
		{"padding", fileBytes(`{"__metadata__":{"format":"pt"}}       `, 0), nil},
		{"scalar", fileBytes(`{"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}`, 8), []string{"s"}},
		// Key order is not data order: files sorted by name are common.
		{"keys out of data order", fileBytes(`{"b":{"dtype":"I64","shape":[1],"data_offsets":[2,10]},"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}`, 10), []string{"a", "b"}},
		{"empty tensors", fileBytes(`{"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"f":{"dtype":"BOOL","shape":[0],"data_offsets":[1,1]}}`, 1), []string{"e", "x", "f"}},
		{"every dtype", fileBytes(`{"a":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F8_E8M0","shape":[1],"data_offsets":[1,2]},"c":{"dtype":"F4","shape":[2],"data_offsets":[2,3]},"d":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[3,6]},"e":{"dtype":"C64","shape":[1],"data_offsets":[6,14]},"f":{"dtype":"U64","shape":[1],"data_offsets":[14,22]}}`, 22), []string{"a", "b", "c", "d", "e", "f"}},
		{"escaped names", fileBytes(`{"\u00e9\"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), []string{"é\"x"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := ReadHeader(bytes.NewReader(c.file), int64(len(c.file)), "f.safetensors")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ts := range h.Tensors {
				got = append(got, ts.Name)
			}
			if strings.Join(got, ",") != strings.Join(c.tensor, ",") {
				t.Fatalf("tensors %q, want %q", got, c.tensor)
			}
			checkConsistent(t, c.file, h)
		})
	}
}

// The offsets are absolute and the sizes follow the shapes, hand-worked.
func TestHeaderOffsets(t *testing.T) {
	hdr := `{"b":{"dtype":"I64","shape":[1],"data_offsets":[2,10]},"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}`
	b := fileBytes(hdr, 10)
	h, err := ReadHeader(bytes.NewReader(b), int64(len(b)), "f")
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(hdr)) // 106
	if h.DataStart != 8+n || h.Tensors[0].Offset != 8+n || h.Tensors[0].Size != 2 ||
		h.Tensors[1].Offset != 8+n+2 || h.Tensors[1].Size != 8 || h.Tensors[1].Elements() != 1 {
		t.Fatalf("got %+v %+v %+v", h, *h.Tensors[0], *h.Tensors[1])
	}
	if (&Tensor{Shape: []int64{}}).Elements() != 1 || (&Tensor{Shape: []int64{3, 0, 2}}).Elements() != 0 {
		t.Fatal("Elements")
	}
}

// checkConsistent verifies what an accepted header promises, independently of the
// parser: offsets tile the data section, sizes follow shape × dtype, names are unique
// valid UTF-8; and nlpodyssey/safetensors agrees wherever it knows every dtype.
func checkConsistent(t testing.TB, file []byte, h *Header) {
	t.Helper()
	n := int64(binary.LittleEndian.Uint64(file))
	if h.HeaderLen != n || h.DataStart != 8+n || h.FileSize != int64(len(file)) {
		t.Fatalf("header length %d, data start %d, size %d for n=%d len=%d", h.HeaderLen, h.DataStart, h.FileSize, n, len(file))
	}
	pos := h.DataStart
	names := map[string]bool{}
	theirs := true
	for _, ts := range h.Tensors {
		if names[ts.Name] || !utf8.ValidString(ts.Name) || ts.Name == "__metadata__" {
			t.Fatalf("bad or duplicate name %q", ts.Name)
		}
		names[ts.Name] = true
		if ts.Offset != pos {
			t.Fatalf("tensor %q at %d, expected %d", ts.Name, ts.Offset, pos)
		}
		bits := map[string]int64{"BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
			"I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}[ts.DType]
		if bits == 0 {
			t.Fatalf("tensor %q: dtype %q accepted", ts.Name, ts.DType)
		}
		e := int64(1)
		for _, d := range ts.Shape {
			if d < 0 {
				t.Fatalf("tensor %q: shape %v", ts.Name, ts.Shape)
			}
			e *= d
		}
		if e*bits != ts.Size*8 {
			t.Fatalf("tensor %q: %v of %s in %d bytes", ts.Name, ts.Shape, ts.DType, ts.Size)
		}
		if _, err := safetensors.ParseDType(ts.DType); err != nil {
			theirs = false
		}
		pos += ts.Size
	}
	if pos != int64(len(file)) {
		t.Fatalf("data ends at %d, file has %d bytes", pos, len(file))
	}
	if !theirs {
		return
	}
	st, err := safetensors.Deserialize(file)
	if err != nil {
		t.Fatalf("accepted a file nlpodyssey/safetensors refuses: %v", err)
	}
	if st.Len() != len(h.Tensors) {
		t.Fatalf("they see %d tensors, we %d", st.Len(), len(h.Tensors))
	}
	for _, ts := range h.Tensors {
		v, ok := st.Tensor(ts.Name)
		if !ok || v.DType().String() != ts.DType || len(v.Shape()) != len(ts.Shape) || int64(v.DataLen()) != ts.Size {
			t.Fatalf("tensor %q: they see %v %v %d", ts.Name, v.DType(), v.Shape(), v.DataLen())
		}
		if ts.Size > 0 && &v.Data()[0] != &file[ts.Offset] {
			t.Fatalf("tensor %q: their data is not at offset %d", ts.Name, ts.Offset)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, c := range badHeaders {
		f.Add(c.file)
	}
	f.Add(fileBytes(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3,1],"data_offsets":[8,14]}}`, 14))
	f.Add(fileBytes(`{"b":{"dtype":"I64","shape":[1],"data_offsets":[2,10]},"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}`, 10))
	f.Add(fileBytes(`{"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"x":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}  `, 1))
	l, err := PlanLayout([]OutTensor{{"x", "F16", []int64{2, 2}}, {"y", "I64", []int64{1}}}, 0)
	if err != nil {
		f.Fatal(err)
	}
	s := l.Shards[0]
	hdr := s.Header()
	f.Add(append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(hdr))), hdr...), make([]byte, s.DataSize())...))
	f.Fuzz(func(t *testing.T, file []byte) {
		h, err := ReadHeader(bytes.NewReader(file), int64(len(file)), "fuzz.safetensors")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.safetensors") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		checkConsistent(t, file, h)
	})
}
