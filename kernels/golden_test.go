package kernels

import (
	"encoding/binary"
	"math"
	"testing"
)

// Hand-worked cases. Three models' task vectors over four elements:
//
//	τ1 = [ 1, -2,  3, 0]
//	τ2 = [-3,  1,  3, 0]
//	τ3 = [ 1,  1, -4, 0]
//
// Sums: e0 = -1 (elects -), e1 = 0 (zero sum: provisionally +), e2 = 2 (+),
// e3 = 0 with every value 0 (no vote, no zero-sum).
var goldenTaus = []float32{
	1, -2, 3, 0,
	-3, 1, 3, 0,
	1, 1, -4, 0,
}

func TestVoteGolden(t *testing.T) {
	ones := []float32{1, 1, 1}
	w := []float32{1, 0.5, 2}
	cases := []struct {
		name  string
		p     VoteParams
		want  []float32
		stats VoteStats
	}{
		// e0: agreeing {-3} → -3. e1: + → {1, 1} → 1. e2: + → {3, 3} → 3. e3: 0/1.
		{"paper mean", VoteParams{Weights: ones}, []float32{-3, 1, 3, 0},
			VoteStats{Positive: 1, Negative: 1, ZeroSum: 1, Conflicts: 3}},
		// Sums of agreeing values: -3, 1+1, 3+3.
		{"sum", VoteParams{Weights: ones, Aggregate: AggregateSum}, []float32{-3, 2, 6, 0},
			VoteStats{Positive: 1, Negative: 1, ZeroSum: 1, Conflicts: 3}},
		// Largest agreeing magnitude times the sign: -3, 1, 3.
		{"max", VoteParams{Weights: ones, Aggregate: AggregateMax}, []float32{-3, 1, 3, 0},
			VoteStats{Positive: 1, Negative: 1, ZeroSum: 1, Conflicts: 3}},
		// Sign counts: e0 +1-1+1 = 1 → {1, 1} → 1; e1 -1+1+1 = 1 → {1, 1} → 1;
		// e2 +1+1-1 = 1 → {3, 3} → 3.
		{"count", VoteParams{Weights: ones, Consensus: ConsensusCount}, []float32{1, 1, 3, 0},
			VoteStats{Positive: 3, Conflicts: 3}},
		// mergekit, w = [1, .5, 2], vote on u = w·τ:
		// e0 u = [1, -1.5, 2], Σ 1.5 → + → (1+2)/(1+2) = 1.
		// e1 u = [-2, .5, 2], Σ .5 → + → (.5+2)/(.5+2) = 1.
		// e2 u = [3, 1.5, -8], Σ -3.5 → - → -8/2 = -4.
		{"mergekit", VoteParams{Weights: w, WeightedVote: true, DivideByWeights: true}, []float32{1, 1, -4, 0},
			VoteStats{Positive: 2, Negative: 1, Conflicts: 3}},
		// mergekit normalize: false sums u: 3, 2.5, -8.
		{"mergekit sum", VoteParams{Weights: w, WeightedVote: true, Aggregate: AggregateSum}, []float32{3, 2.5, -8, 0},
			VoteStats{Positive: 2, Negative: 1, Conflicts: 3}},
		// peft, vote on τ, weights after, divide by count:
		// e0 - → {.5·-3}/1 = -1.5; e1 + → (.5·1 + 2·1)/2 = 1.25; e2 + → (3 + 1.5)/2 = 2.25.
		{"peft", VoteParams{Weights: w}, []float32{-1.5, 1.25, 2.25, 0},
			VoteStats{Positive: 1, Negative: 1, ZeroSum: 1, Conflicts: 3}},
		// Task arithmetic: no vote, Σ w·τ: 1-1.5+2, -2+.5+2, 3+1.5-8, 0.
		{"linear sum", VoteParams{Weights: w, Consensus: ConsensusNone, Aggregate: AggregateSum}, []float32{1.5, 0.5, -3.5, 0},
			VoteStats{Conflicts: 3}},
		// Normalized: divided by Σw = 3.5.
		{"linear mean", VoteParams{Weights: w, Consensus: ConsensusNone, DivideByWeights: true},
			[]float32{1.5 / 3.5, 0.5 / 3.5, -3.5 / 3.5, 0}, VoteStats{Conflicts: 3}},
	}
	for _, s := range Available() {
		for _, c := range cases {
			out := make([]float32, 4)
			st := s.Vote(out, goldenTaus, 4, &c.p)
			for i := range out {
				if math.Float32bits(out[i]) != math.Float32bits(c.want[i]) {
					t.Errorf("%s %s: out = %v, want %v", s.Name, c.name, out, c.want)
					break
				}
			}
			if st != c.stats {
				t.Errorf("%s %s: stats = %+v, want %+v", s.Name, c.name, st, c.stats)
			}
		}
	}
}

