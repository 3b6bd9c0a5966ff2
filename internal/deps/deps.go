//go:build tools

// Package deps pins the module's dependencies while packages are being written.
package deps

import (
	_ "github.com/alecthomas/kong"
	_ "github.com/edsrzf/mmap-go"
	_ "github.com/klauspost/cpuid/v2"
	_ "github.com/nlpodyssey/safetensors"
	_ "github.com/vbauerster/mpb/v8"
	_ "github.com/x448/float16"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/arch/arm64/arm64asm"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
