package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tiesmm/tiesmm/internal/units"
)

// progress shows a merge's passes on stderr, one line per pass:
//
//	[2/3] merge  [=========>          ]  47%  1.8/3.9 GB  1.4 GB/s  ETA 1s
//
// On a terminal the line is redrawn in place and its bar fits the width
// (a narrow terminal shortens the bar, never the figures); elsewhere (a
// pipe, a CI log) the same line is printed when the pass begins, every few
// seconds, and when it ends.
type progress struct {
	w     io.Writer
	tty   bool
	width func() int    // the terminal's columns (tty only)
	every time.Duration // between redraws, or between lines off a terminal

	phase        string
	index, count int
	total        int64
	start        time.Time
	done         atomic.Int64

	mu   sync.Mutex // serializes drawing
	stop chan struct{}
	wg   sync.WaitGroup
}

func (p *progress) StartPass(phase string, index, count int, total int64) {
	p.phase, p.index, p.count, p.total = phase, index, count, total
	p.start = time.Now()
	p.done.Store(0)
	p.stop = make(chan struct{})
	if !p.tty {
		p.draw(false) // a log shows when each pass began
	}
	p.wg.Add(1)
	go p.tick(p.stop)
}

func (p *progress) Add(b int64) { p.done.Add(b) }

func (p *progress) EndPass() {
	close(p.stop)
	p.wg.Wait()
	p.draw(true)
}

func (p *progress) tick(stop chan struct{}) {
	defer p.wg.Done()
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.draw(false)
		}
	}
}

// draw writes the line: in place on a terminal (a newline once the pass
// ends), as a line of its own elsewhere.
func (p *progress) draw(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	width := 80
	if p.tty && p.width != nil {
		if w := p.width(); w > 0 {
			width = w
		}
	}
	line := progressLine(p.phase, p.index, p.count, p.done.Load(), p.total, time.Since(p.start), final, width-1)
	switch {
	case !p.tty:
		fmt.Fprintln(p.w, line)
	case final:
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", line)
	default:
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	}
}

// progressLine formats one pass's state in at most width columns when the
// figures fit: the bar takes what they leave, and goes below minBar.
func progressLine(phase string, index, count int, done, total int64, took time.Duration, final bool, width int) string {
	if total < done {
		total = done
	}
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	speed := 0.0
	if s := took.Seconds(); s > 0 {
		speed = float64(done) / s
	}
	eta := "ETA -"
	switch {
	case final:
		eta = "in " + shortDuration(took)
	case speed > 0 && done > 0:
		eta = "ETA " + shortDuration(time.Duration(float64(total-done)/speed*float64(time.Second)))
	}
	head := fmt.Sprintf("[%d/%d] %-6s", index, count, phase)
	tail := fmt.Sprintf("%3.0f%%  %s  %s/s  %s", 100*frac, doneOfTotal(done, total), units.FormatDecimal(int64(speed)), eta)
	room := width - len(head) - len(tail) - 4 // spaces and brackets
	if room < minBar {
		return head + "  " + tail
	}
	bar := min(room, maxBar)
	fill := int(frac * float64(bar))
	b := strings.Repeat("=", fill)
	if fill < bar {
		b += ">" + strings.Repeat(" ", bar-fill-1)
	}
	return head + " [" + b + "] " + tail
}

const (
	minBar = 10
	maxBar = 40
)

// doneOfTotal prints "1.8/3.9 GB" in the unit that suits the total.
func doneOfTotal(done, total int64) string {
	unit, name := 1e9, "GB"
	if total < 1e9 {
		unit, name = 1e6, "MB"
	}
	return fmt.Sprintf("%.1f/%.1f %s", float64(done)/unit, float64(total)/unit, name)
}

// shortDuration prints 0.4s, 12s, 3m05s, 1h02m.
func shortDuration(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
