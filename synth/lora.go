package synth

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// loraRole is the folder of the synthetic adapter.
const loraRole = "lora1"

// loraTargets are the projections an adapter adapts: every linear layer.
var loraTargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// writeLora writes dir/lora1, a PEFT LoRA adapter of the base with rank r on
// every projection (float32 factors, lora_alpha 2r): A's values have unit
// spread, B's are sized so that s·B·A changes W by about the fine-tunes'
// task vectors.
func writeLora(dir string, ts []*tensorSpec, r int, seed uint64, force bool) (ModelSummary, error) {
	path := filepath.Join(dir, loraRole)
	sum := ModelSummary{Role: loraRole, Path: path, DType: kernels.F32.String(), Shards: 1}
	if _, err := os.Stat(path); err == nil && !force {
		return sum, fmt.Errorf("synth: %s exists (use --force to replace it)", path)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return sum, fmt.Errorf("synth: %w", err)
	}
	type factor struct {
		t     *tensorSpec
		which string
		shape []int64
	}
	var fs []factor
	var outs []mmapio.OutTensor
	for _, t := range ts {
		proj := t.name[strings.LastIndex(strings.TrimSuffix(t.name, ".weight"), ".")+1 : len(t.name)-len(".weight")]
		if t.layer < 0 || !slices.Contains(loraTargets, proj) {
			continue
		}
		module := "base_model.model." + strings.TrimSuffix(t.name, ".weight")
		out, in := t.shape[0], t.shape[1]
		for _, f := range []factor{{t, "lora_A", []int64{int64(r), in}}, {t, "lora_B", []int64{out, int64(r)}}} {
			fs = append(fs, f)
			outs = append(outs, mmapio.OutTensor{Name: module + "." + f.which + ".weight", DType: "F32", Shape: f.shape})
		}
	}
	layout, err := mmapio.PlanLayout(outs, 0)
	if err != nil {
		return sum, fmt.Errorf("synth: %s: %w", path, err)
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": loraTargets, "bias": "none",
		"lora_dropout": 0.0, "fan_in_fan_out": false, "use_rslora": false, "use_dora": false,
		"base_model_name_or_path": filepath.Join(dir, "base"), "task_type": "CAUSAL_LM",
	}, "", "  ")
	if err != nil {
		return sum, err
	}
	if err := os.WriteFile(filepath.Join(path, "adapter_config.json"), append(cfg, '\n'), 0o644); err != nil {
		return sum, fmt.Errorf("synth: %w", err)
	}
	f, err := os.Create(filepath.Join(path, "adapter_model.safetensors"))
	if err != nil {
		return sum, fmt.Errorf("synth: %w", err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	sh := &layout.Shards[0]
	hdr := sh.Header()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	w.Write(n[:])
	w.Write(hdr)
	var buf [4]byte
	for k, fc := range fs {
		key := mix64(seed*golden ^ hashString(outs[k].Name))
		scale := 1.0
		if fc.which == "lora_B" { // s·Σₖ B·A ≈ 2·√r·σ_B: the task vectors' size
			scale = float64(fc.t.unit) / (2 * math.Sqrt(float64(r)))
		}
		count := fc.shape[0] * fc.shape[1]
		for i := range count {
			v := float32((2*unit01(at(key, i)) - 1) * math.Sqrt(3) * scale)
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			w.Write(buf[:])
		}
		sum.Bytes += 4 * count
		sum.Tensors++
	}
	if err := w.Flush(); err != nil {
		return sum, fmt.Errorf("synth: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return sum, fmt.Errorf("synth: %s: %w", path, err)
	}
	return sum, nil
}
