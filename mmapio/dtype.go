// Package mmapio owns safetensors files on disk: finding a model's shards, parsing and
// validating headers, mapping tensor data zero-copy, releasing pages, and writing output.
//
// Reading never maps data to parse a header: headers are read with pread and checked
// more strictly than github.com/nlpodyssey/safetensors does (duplicate keys, UTF-8, FP8
// and the other newer dtypes, dense offsets). Writing streams: every output shard is
// created up front with its header and its data space reserved, tensors are written at
// fixed offsets with pwrite, and the model directory appears atomically on Commit.
package mmapio

// dtypeBits is the size in bits of one element of every dtype the safetensors format
// defines (Rust crate safetensors 0.6). The engine decides which of them it merges.
var dtypeBits = map[string]int64{
	"BOOL":    8,
	"F4":      4,
	"F6_E2M3": 6,
	"F6_E3M2": 6,
	"U8":      8,
	"I8":      8,
	"F8_E5M2": 8,
	"F8_E4M3": 8,
	"F8_E8M0": 8,
	"I16":     16,
	"U16":     16,
	"F16":     16,
	"BF16":    16,
	"I32":     32,
	"U32":     32,
	"F32":     32,
	"C64":     64,
	"F64":     64,
	"I64":     64,
	"U64":     64,
}

// DTypeBits returns the size in bits of one element of a safetensors dtype, and false
// for a dtype the format does not define.
func DTypeBits(dtype string) (int64, bool) {
	b, ok := dtypeBits[dtype]
	return b, ok
}

// DTypeSize returns the size in bytes of one element, or 0 for an unknown dtype or a
// sub-byte one (F4, F6_*), whose tensors are sized by bits.
func DTypeSize(dtype string) int64 {
	b := dtypeBits[dtype]
	if b%8 != 0 {
		return 0
	}
	return b / 8
}