func TestZeroSumsGolden(t *testing.T) {
	var got []int
	ZeroSums(goldenTaus, 4, 4, &VoteParams{Weights: []float32{1, 1, 1}}, func(j int) { got = append(got, j) })
	if len(got) != 1 || got[0] != 1 {
		t.Fatalf("zero sums at %v, want [1]", got)
	}
}

func TestDeltaTrimGolden(t *testing.T) {
	src := make([]byte, 16)
	for i, v := range []float32{1.5, -2, 3.5, -4} {
		binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(v))
	}
	base := []float32{0.5, 0, 0.5, 0} // τ = [1, -2, 3, -4]
	cases := []struct {
		thr  float32
		want []float32
		kept int
	}{
		{2.5, []float32{0, 0, 3, -4}, 2},
		{2, []float32{0, -2, 3, -4}, 3}, // |τ| = threshold is kept
		{0, []float32{1, -2, 3, -4}, 4},
		{5, []float32{0, 0, 0, 0}, 0},
	}
	for _, s := range Available() {
		for _, c := range cases {
			tau := make([]float32, 4)
			kept := s.DeltaTrim(tau, src, F32, base, math.Float32bits(c.thr))
			for i := range tau {
				if math.Float32bits(tau[i]) != math.Float32bits(c.want[i]) || kept != c.kept {
					t.Errorf("%s thr %v: τ = %v kept %d, want %v kept %d", s.Name, c.thr, tau, kept, c.want, c.kept)
					break
				}
			}
		}
	}
}

func TestFinishGolden(t *testing.T) {
	// θ₀ + λ·τₘ with λ = 2, then bf16 rounding to nearest even:
	// 1 + 2·2⁻⁹ = 1 + 2⁻⁸ is halfway between 1 (0x3f80) and 1+2⁻⁷ (0x3f81): even → 0x3f80.
	// 1 + 2·3·2⁻⁹ = 1 + 3·2⁻⁸ is halfway between 0x3f81 and 0x3f82: even → 0x3f82.
	// 1 + 2·2⁻⁸ = 1 + 2⁻⁷ exactly: 0x3f81.
	base := []float32{1, 1, 1}
	tm := []float32{0x1p-9, 3 * 0x1p-9, 0x1p-8}
	want := []uint16{0x3f80, 0x3f82, 0x3f81}
	for _, s := range Available() {
		dst := make([]byte, 6)
		s.Finish(dst, BF16, base, tm, 2)
		for i, w := range want {
			if got := binary.LittleEndian.Uint16(dst[2*i:]); got != w {
				t.Errorf("%s: element %d = %#04x, want %#04x", s.Name, i, got, w)
			}
		}
		// F16: 1 + 2⁻¹¹ is halfway between 1 (0x3c00) and 1+2⁻¹⁰ (0x3c01): even → 0x3c00.
		s.Finish(dst[:2], F16, base[:1], []float32{0x1p-12}, 2)
		if got := binary.LittleEndian.Uint16(dst); got != 0x3c00 {
			t.Errorf("%s: f16 = %#04x, want 0x3c00", s.Name, got)
		}
	}
}
