#!/usr/bin/python3
"""Benchmark peer: the TIES paper's whole-model merge in PyTorch.

Written from the published algorithm (Yadav et al. 2023; docs/semantics.md,
`paper` column), not from the authors' code:

  flatten every float tensor of every fine-tune into one [N, D] float32 matrix
  of task vectors τ = θ − θ₀ (the whole model, in RAM)
  trim, per task: t = the (D − ⌊D·density⌋)-th smallest |τ| (torch.kthvalue);
        keep |τ| ≥ t (⌊D·density⌋ + 1 elements plus ties)
  γ = sign(Σᵢ τ̂ᵢ); where that sum is exactly 0, γ = sign(Σ γ) over the whole
        model (the majority sign)
  disjoint mean: τₘ = Σ [sign(τ̂ᵢ) = γ, τ̂ᵢ ≠ 0]·τ̂ᵢ / max(1, count)
  θ = θ₀ + λ·τₘ (λ = 1), rounded once to the base's dtype.

Memory, per element of the model (D of them, N tasks): the stacked matrix
(4·N bytes) plus, for one task row at a time, kthvalue's work space (|τ| and
its copy, 4 + 4 bytes, and an int64 index, 8 bytes), so about 4·N + 16 bytes.
That is leaner than the authors' script, which also holds the fine-tunes'
flattened weights and a masked copy of the matrix; it still needs the whole
model in RAM, which is the point of the comparison. Non-float tensors are
copied from the base.

Usage: paper_ties.py --base B --model M1 --model M2 ... [--density 0.2]
       [--lambda 1] [--threads N] OUT
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def bytes_needed(d, n):
    """The estimate the harness checks against MemAvailable before a run:
    the matrix, the vote's and mean's D-long temporaries (sum, γ, masks,
    totals; more than kthvalue's 16 bytes) and ~300 MB for Python and torch."""
    return 4 * n * d + 24 * d + 300 * 10**6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-shard", type=int, default=5 * 10**9)
    ap.add_argument("--estimate", action="store_true", help="print the bytes this merge needs and exit")
    ap.add_argument("out")
    a = ap.parse_args()
    st.setup_threads(a.threads)

    t0 = time.time()
    base = st.Model(a.base)
    models = [st.Model(m) for m in a.model]
    st.check_same_tensors(base, models)
    names = base.names()
    floats = [n for n in names if st.is_float(base.tensors[n][1])]
    spans, d = {}, 0
    for n in floats:
        k = base.numel(n)
        spans[n] = (d, d + k)
        d += k
    N = len(models)
    if a.estimate:
        print(bytes_needed(d, N))
        return

    # τ for every task, flattened: [N, D] float32.
    tau = torch.empty((N, d), dtype=torch.float32)
    for i, m in enumerate(models):
        for n in floats:
            b, e = spans[n]
            torch.sub(m.tensor(n).reshape(-1).float(), base.tensor(n).reshape(-1).float(), out=tau[i, b:e])

    # Trim: the threshold is the k-th smallest |τ| with k = D − ⌊D·density⌋,
    # one task row at a time (kthvalue copies its input and keeps int64 indices).
    if a.density < 1:
        k = d - int(d * a.density)
        for i in range(N):
            mag = tau[i].abs()
            t = mag.kthvalue(k).values
            tau[i].masked_fill_(mag < t, 0.0)
            del mag

    # Elect: sign of the sum; exact zero sums take the model-wide majority sign.
    gamma = tau.sum(dim=0).sign_()
    zero = gamma == 0
    if bool(zero.any()):
        gamma[zero] = torch.sign(gamma.sum())
    del zero

    # Disjoint mean over the values that agree with γ.
    total = torch.zeros(d, dtype=torch.float32)
    count = torch.zeros(d, dtype=torch.float32)
    for i in range(N):
        agree = torch.where(gamma > 0, tau[i] > 0, tau[i] < 0)
        total.add_(torch.where(agree, tau[i], torch.zeros((), dtype=torch.float32)))
        count.add_(agree.to(torch.float32))
        del agree
    del tau, gamma
    total.div_(count.clamp_(min=1))
    del count
    if a.lam != 1.0:
        total.mul_(a.lam)

    w = st.StreamingWriter(a.out, [(n, base.tensors[n][1], base.tensors[n][2]) for n in names], a.max_shard)
    for n in names:
        bt = base.tensor(n)
        if n in spans:
            b, e = spans[n]
            out = (bt.reshape(-1).float() + total[b:e]).to(bt.dtype).view(bt.shape)
        else:
            out = bt
        w.write(n, out)
    w.close()
    print(f"paper_ties: {len(names)} tensors, D={d}, in {time.time() - t0:.2f}s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
