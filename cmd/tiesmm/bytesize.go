package main

import (
	"fmt"

	"github.com/alecthomas/kong"

	"github.com/tiesmm/tiesmm/internal/units"
)

// ByteSize is a flag holding a byte count, read by units.ParseBytes: binary
// suffixes are powers of 1024 (KiB, MiB, GiB, TiB), decimal ones powers of
// 1000 (KB, MB, GB, TB, and mergekit's K, M, B). A bare number is bytes.
type ByteSize int64

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
	v, err := units.ParseBytes(s)
	if err != nil {
		return err
	}
	*b = ByteSize(v)
	return nil
}
