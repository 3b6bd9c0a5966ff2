package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
)

// ByteSize is a flag holding a byte count. Binary suffixes are powers of
// 1024 (KiB, MiB, GiB, TiB); decimal ones powers of 1000 (KB, MB, GB, TB, and
// mergekit's K, M, B for thousand, million, billion). A bare number is bytes.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12}, {"b", 1e9},
}

// ParseByteSize reads "2GiB", "512MiB", "5GB", "5B" (mergekit: 5 billion), "1048576".
func ParseByteSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%q is not a size (examples: 2GiB, 512MiB, 5GB)", s)
	case math.IsNaN(v):
		return 0, fmt.Errorf("%q is not a size: not a number (examples: 2GiB, 512MiB, 5GB)", s)
	case v < 0:
		return 0, fmt.Errorf("%q is not a size: sizes cannot be negative", s)
	case err != nil || math.IsInf(v, 0) || v*mult > maxByteSize:
		return 0, fmt.Errorf("%q is too large a size (at most 4EiB)", s)
	}
	return int64(v * mult), nil
}

// maxByteSize is the largest size ParseByteSize takes: 4 EiB, well inside int64.
const maxByteSize = 1 << 62

// minShardSize is the smallest --out-shard-size: a tensor larger than the
// bound gets a shard of its own, so a tiny bound would write a file per
// tensor, thousands for some models.
const minShardSize = 1 << 20

// checkSizes refuses merge sizes that mean nothing: a zero or negative bound
// on memory (0 is not "unbounded" here), and output shards under
// minShardSize.
func (m *mergeCmd) checkSizes() error {
	if m.MaxMemory <= 0 {
		return fmt.Errorf("--max-memory %d: want a positive size (examples: 2GiB, 512MiB)", m.MaxMemory)
	}
	if m.OutShardSize < minShardSize {
		return fmt.Errorf("--out-shard-size %d: want at least %d bytes (1MiB): a tensor larger than a shard gets one of its own, so a smaller bound writes a file per tensor",
			m.OutShardSize, minShardSize)
	}
	return nil
}

func (b *ByteSize) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("size", &s); err != nil {
		return err
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = ByteSize(v)
	return nil
}
