package synth

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync"

	"github.com/tiesmm/tiesmm/kernels"
)

// Every value is a pure function of (seed, tensor name, model, element index):
// element i of a stream is wyrand's i-th output from the stream's key (a Weyl
// sequence through one 64×64→128 multiply), so any chunk can be made by any
// worker in any order and the bytes never depend on scheduling. Products are
// wrapped in float32() wherever a sum follows, since Go may otherwise fuse
// them into FMA on some architectures and change the bytes.

const (
	golden = 0x9E3779B97F4A7C15
	wyA    = 0xa0761d6478bd642f
	wyB    = 0xe7037ed1a0b428db
)

// mix64 is splitmix64's finaliser, for deriving keys.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

func wymix(s uint64) uint64 {
	hi, lo := bits.Mul64(s, s^wyB)
	return hi ^ lo
}

// at is element i of the stream key.
func at(key uint64, i int64) uint64 { return wymix(key + uint64(i+1)*wyA) }

func hashString(s string) uint64 { // FNV-1a, then mixed
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return mix64(h)
}

// unit01 maps 53 bits of h to [0, 1).
func unit01(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// normTable()[k] is the standard normal quantile at (k+½)/65536: 16 random bits
// become a normal value (bounded at ±4.33) with one load from a 256 KB table
// that stays in L2. It is computed once, on first use (not at start-up,
// which every merge would pay), with math.Erfinv (pure Go; the table was
// checked identical on amd64 and arm64), and never written again.
var normTable = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for k := range t {
		p := (float64(k) + 0.5) / (1 << 16)
		t[k] = float32(math.Sqrt2 * math.Erfinv(2*p-1))
	}
	return &t
})

// Task-vector recipe, in units of the tensor's τ unit u:
//
//	τᵢ = u·(dᵢ + sᵢ + a·c + S)
//
// dᵢ dense normal noise of model i, c a dense normal component shared by
// every fine-tune (pairwise sign agreement 1/2 + asin(a²/(1+a²))/π ≈ 2/3 for
// a = 1), sᵢ a sparse large change of model i (probability pOwn) and S a
// sparse large change shared by all (probability pShared); sparse magnitudes
// are uniform in [sparseMin, sparseMin+sparseSpan) with a random sign. Dense
// terms are bounded at |dᵢ + a·c| < 8.7 and rarely pass 5.
//
// Bits: one 64-bit draw gives the base values of 4 consecutive elements
// (16 bits each), or the dense value and sparse selector of 2 elements
// (16 + 16 bits each, in the low and high halves); element e uses draw
// e/4 or e/2 of its stream, so chunks (multiples of 4) are independent.
const (
	sharedCoef = 1.0
	pOwn16     = 655 // ≈ 1.0% of elements, as a 16-bit threshold
	pShared16  = 262 // ≈ 0.4%
	sparseMin  = 8
	sparseSpan = 12
)

// Probabilities exposed for tests and docs.
const (
	SparseOwnFraction    = float64(pOwn16) / 65536
	SparseSharedFraction = float64(pShared16) / 65536
)

type kind uint8

const (
	kEmbed kind = iota
	kQ
	kK
	kV
	kO
	kGate
	kUp
	kDown
	kInNorm
	kPostNorm
	kNorm
	kHead
	kIntBuf
)

// tauOffset is log10 of the τ unit relative to the tensor's value spread, per
// kind: embeddings move least, MLP down projections and norms most, as in
// real fine-tunes; with the layer ramp and jitter it spreads scales over
// more than 10× between tensors.
var tauOffset = [...]float64{
	kEmbed: -0.9, kQ: -0.5, kK: -0.5, kV: 0, kO: 0,
	kGate: -0.2, kUp: -0.1, kDown: 0.1,
	kInNorm: 0.5, kPostNorm: 0.5, kNorm: 0.5, kHead: -0.4,
}

const (
	tauBase   = -2.2 // log10 of the typical τ unit over the value spread
	layerRamp = 0.5  // later layers change more: + up to this many decades
	jitter    = 0.2  // ± decades, per tensor
	normStd   = 0.05 // spread of norm weights around 1
)

// tensorSpec is one tensor and the constants of its value streams.
type tensorSpec struct {
	name  string
	kind  kind
	layer int64 // −1 outside the layers
	shape []int64
	n     int64 // elements

	mean, sigma float32 // base θ₀ = mean + sigma·z, z standard normal
	unit        float32 // τ unit
	key         uint64  // per-tensor key; streams derive from it
}

func (t *tensorSpec) isInt() bool { return t.kind == kIntBuf }

// Stream selectors mixed into the tensor key.
const (
	streamBase = iota + 1
	streamShared
	streamSharedSparse
	streamModel // + 2·model
	streamModelSparse
)

