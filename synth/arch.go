package synth

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Arch is the Llama-style shape chosen for a parameter budget.
type Arch struct {
	Hidden       int64 // hidden_size
	Intermediate int64 // intermediate_size (MLP)
	Layers       int64 // num_hidden_layers
	Heads        int64 // num_attention_heads
	KVHeads      int64 // num_key_value_heads
	HeadDim      int64
	Vocab        int64 // vocab_size: rows of embed_tokens and lm_head
	Params       int64 // float parameters actually laid out
}

func (a Arch) String() string {
	return fmt.Sprintf("hidden %d, intermediate %d, layers %d, heads %d (kv %d, dim %d), vocab %d, %s params",
		a.Hidden, a.Intermediate, a.Layers, a.Heads, a.KVHeads, a.HeadDim, a.Vocab, FormatParams(a.Params))
}

const (
	defaultVocab = 32000
	minVocab     = 384 // room for the tiny tokenizer's 259 ids
	maxHidden    = 1 << 16
)

// headDim follows Llama: 128 from hidden 2048 up, 64 below (and smaller
// powers of two when an odd hidden size forces it).
func headDim(h int64) int64 {
	d := int64(64)
	if h >= 2048 {
		d = 128
	}
	for d > 1 && h%d != 0 {
		d /= 2
	}
	return d
}

// intermediate is Llama's 256·⌈(8/3·h)/256⌉ (11008 for 4096), with a
// multiple of 64 below hidden 2048 so small models stay ≈ 2.7×hidden.
func intermediate(h int64) int64 {
	m := int64(64)
	if h >= 2048 {
		m = 256
	}
	return (8*h + 3*m - 1) / (3 * m) * m
}

func kvHeads(h int64) int64 {
	heads := h / headDim(h)
	if h >= 8192 && heads%8 == 0 { // grouped-query attention, as Llama 2 70B
		return 8
	}
	return heads
}

// perLayer counts one decoder layer: q,o (h×h), k,v (kv·d×h), gate,up,down
// (i×h), two norms (h).
func perLayer(h int64) int64 {
	kv := kvHeads(h) * headDim(h)
	return 2*h*h + 2*kv*h + 3*intermediate(h)*h + 2*h
}

// DeriveArch picks the shape for o.Params (and the embedding overrides),
// plausibly like published Llama configs: layers ≈ hidden/128, vocab 32000
// unless the embeddings would take more than half the budget (tiny models),
// then as many layers as fill the budget.
func DeriveArch(o Options) (Arch, error) {
	P := o.Params
	if P <= 0 {
		return Arch{}, fmt.Errorf("synth: parameter count must be positive, got %d", P)
	}
	if o.EmbedRows < 0 || o.EmbedCols < 0 {
		return Arch{}, fmt.Errorf("synth: negative embedding override %d×%d", o.EmbedRows, o.EmbedCols)
	}
	vocabFor := func(h int64) int64 {
		if o.EmbedRows > 0 {
			return o.EmbedRows
		}
		v := int64(defaultVocab)
		if 2*v*h > P/2 {
			v = max(minVocab, P/(4*h)/64*64)
		}
		return v
	}
	h := o.EmbedCols
	if h == 0 {
		h = 64
		for {
			// Steps keep head_dim 128 dividing hidden from 2048 up, and the
			// head count a multiple of 8 (for 8 kv heads) from 8192 up.
			step := int64(64)
			switch {
			case h >= 8192:
				step = 1024
			case h >= 2048:
				step = 128
			}
			n := h + step
			if n > maxHidden {
				break
			}
			layers := max(2, float64(n)/128)
			if float64(2*vocabFor(n)*n)+layers*float64(perLayer(n)) > float64(P) {
				break
			}
			h = n
		}
	}
	a := Arch{Hidden: h, Intermediate: intermediate(h), HeadDim: headDim(h), KVHeads: kvHeads(h), Vocab: vocabFor(h)}
	a.Heads = h / a.HeadDim
	fixed := 2*a.Vocab*h + h
	a.Layers = max(1, int64(math.Round(float64(P-fixed)/float64(perLayer(h)))))
	a.Params = fixed + a.Layers*perLayer(h)
	return a, nil
}

// ParseParams reads a parameter count: a plain integer or a decimal number
// with a K, M, B (or G) or T suffix, powers of 1000: "1M", "50M", "1.5B", "7B".
func ParseParams(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult = 1e3
		case 'm', 'M':
			mult = 1e6
		case 'b', 'B', 'g', 'G':
			mult = 1e9
		case 't', 'T':
			mult = 1e12
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("synth: parameter count %q: want a number with an optional K/M/B/T suffix", s)
	}
	v := math.Round(f * mult)
	if v < 1 || v > 1e15 {
		return 0, fmt.Errorf("synth: parameter count %q out of range (1 .. 1e15)", s)
	}
	return int64(v), nil
}

// FormatParams writes n the way ParseParams reads it, to three digits.
func FormatParams(n int64) string {
	f := float64(n)
	for _, u := range []struct {
		s string
		v float64
	}{{"T", 1e12}, {"B", 1e9}, {"M", 1e6}, {"K", 1e3}} {
		if f >= u.v {
			return strconv.FormatFloat(f/u.v, 'g', 3, 64) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}
