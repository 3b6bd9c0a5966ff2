package kernels

import "testing"

// Every spelling safetensors, PyTorch and mergekit users write for a dtype.
func TestParseDTypeSpellings(t *testing.T) {
	for _, c := range []struct {
		want  DType
		names []string
	}{
		{F32, []string{"float32", "fp32", "f32", "float", "torch.float32", "torch.float", "F32", "FP32", "Float32", "TORCH.FLOAT32", " fp32 "}},
		{F16, []string{"float16", "fp16", "f16", "half", "torch.float16", "torch.half", "F16", "FP16", "Half"}},
		{BF16, []string{"bfloat16", "bf16", "torch.bfloat16", "BF16", "BFloat16", "Bf16"}},
	} {
		for _, s := range c.names {
			d, err := ParseDType(s)
			if err != nil || d != c.want {
				t.Errorf("ParseDType(%q) = %v, %v; want %v", s, d, err, c.want)
			}
		}
	}
	for _, s := range []string{"", "float64", "f64", "int8", "fp8", "torch.", "torch.int32", "bfloat", "float8_e4m3fn", "F8_E4M3"} {
		if d, err := ParseDType(s); err == nil {
			t.Errorf("ParseDType(%q) = %v, want an error", s, d)
		}
	}
	for d, want := range map[DType]string{F32: "float32", F16: "float16", BF16: "bfloat16"} {
		if got := d.TorchName(); got != want {
			t.Errorf("%v.TorchName() = %q, want %q", d, got, want)
		}
		if back, err := ParseDType(d.TorchName()); err != nil || back != d {
			t.Errorf("ParseDType(%q) = %v, %v", d.TorchName(), back, err)
		}
		if back, err := ParseDType(d.String()); err != nil || back != d {
			t.Errorf("ParseDType(%q) = %v, %v", d.String(), back, err)
		}
	}
}