func (t *tensorSpec) stream(s uint64) uint64 { return mix64(t.key ^ mix64(s*golden)) }

func (t *tensorSpec) modelStream(m int) (dense, sparse uint64) {
	return t.stream(streamModel + 2*uint64(m)), t.stream(streamModelSparse + 2*uint64(m))
}

// IntBufferName is the I64 tensor added by Options.IntBuffer.
const IntBufferName = "model.rotary_emb.inv_freq_steps"

// specs lists the tensors of a model of shape a, in Hugging Face order.
func specs(a Arch, seed uint64, intBuf bool) []*tensorSpec {
	h, i, kv := a.Hidden, a.Intermediate, a.KVHeads*a.HeadDim
	var ts []*tensorSpec
	add := func(name string, k kind, layer int64, shape ...int64) {
		ts = append(ts, &tensorSpec{name: name, kind: k, layer: layer, shape: shape})
	}
	add("model.embed_tokens.weight", kEmbed, -1, a.Vocab, h)
	for l := int64(0); l < a.Layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"self_attn.q_proj.weight", kQ, l, h, h)
		add(p+"self_attn.k_proj.weight", kK, l, kv, h)
		add(p+"self_attn.v_proj.weight", kV, l, kv, h)
		add(p+"self_attn.o_proj.weight", kO, l, h, h)
		add(p+"mlp.gate_proj.weight", kGate, l, i, h)
		add(p+"mlp.up_proj.weight", kUp, l, i, h)
		add(p+"mlp.down_proj.weight", kDown, l, h, i)
		add(p+"input_layernorm.weight", kInNorm, l, h)
		add(p+"post_attention_layernorm.weight", kPostNorm, l, h)
	}
	add("model.norm.weight", kNorm, -1, h)
	add("lm_head.weight", kHead, -1, a.Vocab, h)
	if intBuf {
		add(IntBufferName, kIntBuf, -1, a.HeadDim/2)
	}
	for _, t := range ts {
		t.n = 1
		for _, d := range t.shape {
			t.n *= d
		}
		t.key = mix64(seed*golden ^ hashString(t.name))
		if t.isInt() {
			continue
		}
		j := at(t.key, -1)
		jit := 2*unit01(j) - 1 // per-tensor jitter in [−1, 1)
		var spread float64     // the value spread τ scales with
		switch t.kind {
		case kInNorm, kPostNorm, kNorm:
			t.mean, t.sigma = 1, normStd
			spread = normStd
		default:
			// Trained Llama weights sit near 1/√fan_in; ±25% per tensor.
			fanIn := t.shape[len(t.shape)-1]
			t.sigma = float32((1 + 0.25*jit) / math.Sqrt(float64(fanIn)))
			spread = float64(t.sigma)
		}
		e := tauBase + tauOffset[t.kind] + jitter*(2*unit01(mix64(j))-1)
		if t.layer >= 0 && a.Layers > 1 {
			e += layerRamp * float64(t.layer) / float64(a.Layers-1)
		}
		t.unit = float32(spread * math.Pow(10, e))
	}
	return ts
}

// chunkBuf is one worker's scratch for a chunk of elements.
type chunkBuf struct {
	base   []float32 // θ₀ as stored (rounded to the base dtype)
	shared []float32 // a·c + S, in τ units
	vals   []float32 // a fine-tune's values before rounding
	out    []byte
}

func newChunkBuf(n int) *chunkBuf {
	return &chunkBuf{base: make([]float32, n), shared: make([]float32, n), vals: make([]float32, n), out: make([]byte, 4*n)}
}

// bf16 rounds to nearest even like kernels.F32ToBF16, without its NaN branch:
// every value made here is finite.
func bf16(f float32) uint16 {
	u := math.Float32bits(f)
	return uint16((u + 0x7fff + (u >> 16 & 1)) >> 16)
}

// f16 rounds to nearest even like kernels.F32ToF16 (overflow to ±Inf,
// subnormals kept), for finite f only, without the scalar library call.
func f16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	a := u & 0x7fffffff
	switch {
	case a >= 0x477ff000: // ≥ 65520: rounds to Inf
		return sign | 0x7c00
	case a >= 0x38800000: // normal in f16: rebias the exponent by 127 − 15
		a -= 112 << 23
		return sign | uint16((a+0xfff+(a>>13&1))>>13)
	case a >= 0x33000000: // subnormal in f16: mantissa · 2^−24
		shift := 126 - a>>23
		full := a&0x7fffff | 0x800000
		return sign | uint16((full+(1<<(shift-1))-1+(full>>shift&1))>>shift)
	}
	return sign
}

