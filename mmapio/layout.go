package mmapio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// OutTensor is a tensor of the output model, before placement.
type OutTensor struct {
	Name, DType string
	Shape       []int64
}

// PlacedTensor is an output tensor with its data offsets relative to its shard's data
// start (the first byte after the header).
type PlacedTensor struct {
	OutTensor
	Begin, End int64
}

// Shard is one output file.
type Shard struct {
	FileName  string
	Tensors   []PlacedTensor
	HeaderLen int64       // JSON bytes after the 8-byte length prefix, padded to a multiple of 8
	Size      int64       // 8 + HeaderLen + data
	Metadata  [][2]string // __metadata__ entries after "format"
}

// Layout is the whole output model.
type Layout struct {
	Shards    []Shard
	TotalSize int64 // sum of tensor bytes (the index's metadata.total_size)
}

// outMetadata is the __metadata__ written in every output shard: transformers reads
// "format" to know the tensors are PyTorch's.
var outMetadata = [][2]string{{"format", "pt"}}

// PlanLayout places the tensors, in the given order, densely into shards: a new shard
// starts when the next tensor would take the current one past maxShardBytes of data
// (a bigger tensor gets a shard of its own; maxShardBytes ≤ 0 means one shard).
// Shards are named model-00001-of-0000N.safetensors, or model.safetensors alone.
func PlanLayout(tensors []OutTensor, maxShardBytes int64) (*Layout, error) {
	seen := make(map[string]bool, len(tensors))
	var groups [][]PlacedTensor
	var cur []PlacedTensor
	var pos, total int64
	for _, t := range tensors {
		if t.Name == "__metadata__" {
			return nil, fmt.Errorf("tensor %q: the name is reserved by the safetensors format", t.Name)
		}
		if !utf8.ValidString(t.Name) {
			return nil, fmt.Errorf("tensor %q: name is not valid UTF-8", t.Name)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tensor %q: listed twice in the output", t.Name)
		}
		seen[t.Name] = true
		size, err := tensorBytes(t.DType, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if total > math.MaxInt64-size {
			return nil, fmt.Errorf("tensor %q: the output model exceeds 2^63 bytes", t.Name)
		}
		total += size
		if maxShardBytes > 0 && len(cur) > 0 && pos+size > maxShardBytes {
			groups = append(groups, cur)
			cur, pos = nil, 0
		}
		cur = append(cur, PlacedTensor{OutTensor: t, Begin: pos, End: pos + size})
		pos += size
	}
	groups = append(groups, cur) // one shard even for no tensors: a valid empty model
	l := &Layout{TotalSize: total}
	for i, g := range groups {
		name := "model.safetensors"
		if len(groups) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(groups))
		}
		s := Shard{FileName: name, Tensors: g}
		hdr := s.Header()
		s.HeaderLen = int64(len(hdr))
		s.Size = 8 + s.HeaderLen + s.DataSize()
		l.Shards = append(l.Shards, s)
	}
	return l, nil
}

// SetMetadata adds entries to every shard's __metadata__, after "format".
func (l *Layout) SetMetadata(kv [][2]string) {
	for i := range l.Shards {
		s := &l.Shards[i]
		s.Metadata = kv
		s.HeaderLen = int64(len(s.Header()))
		s.Size = 8 + s.HeaderLen + s.DataSize()
	}
}

// DataSize is the bytes of tensor data in the shard.
func (s *Shard) DataSize() int64 {
	if len(s.Tensors) == 0 {
		return 0
	}
	return s.Tensors[len(s.Tensors)-1].End
}

// Header is the shard's JSON header, padded with spaces to a multiple of 8 bytes as
// the reference writer does (so the data start, 8+len, stays 8-aligned). Keys are in
// tensor order, after "__metadata__".
func (s *Shard) Header() []byte {
	var b bytes.Buffer
	b.WriteString(`{"__metadata__":{`)
	for i, kv := range append(outMetadata[:len(outMetadata):len(outMetadata)], s.Metadata...) {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, kv[0])
		b.WriteByte(':')
		writeJSONString(&b, kv[1])
	}
	b.WriteByte('}')
	for _, t := range s.Tensors {
		b.WriteByte(',')
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeJSONString(&b, t.DType)
		b.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteString(`],"data_offsets":[`)
		b.WriteString(strconv.FormatInt(t.Begin, 10))
		b.WriteByte(',')
		b.WriteString(strconv.FormatInt(t.End, 10))
		b.WriteString("]}")
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes()
}

// writeJSONString writes s as a JSON string without HTML escaping.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes (invalid UTF-8 becomes U+FFFD)
	b.Truncate(b.Len() - 1) // Encode's newline
}

// tensorBytes is the data size of a tensor, with the checks a header reader applies.
func tensorBytes(dtype string, shape []int64) (int64, error) {
	bits, ok := dtypeBits[dtype]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", dtype)
	}
	elems := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d != 0 && elems > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		elems *= d
	}
	if elems > math.MaxInt64/bits {
		return 0, fmt.Errorf("shape %v of %s overflows", shape, dtype)
	}
	if elems*bits%8 != 0 {
		return 0, fmt.Errorf("shape %v of %s is not a whole number of bytes", shape, dtype)
	}
	return elems * bits / 8, nil
}
