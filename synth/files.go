package synth

import (
	"encoding/json"
	"fmt"

	"github.com/tiesmm/tiesmm/kernels"
)

// The small files of a Hugging Face Llama checkpoint. They are plausible
// enough for loaders that peek at them (architecture, dtype, shapes); the
// tokenizer is a byte-level BPE with 259 ids and no merges.

type llamaConfig struct {
	Architectures         []string    `json:"architectures"`
	AttentionBias         bool        `json:"attention_bias"`
	AttentionDropout      float64     `json:"attention_dropout"`
	BosTokenID            int         `json:"bos_token_id"`
	EosTokenID            int         `json:"eos_token_id"`
	HeadDim               int64       `json:"head_dim"`
	HiddenAct             string      `json:"hidden_act"`
	HiddenSize            int64       `json:"hidden_size"`
	InitializerRange      float64     `json:"initializer_range"`
	IntermediateSize      int64       `json:"intermediate_size"`
	MaxPositionEmbeddings int         `json:"max_position_embeddings"`
	MLPBias               bool        `json:"mlp_bias"`
	ModelType             string      `json:"model_type"`
	NumAttentionHeads     int64       `json:"num_attention_heads"`
	NumHiddenLayers       int64       `json:"num_hidden_layers"`
	NumKeyValueHeads      int64       `json:"num_key_value_heads"`
	PretrainingTP         int         `json:"pretraining_tp"`
	RMSNormEps            float64     `json:"rms_norm_eps"`
	RopeScaling           any         `json:"rope_scaling"`
	RopeTheta             float64     `json:"rope_theta"`
	TieWordEmbeddings     bool        `json:"tie_word_embeddings"`
	TorchDtype            string      `json:"torch_dtype"`
	TransformersVersion   string      `json:"transformers_version"`
	UseCache              bool        `json:"use_cache"`
	VocabSize             int64       `json:"vocab_size"`
	Synth                 synthRecord `json:"tiesmm_synth"`
}

// synthRecord says where a checkpoint came from (extra config keys are
// kept, not rejected, by transformers).
type synthRecord struct {
	Role string `json:"role"` // "base" or "ftN"
	Seed uint64 `json:"seed"`
}

func configJSON(a Arch, dt kernels.DType, role string, seed uint64) ([]byte, error) {
	c := llamaConfig{
		Architectures: []string{"LlamaForCausalLM"},
		BosTokenID:    1, EosTokenID: 2,
		HeadDim:               a.HeadDim,
		HiddenAct:             "silu",
		HiddenSize:            a.Hidden,
		InitializerRange:      0.02,
		IntermediateSize:      a.Intermediate,
		MaxPositionEmbeddings: 4096,
		ModelType:             "llama",
		NumAttentionHeads:     a.Heads,
		NumHiddenLayers:       a.Layers,
		NumKeyValueHeads:      a.KVHeads,
		PretrainingTP:         1,
		RMSNormEps:            1e-5,
		RopeTheta:             10000,
		TorchDtype:            dt.TorchName(),
		TransformersVersion:   "4.44.0",
		UseCache:              true,
		VocabSize:             a.Vocab,
		Synth:                 synthRecord{Role: role, Seed: seed},
	}
	return marshal(c)
}

func marshal(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("synth: encoding JSON: %w", err)
	}
	return append(b, '\n'), nil
}

var generationConfig = []byte(`{
  "_from_model_config": true,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "transformers_version": "4.44.0"
}
`)

var specialTokensMap = []byte(`{
  "bos_token": "<s>",
  "eos_token": "</s>",
  "unk_token": "<unk>"
}
`)

var tokenizerConfig = []byte(`{
  "add_bos_token": true,
  "add_eos_token": false,
  "added_tokens_decoder": {
    "0": {"content": "<unk>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true},
    "1": {"content": "<s>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true},
    "2": {"content": "</s>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}
  },
  "bos_token": "<s>",
  "clean_up_tokenization_spaces": false,
  "eos_token": "</s>",
  "model_max_length": 4096,
  "pad_token": null,
  "tokenizer_class": "PreTrainedTokenizerFast",
  "unk_token": "<unk>"
}
`)

// byteLevelAlphabet is GPT-2's bytes_to_unicode: printable bytes map to
// themselves, the rest to code points from 256 up.
func byteLevelAlphabet() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	Lstrip     bool   `json:"lstrip"`
	Rstrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// tokenizerJSON is the tokenizer of the 259 ids, plus the special tokens
// extra after them.
func tokenizerJSON(extra []string) ([]byte, error) {
	special := []string{"<unk>", "<s>", "</s>"}
	vocab := map[string]int{}
	var added []addedToken
	for i, s := range special {
		vocab[s] = i
		added = append(added, addedToken{ID: i, Content: s, Special: true})
	}
	for b, r := range byteLevelAlphabet() {
		vocab[string(r)] = len(special) + b
	}
	for i, s := range extra {
		added = append(added, addedToken{ID: baseTokens + i, Content: s, Special: true})
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	return marshal(map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     nil,
		"pre_tokenizer":  byteLevel,
		"post_processor": nil,
		"decoder":        byteLevel,
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": "<unk>",
			"continuing_subword_prefix": nil, "end_of_word_suffix": nil,
			"fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": []string{},
		},
	})
}

// baseTokens is the number of ids of the tiny tokenizer.
const baseTokens = 259

// addedTokens are the special tokens fine-tune role adds when each adds n:
// "<|tool|>", which every fine-tune adds, then n − 1 of its own.
func addedTokens(role string, n int) []string {
	if n <= 0 || role == "base" {
		return nil
	}
	toks := []string{"<|tool|>"}
	for i := 1; i < n; i++ {
		toks = append(toks, fmt.Sprintf("<|%s_%d|>", role, i))
	}
	return toks
}

// sideFiles returns the small files of one model directory; a fine-tune's
// tokenizer adds the tokens extra.
func sideFiles(a Arch, dt kernels.DType, role string, seed uint64, extra []string) (map[string][]byte, error) {
	cfg, err := configJSON(a, dt, role, seed)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizerJSON(extra)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"config.json":             cfg,
		"generation_config.json":  generationConfig,
		"tokenizer.json":          tok,
		"tokenizer_config.json":   tokenizerConfig,
		"special_tokens_map.json": specialTokensMap,
	}, nil
}
