package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/tiesmm/tiesmm/synth"
)

type synthCmd struct {
	Dir         string   `arg:"" help:"Directory to write base/ and ft1/ … ftN/ into."`
	Params      string   `help:"Parameters per model (e.g. 1M, 50M, 1.5B)." default:"50M"`
	Models      int      `help:"Number of fine-tunes." default:"3"`
	Seed        uint64   `help:"Seed: the same options give the same bytes." default:"1"`
	DType       string   `name:"dtype" help:"Base dtype: bf16, f16 or f32." default:"bf16"`
	FtDType     []string `name:"ft-dtype" help:"Fine-tune dtype(s): one for all, or one per fine-tune."`
	ShardSize   ByteSize `name:"shard-size" help:"Cap per shard file (0: one file per model)." default:"0"`
	IntBuffer   bool     `name:"int-buffer" help:"Add an integer tensor (copied from the base by a merge)."`
	EmbedRows   int64    `name:"embed-rows" help:"Override the vocabulary rows of embed_tokens and lm_head."`
	EmbedCols   int64    `name:"embed-cols" help:"Override the hidden size of the embeddings."`
	AddedTokens int      `name:"added-tokens" help:"Special tokens each fine-tune's tokenizer adds (<|tool|>, shared, then its own)."`
	LoraRank    int      `name:"lora-rank" help:"Also write lora1/, a PEFT LoRA adapter of the base with this rank on every projection (use as base+lora1)."`
	Force       bool     `help:"Replace existing model directories."`
}

func (s *synthCmd) Run(ctx context.Context) error {
	n, err := synth.ParseParams(s.Params)
	if err != nil {
		return err
	}
	sum, err := synth.Generate(s.Dir, synth.Options{
		Params: n, Models: s.Models, Seed: s.Seed, DType: s.DType, FineTuneDTypes: s.FtDType,
		ShardBytes: int64(s.ShardSize), IntBuffer: s.IntBuffer, EmbedRows: s.EmbedRows, EmbedCols: s.EmbedCols,
		AddedTokens: s.AddedTokens, LoraRank: s.LoraRank,
		Force: s.Force,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout, strings.TrimRight(sum.String(), "\n"))
	return nil
}
