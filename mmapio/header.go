package mmapio

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"unicode/utf8"
)

// MaxHeaderLen bounds the JSON header of a safetensors file, as the reference
// implementation does (100 MB): a bigger length prefix means a corrupt or foreign file.
const MaxHeaderLen = 100_000_000

// Tensor locates one tensor's data inside a shard.
type Tensor struct {
	Name   string
	DType  string  // as in the header: "F32", "F16", "BF16", "I64", "F8_E4M3", ...
	Shape  []int64 // every dimension ≥ 0; empty for a scalar
	File   string  // shard path
	Offset int64   // absolute offset of the first data byte within File
	Size   int64   // bytes
}

// Elements is the product of the shape (1 for a scalar).
func (t *Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Header is a parsed and validated safetensors header.
type Header struct {
	File      string
	HeaderLen int64 // bytes of JSON after the 8-byte length prefix, padding included
	DataStart int64 // 8 + HeaderLen
	FileSize  int64
	Tensors   []*Tensor // ordered by offset (header order among empty tensors)
	Metadata  map[string]string
}

// ReadHeader reads the header of the safetensors file r of the given size with two
// preads (length prefix, then JSON) and validates it against the size; file names the
// file in errors. It never reads tensor data.
func ReadHeader(r io.ReaderAt, size int64, file string) (*Header, error) {
	if size == 0 {
		return nil, fmt.Errorf("%s: empty file, not a safetensors file", file)
	}
	if size < 8 {
		return nil, fmt.Errorf("%s: file is %d bytes, too small for a safetensors header", file, size)
	}
	var pre [8]byte
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, fmt.Errorf("%s: reading header length: %w", file, err)
	}
	n := binary.LittleEndian.Uint64(pre[:])
	if n > MaxHeaderLen {
		return nil, fmt.Errorf("%s: header length %d is absurd (limit %d): not a safetensors file or corrupt", file, n, MaxHeaderLen)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("%s: header length %d runs past the end of the file (%d bytes): truncated or corrupt", file, n, size)
	}
	js := make([]byte, n)
	if _, err := r.ReadAt(js, 8); err != nil {
		return nil, fmt.Errorf("%s: reading %d-byte header: %w", file, n, err)
	}
	return ParseHeader(file, js, size)
}

// ParseHeader parses the JSON header js (the bytes after the length prefix) of a
// safetensors file of fileSize bytes and checks everything the format promises: valid
// UTF-8 and JSON, no duplicate keys, known dtypes, natural-number shapes whose byte
// size matches the data offsets, and offsets that tile the data section exactly.
func ParseHeader(file string, js []byte, fileSize int64) (*Header, error) {
	h := &Header{File: file, HeaderLen: int64(len(js)), DataStart: 8 + int64(len(js)), FileSize: fileSize}
	if len(js) == 0 {
		return nil, fmt.Errorf("%s: empty header", file)
	}
	if len(js) > MaxHeaderLen {
		return nil, fmt.Errorf("%s: header length %d is absurd (limit %d)", file, len(js), MaxHeaderLen)
	}
	dataLen := fileSize - h.DataStart
	if dataLen < 0 {
		return nil, fmt.Errorf("%s: header length %d runs past the end of the file (%d bytes)", file, len(js), fileSize)
	}
	if !utf8.Valid(js) {
		i := 0
		for i < len(js) {
			r, w := utf8.DecodeRune(js[i:])
			if r == utf8.RuneError && w <= 1 {
				break
			}
			i += w
		}
		return nil, fmt.Errorf("%s: header has invalid UTF-8 at byte %d", file, 8+i)
	}
	p := &hdrParser{file: file, dec: json.NewDecoder(bytes.NewReader(js))}
	p.dec.UseNumber()
	raw, meta, err := p.parse()
	if err != nil {
		return nil, err
	}
	h.Metadata = meta
	if err := h.place(raw, dataLen); err != nil {
		return nil, err
	}
	return h, nil
}

// rawTensor is one header entry before its offsets are checked.
type rawTensor struct {
	t          *Tensor
	begin, end int64
}

