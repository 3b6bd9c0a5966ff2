package inspect

import (
	"regexp"
	"strconv"
	"strings"
)

var layerRE = regexp.MustCompile(`\.layers\.(\d+)\.`)

// LayerOf is the layer number of a tensor name (the first `.layers.N.`), or
// -1 for tensors outside the layers.
func LayerOf(name string) int {
	m := layerRE.FindStringSubmatch(name)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// The module kinds, in the order the table and the page show them.
var moduleOrder = []string{"embed", "q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj",
	"gate_proj", "up_proj", "gate_up_proj", "down_proj", "norm", "lm_head", "other"}

// moduleNames maps a name component to its module kind. Llama's names come
// first, then the usual spellings of other families (GPT-2, Falcon, Phi,
// Mixtral's experts, T5).
var moduleNames = map[string]string{
	"q_proj": "q_proj", "query": "q_proj", "wq": "q_proj", "q": "q_proj",
	"k_proj": "k_proj", "key": "k_proj", "wk": "k_proj", "k": "k_proj",
	"v_proj": "v_proj", "value": "v_proj", "wv": "v_proj", "v": "v_proj",
	"o_proj": "o_proj", "out_proj": "o_proj", "wo": "o_proj", "dense": "o_proj", "o": "o_proj",
	"qkv_proj": "qkv_proj", "c_attn": "qkv_proj", "query_key_value": "qkv_proj", "wqkv": "qkv_proj", "Wqkv": "qkv_proj",
	"gate_proj": "gate_proj", "w1": "gate_proj",
	"up_proj": "up_proj", "w3": "up_proj", "c_fc": "up_proj", "fc1": "up_proj", "dense_h_to_4h": "up_proj",
	"gate_up_proj": "gate_up_proj",
	"down_proj":    "down_proj", "w2": "down_proj", "fc2": "down_proj", "dense_4h_to_h": "down_proj",
	"embed_tokens": "embed", "wte": "embed", "wpe": "embed", "word_embeddings": "embed", "embed_in": "embed", "tok_embeddings": "embed",
	"lm_head": "lm_head", "embed_out": "lm_head", "output": "lm_head",
}

// ModuleOf is a tensor's module kind: embed, q_proj, k_proj, v_proj,
// qkv_proj (fused), o_proj, gate_proj, up_proj, gate_up_proj (fused),
// down_proj, norm, lm_head, or other.
func ModuleOf(name string) string {
	parts := strings.Split(name, ".")
	// The last component that names a kind wins (…mlp.c_proj is GPT-2's
	// down projection, …attn.c_proj its output projection).
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		if strings.Contains(strings.ToLower(p), "norm") || p == "ln_1" || p == "ln_2" || p == "ln_f" {
			return "norm"
		}
		if p == "c_proj" && i > 0 {
			if strings.Contains(parts[i-1], "mlp") {
				return "down_proj"
			}
			return "o_proj"
		}
		if p == "dense" && i > 0 && !strings.Contains(parts[i-1], "attention") {
			continue // "dense" is an output projection only under attention
		}
		if k, ok := moduleNames[p]; ok {
			return k
		}
	}
	return "other"
}

// moduleRank orders module kinds as moduleOrder lists them.
func moduleRank(m string) int {
	for i, k := range moduleOrder {
		if k == m {
			return i
		}
	}
	return len(moduleOrder)
}
