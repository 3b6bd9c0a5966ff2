package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/kernels/kernelbench"
)

type benchCmd struct {
	Quick  bool     `help:"bf16 with N = 3 only, short timings: a few seconds."`
	Kernel []string `help:"Kernel sets to measure (default: every set this CPU runs)."`
	DType  []string `name:"dtype" help:"Stored dtypes (default: bf16, f16, f32)."`
	Models []int    `help:"Numbers of fine-tunes N (default: 2, 3, 8)."`
	RAM    ByteSize `name:"ram-size" help:"Input bytes of the RAM-sized runs (default 256MiB)."`
	JSON   bool     `name:"json" help:"Print the results as JSON."`
}

func (b *benchCmd) Run(context.Context) error {
	opts := kernelbench.Options{Quick: b.Quick, Sets: b.Kernel, Models: b.Models, RAMBytes: int64(b.RAM)}
	for _, d := range b.DType {
		dt, err := kernels.ParseDType(d)
		if err != nil {
			return err
		}
		opts.DTypes = append(opts.DTypes, dt)
	}
	if !b.JSON {
		opts.Progress = func(what string) { fmt.Fprintf(os.Stderr, "\r\033[K%s", what) }
	}
	res, err := kernelbench.Run(opts)
	if !b.JSON {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if err != nil {
		return err
	}
	if b.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return kernelbench.WriteTable(os.Stdout, res)
}