// encode stores v in dt, little-endian, into dst and returns the bytes.
func encode(dst []byte, dt kernels.DType, v []float32) []byte {
	switch dt {
	case kernels.BF16:
		dst = dst[:2*len(v)]
		for j, f := range v {
			binary.LittleEndian.PutUint16(dst[2*j:], bf16(f))
		}
	case kernels.F16:
		dst = dst[:2*len(v)]
		for j, f := range v {
			binary.LittleEndian.PutUint16(dst[2*j:], f16(f))
		}
	default:
		dst = dst[:4*len(v)]
		for j, f := range v {
			binary.LittleEndian.PutUint32(dst[4*j:], math.Float32bits(f))
		}
	}
	return dst
}

// fillBase computes θ₀ for elements [start, start+n) into b.base (rounded
// to dt), the shared component into b.shared, and returns the base's bytes
// (in b.out). start is a multiple of 4.
func (t *tensorSpec) fillBase(b *chunkBuf, start int64, n int, dt kernels.DType) []byte {
	normTab := normTable()
	base, shared := b.base[:n], b.shared[:n]
	kb, ks, kss := t.stream(streamBase), t.stream(streamShared), t.stream(streamSharedSparse)
	mean, sigma := t.mean, t.sigma
	x := kb + uint64(start/4)*wyA // Weyl state before the chunk's first draw
	quads := n &^ 3
	for j := 0; j < quads; j += 4 {
		x += wyA
		h := wymix(x)
		q := base[j : j+4 : j+4]
		q[0] = mean + float32(sigma*normTab[uint16(h)])
		q[1] = mean + float32(sigma*normTab[uint16(h>>16)])
		q[2] = mean + float32(sigma*normTab[uint16(h>>32)])
		q[3] = mean + float32(sigma*normTab[uint16(h>>48)])
	}
	if quads < n {
		h := wymix(x + wyA)
		for j := quads; j < n; j++ {
			base[j] = mean + float32(sigma*normTab[uint16(h>>(16*(j-quads)))])
		}
	}
	out := t.roundBase(b, n, dt)

	x = ks + uint64(start/2)*wyA
	pairs := n &^ 1
	for j := 0; j < pairs; j += 2 {
		x += wyA
		h := wymix(x)
		c0, c1 := float32(sharedCoef*normTab[uint16(h)]), float32(sharedCoef*normTab[uint16(h>>32)])
		if uint16(h>>16) < pShared16 {
			c0 += sparseAt(kss, start+int64(j))
		}
		if uint16(h>>48) < pShared16 {
			c1 += sparseAt(kss, start+int64(j)+1)
		}
		sh := shared[j : j+2 : j+2]
		sh[0], sh[1] = c0, c1
	}
	if pairs < n {
		h := wymix(x + wyA)
		c := float32(sharedCoef * normTab[uint16(h)])
		if uint16(h>>16) < pShared16 {
			c += sparseAt(kss, start+int64(pairs))
		}
		shared[pairs] = c
	}
	return out
}

// roundBase rounds b.base[:n] in place to dt and encodes it into b.out, in
// one pass.
func (t *tensorSpec) roundBase(b *chunkBuf, n int, dt kernels.DType) []byte {
	base := b.base[:n]
	switch dt {
	case kernels.BF16:
		out := b.out[:2*n]
		pairs := n &^ 1
		for j := 0; j < pairs; j += 2 {
			bb := base[j : j+2 : j+2]
			r0, r1 := bf16(bb[0]), bf16(bb[1])
			bb[0], bb[1] = math.Float32frombits(uint32(r0)<<16), math.Float32frombits(uint32(r1)<<16)
			binary.LittleEndian.PutUint32(out[2*j:], uint32(r0)|uint32(r1)<<16)
		}
		if pairs < n {
			r := bf16(base[pairs])
			base[pairs] = math.Float32frombits(uint32(r) << 16)
			binary.LittleEndian.PutUint16(out[2*pairs:], r)
		}
		return out
	case kernels.F16:
		out := b.out[:2*n]
		for j, v := range base {
			r := f16(v)
			base[j] = kernels.F16ToF32(r)
			binary.LittleEndian.PutUint16(out[2*j:], r)
		}
		return out
	}
	return encode(b.out, dt, base)
}

// sparseAt is the sparse change of element e of stream key. It runs for ~1%
// of elements: kept out of line so the per-element code stays small.
//
//go:noinline
func sparseAt(key uint64, e int64) float32 {
	h := at(key, e)
	m := sparseMin + float32(sparseSpan*float32(h>>40)*(1.0/(1<<24)))
	if h&1 != 0 {
		m = -m
	}
	return m
}

