package synth

import (
	"fmt"
	"math"

	"github.com/tiesmm/tiesmm/internal/units"
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

// ParseParams reads a parameter count with units.ParseCount ("1M", "50M",
// "1.5B", "7B") and checks it is between 1 and 1e15.
func ParseParams(s string) (int64, error) {
	n, err := units.ParseCount(s)
	if err != nil {
		return 0, fmt.Errorf("synth: parameter count: %w", err)
	}
	if n < 1 || n > 1e15 {
		return 0, fmt.Errorf("synth: parameter count %q out of range (1 .. 1e15)", s)
	}
	return n, nil
}

// FormatParams writes n the way ParseParams reads it, to three digits.
func FormatParams(n int64) string { return units.FormatCount(n) }