// place checks each tensor's size and range, then that the sorted tensors tile
// [0, dataLen) with neither gap nor overlap.
func (h *Header) place(raw []rawTensor, dataLen int64) error {
	file := h.File
	for _, r := range raw {
		t := r.t
		bits := dtypeBits[t.DType]
		elems := int64(1)
		for _, d := range t.Shape {
			if d != 0 && elems > math.MaxInt64/d {
				return fmt.Errorf("%s: tensor %q: shape %v overflows", file, t.Name, t.Shape)
			}
			elems *= d
		}
		if elems > math.MaxInt64/bits {
			return fmt.Errorf("%s: tensor %q: shape %v of %s overflows", file, t.Name, t.Shape, t.DType)
		}
		nbits := elems * bits
		if nbits%8 != 0 {
			return fmt.Errorf("%s: tensor %q: shape %v of %s is not a whole number of bytes", file, t.Name, t.Shape, t.DType)
		}
		if r.end < r.begin {
			return fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] end before they begin", file, t.Name, r.begin, r.end)
		}
		if r.end > dataLen {
			return fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] out of range: the data section has %d bytes (file size %d, header %d): the file is truncated or corrupt",
				file, t.Name, r.begin, r.end, dataLen, h.FileSize, h.HeaderLen)
		}
		if r.end-r.begin != nbits/8 {
			return fmt.Errorf("%s: tensor %q: shape %v of %s needs %d bytes but data_offsets [%d, %d] hold %d",
				file, t.Name, t.Shape, t.DType, nbits/8, r.begin, r.end, r.end-r.begin)
		}
		t.Offset = h.DataStart + r.begin
		t.Size = r.end - r.begin
	}
	sort.SliceStable(raw, func(i, j int) bool {
		a, b := raw[i], raw[j]
		return a.begin < b.begin || (a.begin == b.begin && a.end < b.end)
	})
	pos := int64(0)
	for i, r := range raw {
		switch {
		case r.begin > pos && i == 0:
			return fmt.Errorf("%s: tensor %q: gap of %d bytes before the first tensor (data_offsets [%d, %d])", file, r.t.Name, r.begin, r.begin, r.end)
		case r.begin > pos:
			p := raw[i-1]
			return fmt.Errorf("%s: gap of %d bytes between tensor %q [%d, %d] and tensor %q [%d, %d]",
				file, r.begin-pos, p.t.Name, p.begin, p.end, r.t.Name, r.begin, r.end)
		case r.begin < pos:
			p := raw[i-1]
			return fmt.Errorf("%s: tensors %q [%d, %d] and %q [%d, %d] overlap", file, p.t.Name, p.begin, p.end, r.t.Name, r.begin, r.end)
		}
		pos = r.end
	}
	if pos != dataLen {
		what := "no tensors"
		if len(raw) > 0 {
			what = fmt.Sprintf("the last tensor %q ends at %d", raw[len(raw)-1].t.Name, pos)
		}
		return fmt.Errorf("%s: file size %d != 8 + header %d + data %d (%s): truncated, padded or corrupt",
			file, h.FileSize, h.HeaderLen, pos, what)
	}
	h.Tensors = make([]*Tensor, len(raw))
	for i, r := range raw {
		h.Tensors[i] = r.t
	}
	return nil
}

// hdrParser walks the header's JSON tokens, which is what lets it see duplicate
// keys that decoding into a map would silently merge.
type hdrParser struct {
	file string
	dec  *json.Decoder
}

func (p *hdrParser) syntax(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: header is not valid JSON: %w", p.file, err)
}

func (p *hdrParser) token() (json.Token, error) {
	t, err := p.dec.Token()
	if err != nil {
		return nil, p.syntax(err)
	}
	return t, nil
}

// open reads the opening delimiter of an object or array.
func (p *hdrParser) open(want json.Delim, what string) error {
	t, err := p.token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		kind := "an object"
		if want == '[' {
			kind = "an array"
		}
		return fmt.Errorf("%s: %s: expected %s, found %s", p.file, what, kind, describe(t))
	}
	return nil
}

// close reads the closing delimiter after the last element (More returned false).
func (p *hdrParser) close() error {
	_, err := p.token()
	return err
}

func (p *hdrParser) parse() ([]rawTensor, map[string]string, error) {
	if err := p.open('{', "header"); err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	var raw []rawTensor
	var meta map[string]string
	for p.dec.More() {
		t, err := p.token()
		if err != nil {
			return nil, nil, err
		}
		key := t.(string) // the decoder only yields strings as object keys
		if seen[key] {
			if key == "__metadata__" {
				return nil, nil, fmt.Errorf("%s: duplicate key \"__metadata__\" in header", p.file)
			}
			return nil, nil, fmt.Errorf("%s: tensor %q: duplicate tensor name in header", p.file, key)
		}
		seen[key] = true
		if key == "__metadata__" {
			if meta, err = p.metadata(); err != nil {
				return nil, nil, err
			}
			continue
		}
		r, err := p.tensor(key)
		if err != nil {
			return nil, nil, err
		}
		raw = append(raw, r)
	}
	if err := p.close(); err != nil {
		return nil, nil, err
	}
	if t, err := p.dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, p.syntax(err)
		}
		return nil, nil, fmt.Errorf("%s: header has data after its JSON object: %s", p.file, describe(t))
	}
	return raw, meta, nil
}

