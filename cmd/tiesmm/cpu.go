package main

import (
	"context"
	"fmt"

	"github.com/tiesmm/tiesmm/kernels"
)

type cpuCmd struct {
	Sets   bool   `help:"Print only the names of the kernel sets this CPU runs, best first."`
	Kernel string `help:"The kernel set to report as selected." env:"TIESMM_KERNEL" default:"auto"`
}

func (c *cpuCmd) Run(context.Context) error {
	if c.Sets {
		for _, s := range kernels.Available() {
			fmt.Println(s.Name)
		}
		return nil
	}
	fmt.Print(kernels.CPUReport(c.Kernel))
	return nil
}
