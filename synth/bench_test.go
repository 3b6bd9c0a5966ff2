package synth

import "testing"

type discard struct{}

func (discard) WriteTensor(string, int64, []byte) error { return nil }

// BenchmarkFill measures value generation alone (no I/O), in bytes of
// tensor data over base + 3 fine-tunes.
func BenchmarkFill(b *testing.B) {
	for _, dt := range []string{"bf16", "f16", "f32"} {
		b.Run(dt, func(b *testing.B) {
			_, ts, ms, err := plan(Options{Params: 20_000_000, Models: 3, DType: dt})
			if err != nil {
				b.Fatal(err)
			}
			outs := make([]tensorWriter, len(ms))
			var total int64
			for i, m := range ms {
				outs[i] = discard{}
				for _, t := range ts {
					total += dataBytes(t, m)
				}
			}
			b.SetBytes(total)
			for b.Loop() {
				if err := fill(ts, ms, outs, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