func (p *hdrParser) metadata() (map[string]string, error) {
	if err := p.open('{', `"__metadata__"`); err != nil {
		return nil, err
	}
	meta := map[string]string{}
	for p.dec.More() {
		t, err := p.token()
		if err != nil {
			return nil, err
		}
		key := t.(string)
		if _, dup := meta[key]; dup {
			return nil, fmt.Errorf("%s: duplicate key %q in \"__metadata__\"", p.file, key)
		}
		v, err := p.token()
		if err != nil {
			return nil, err
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%s: \"__metadata__\" %q: expected a string, found %s", p.file, key, describe(v))
		}
		meta[key] = s
	}
	return meta, p.close()
}

func (p *hdrParser) tensor(name string) (rawTensor, error) {
	fail := func(format string, a ...any) (rawTensor, error) {
		return rawTensor{}, fmt.Errorf("%s: tensor %q: %s", p.file, name, fmt.Sprintf(format, a...))
	}
	t := &Tensor{Name: name, File: p.file}
	r := rawTensor{t: t}
	if err := p.open('{', fmt.Sprintf("tensor %q", name)); err != nil {
		return r, err
	}
	var haveDType, haveShape, haveOffsets bool
	for p.dec.More() {
		tok, err := p.token()
		if err != nil {
			return r, err
		}
		switch key := tok.(string); key {
		case "dtype":
			if haveDType {
				return fail(`duplicate key "dtype"`)
			}
			haveDType = true
			v, err := p.token()
			if err != nil {
				return r, err
			}
			s, ok := v.(string)
			if !ok {
				return fail(`"dtype": expected a string, found %s`, describe(v))
			}
			if _, ok := dtypeBits[s]; !ok {
				return fail("unknown dtype %q", s)
			}
			t.DType = s
		case "shape":
			if haveShape {
				return fail(`duplicate key "shape"`)
			}
			haveShape = true
			if t.Shape, err = p.ints(name, "shape"); err != nil {
				return r, err
			}
		case "data_offsets":
			if haveOffsets {
				return fail(`duplicate key "data_offsets"`)
			}
			haveOffsets = true
			offs, err := p.ints(name, "data_offsets")
			if err != nil {
				return r, err
			}
			if len(offs) != 2 {
				return fail(`"data_offsets" must have 2 elements, has %d`, len(offs))
			}
			r.begin, r.end = offs[0], offs[1]
		default:
			return fail("unexpected key %q (a tensor has only dtype, shape and data_offsets)", key)
		}
	}
	if err := p.close(); err != nil {
		return r, err
	}
	switch {
	case !haveDType:
		return fail(`missing "dtype"`)
	case !haveShape:
		return fail(`missing "shape"`)
	case !haveOffsets:
		return fail(`missing "data_offsets"`)
	}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	return r, nil
}

// ints reads an array of natural numbers that fit an int64.
func (p *hdrParser) ints(name, what string) ([]int64, error) {
	if err := p.open('[', fmt.Sprintf("tensor %q: %q", name, what)); err != nil {
		return nil, err
	}
	var out []int64
	for p.dec.More() {
		v, err := p.token()
		if err != nil {
			return nil, err
		}
		num, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q: %q: expected natural numbers, found %s", p.file, name, what, describe(v))
		}
		s := string(num)
		for _, c := range []byte(s) {
			if c < '0' || c > '9' {
				if s[0] == '-' {
					return nil, fmt.Errorf("%s: tensor %q: %q: negative value %s", p.file, name, what, s)
				}
				return nil, fmt.Errorf("%s: tensor %q: %q: %s is not a natural number", p.file, name, what, s)
			}
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %q: %s overflows a 64-bit integer", p.file, name, what, s)
		}
		out = append(out, n)
	}
	return out, p.close()
}

// describe names a JSON token for an error message.
func describe(t json.Token) string {
	switch v := t.(type) {
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("the string %q", v)
	case json.Number:
		return "the number " + string(v)
	case bool:
		return fmt.Sprintf("%v", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", t)
}