// fillModel encodes fine-tune m's values θ₀ + u·τ for the chunk in dt.
// Each draw serves two elements (its low and high 32 bits); the loop bodies
// are written out by hand because a helper call per element costs a third.
func (t *tensorSpec) fillModel(b *chunkBuf, start int64, n int, m int, dt kernels.DType) []byte {
	normTab := normTable()
	kd, ksp := t.modelStream(m)
	base, shared := b.base[:n], b.shared[:n]
	u := t.unit
	x := kd + uint64(start/2)*wyA
	pairs := n &^ 1
	if dt == kernels.BF16 {
		// The common case, fused: rounding in the same pass saves a pass,
		// and four elements per iteration halve the bounds checks.
		out := b.out[:2*n]
		quads := n &^ 3
		for j := 0; j < quads; j += 4 {
			x += wyA
			h0 := wymix(x)
			x += wyA
			h1 := wymix(x)
			d0, d1 := normTab[uint16(h0)], normTab[uint16(h0>>32)]
			d2, d3 := normTab[uint16(h1)], normTab[uint16(h1>>32)]
			if uint16(h0>>16) < pOwn16 {
				d0 += sparseAt(ksp, start+int64(j))
			}
			if uint16(h0>>48) < pOwn16 {
				d1 += sparseAt(ksp, start+int64(j)+1)
			}
			if uint16(h1>>16) < pOwn16 {
				d2 += sparseAt(ksp, start+int64(j)+2)
			}
			if uint16(h1>>48) < pOwn16 {
				d3 += sparseAt(ksp, start+int64(j)+3)
			}
			bb, sh := base[j:j+4:j+4], shared[j:j+4:j+4]
			// float32(): no FMA, so the same bytes on every architecture.
			v0 := bb[0] + float32(u*(d0+sh[0]))
			v1 := bb[1] + float32(u*(d1+sh[1]))
			v2 := bb[2] + float32(u*(d2+sh[2]))
			v3 := bb[3] + float32(u*(d3+sh[3]))
			binary.LittleEndian.PutUint64(out[2*j:], uint64(bf16(v0))|uint64(bf16(v1))<<16|uint64(bf16(v2))<<32|uint64(bf16(v3))<<48)
		}
		for j := quads; j < pairs; j += 2 {
			x += wyA
			h := wymix(x)
			d0, d1 := normTab[uint16(h)], normTab[uint16(h>>32)]
			if uint16(h>>16) < pOwn16 {
				d0 += sparseAt(ksp, start+int64(j))
			}
			if uint16(h>>48) < pOwn16 {
				d1 += sparseAt(ksp, start+int64(j)+1)
			}
			v0 := base[j] + float32(u*(d0+shared[j]))
			v1 := base[j+1] + float32(u*(d1+shared[j+1]))
			binary.LittleEndian.PutUint32(out[2*j:], uint32(bf16(v0))|uint32(bf16(v1))<<16)
		}
		if pairs < n {
			v := t.oddValue(b, start, n-1, x+wyA, ksp)
			binary.LittleEndian.PutUint16(out[2*pairs:], bf16(v))
		}
		return out
	}
	vals := b.vals[:n]
	for j := 0; j < pairs; j += 2 {
		x += wyA
		h := wymix(x)
		d0, d1 := normTab[uint16(h)], normTab[uint16(h>>32)]
		if uint16(h>>16) < pOwn16 {
			d0 += sparseAt(ksp, start+int64(j))
		}
		if uint16(h>>48) < pOwn16 {
			d1 += sparseAt(ksp, start+int64(j)+1)
		}
		vals[j] = base[j] + float32(u*(d0+shared[j]))
		vals[j+1] = base[j+1] + float32(u*(d1+shared[j+1]))
	}
	if pairs < n {
		vals[pairs] = t.oddValue(b, start, pairs, x+wyA, ksp)
	}
	return encode(b.out, dt, vals)
}

// oddValue is the value of the chunk's last element j when n is odd: the low
// half of the draw at Weyl state x.
func (t *tensorSpec) oddValue(b *chunkBuf, start int64, j int, x, ksp uint64) float32 {
	normTab := normTable()
	h := wymix(x)
	d := normTab[uint16(h)]
	if uint16(h>>16) < pOwn16 {
		d += sparseAt(ksp, start+int64(j))
	}
	return b.base[j] + float32(t.unit*(d+b.shared[j]))
}

// intValues is the I64 buffer of model m (0 = base): 0, 2, 4, … in the base,
// plus 1000·m in fine-tune m, so a merge that copies it from anything but
// the base is caught.
func (t *tensorSpec) intValues(m int) []byte {
	out := make([]byte, 8*t.n)
	for j := int64(0); j < t.n; j++ {
		binary.LittleEndian.PutUint64(out[8*j:], uint64(2*j+1000*int64(m)))
	}
	return out
}
