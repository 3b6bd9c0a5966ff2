package main

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// lineProgress prints one line per pass: for logs and non-terminals.
type lineProgress struct {
	w     io.Writer
	name  string
	start time.Time
	done  atomic.Int64
}

func (p *lineProgress) StartPass(name string, i, n int, total int64) {
	p.name, p.start = fmt.Sprintf("pass %d of %d: %s", i, n, name), time.Now()
	p.done.Store(0)
}

func (p *lineProgress) Add(b int64) { p.done.Add(b) }

func (p *lineProgress) EndPass() {
	d := time.Since(p.start)
	fmt.Fprintf(p.w, "%s: %s in %s (%.2f GB/s)\n", p.name, gb(p.done.Load()), d.Round(time.Millisecond), gbps(p.done.Load(), d))
}

// barProgress draws a bar per pass on a terminal: bytes, GB/s, ETA.
type barProgress struct {
	w    io.Writer
	pb   *mpb.Progress
	bar  *mpb.Bar
	line lineProgress
}

func (p *barProgress) StartPass(name string, i, n int, total int64) {
	p.line.w = io.Discard
	p.line.StartPass(name, i, n, total)
	p.pb = mpb.New(mpb.WithOutput(p.w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	p.bar = p.pb.AddBar(total,
		mpb.PrependDecorators(decor.Name(fmt.Sprintf("pass %d/%d %s ", i, n, name)), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1000(0), " % .2f"), decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)),
	)
}

func (p *barProgress) Add(b int64) {
	p.line.Add(b)
	p.bar.EwmaIncrInt64(b, 0)
}

func (p *barProgress) EndPass() {
	p.bar.SetTotal(-1, true)
	p.pb.Wait()
}

func gb(b int64) string { return fmt.Sprintf("%.2f GB", float64(b)/1e9) }

func gbps(b int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(b) / 1e9 / d.Seconds()
}
