package merge

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// traceMatches reports whether the steps the engine took for a tensor are
// those of its strategy (fallbacks after a missed sample included).
func traceMatches(s Strategy, steps []string) bool {
	if s.Solo {
		if len(steps) == 0 || steps[0] != "solo" {
			return false
		}
		steps = steps[1:]
	}
	if slices.Contains(steps, "solo") {
		return false
	}
	l1 := ""
	if s.Rescale {
		l1 = "l1 "
	}
	pattern := map[Path]string{
		PathCopy:        "copy",
		PathPlain:       l1 + "merge",
		PathModelStock:  "model-stock",
		PathSinglePass:  "single-pass( model-radix)?",
		PathModelRadix:  "model-radix " + l1 + "merge",
		PathSpeculate:   "speculate (one-pass|radix|sampled (radix )?merge)",
		PathSampled:     "(sampled (radix )?){1,2}" + l1 + "merge",
		PathRadix:       "(radix ){1,2}" + l1 + "merge",
		PathGram:        "gram merge",
		PathNearSwap:    "nearswap",
		PathSCE:         "sce",
		PathArceeFusion: "arcee-fusion",
		PathSlerp:       "slerp-(sums slerp-merge|rows)",
		PathEMR:         "emr",
		PathPCB:         "pcb-select pcb-merge",
	}[s.Path]
	return regexp.MustCompile("^" + pattern + "$").MatchString(strings.Join(steps, " "))
}

// TestStrategyMatchesEngine runs every method on random sets and holds the
// steps the engine takes for each tensor to the plan's Strategy for it:
// the passes, solo or not, the L1 pass, and the fused kernel only where the
// strategy allows it.
func TestStrategyMatchesEngine(t *testing.T) {
	cases := append(slices.Clone(methodCases),
		methodCase{"paper-two-pass", preset("paper", nil), methodCases[0].params},
		methodCase{"paper-approx", preset("paper", func(m *Method) { m.ApproxTopK = true }), methodCases[0].params},
		methodCase{"multislerp", method("multislerp", "", nil), methodCases[0].params},
		methodCase{"karcher", method("karcher", "", nil), methodCases[0].params},
		methodCase{"nuslerp-rows", method("nuslerp", "", func(m *Method) { m.SlerpAxis = AxisRows }), slerpCaseParams},
	)
	cases = append(cases, ownMethodCases...)
	seen := map[string]bool{}
	for ci, mc := range cases {
		t.Run(mc.name, func(t *testing.T) {
			for trial := range 2 {
				r := rand.New(rand.NewPCG(uint64(ci), uint64(trial)+100))
				n := ownModels(mc.name, 2+r.IntN(2))
				if mc.method().Slerp != SlerpNone {
					n = 2
				}
				set := randomSet(r, n, false)
				if trial == 1 { // one dtype: the fused kernel and speculation apply
					for _, ts := range append([][]testTensor{set.base}, set.models...) {
						for k := range ts {
							ts[k].dt = kernels.BF16
							for e, v := range ts[k].vals {
								ts[k].vals[e] = roundTo(kernels.BF16, v)
							}
						}
					}
				}
				dir := t.TempDir()
				base, models := set.write(t, dir, r)
				params := mc.params(r, n)
				opts := Options{Base: base, Models: models, Out: filepath.Join(dir, "out"), Threads: 1 + trial,
					BlockElems: []int{7, 64, 1000}[r.IntN(3)], Kernels: kernels.Generic, TwoPass: mc.name == "paper-two-pass"}
				p, err := NewPlan(opts, mc.method(), func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
				if err != nil {
					t.Fatal(err)
				}
				p.tuning.tensorSampled = []int64{1, 200, 1 << 20}[r.IntN(3)]
				p.tuning.tensorSampleMin, p.tuning.sampleChunk, p.tuning.tensorSampleEvery = 16, 16, 3
				if r.IntN(2) == 0 {
					p.tuning.soloBytes = 0
				}
				var mu sync.Mutex
				steps := make([][]string, len(p.Jobs))
				fused := make([]bool, len(p.Jobs))
				p.tuning.trace = func(ji int, step string) {
					mu.Lock()
					defer mu.Unlock()
					if step == "fused" {
						fused[ji] = true
					} else {
						steps[ji] = append(steps[ji], step)
					}
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				for ji, j := range p.Jobs {
					s := p.Strategy(ji)
					seen[s.Path.String()] = true
					seen["solo"] = seen["solo"] || s.Solo
					if !traceMatches(s, steps[ji]) {
						t.Errorf("trial %d: %s: strategy %s, but the engine took %q", trial, j.Name, s, steps[ji])
					}
					if fused[ji] && !s.Fused {
						t.Errorf("trial %d: %s: strategy %s without the fused kernel, but it ran", trial, j.Name, s)
					}
				}
			}
		})
	}
	for _, name := range append(pathNames[:], "solo") {
		if !seen[name] {
			t.Errorf("no tensor took %s: the test no longer covers it", name)
		}
	}
}
