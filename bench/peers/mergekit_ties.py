#!/usr/bin/python3
"""Benchmark peer: mergekit-style per-tensor TIES in PyTorch.

Written from the published algorithm (docs/semantics.md, `mergekit` column),
not from mergekit's code. Per tensor name, one at a time, as mergekit does:

  τᵢ = θᵢ − θ₀ in float32
  trim: keep exactly k = ⌊n·density⌋ largest |τᵢ| of the tensor (torch.topk;
        which of several equal values at the threshold survive is torch's
        choice); density ≥ 1 keeps everything, k = 0 is an error
  uᵢ = wᵢ·τ̂ᵢ (weights before the vote)
  γ = +1 where Σᵢ uᵢ ≥ 0 else −1;  mᵢ = [uᵢ ≠ 0 and sign(uᵢ) = γ]
  τₘ = Σ mᵢuᵢ / Σ mᵢwᵢ (a zero divisor counts as 1)
  θ = θ₀ + λ·τₘ, rounded once to the base's dtype; written by a streaming
  safetensors writer (shards ≤ 5 GB).

Memory: the float32 copies of one tensor name (base + N task vectors and the
trim's work space), never the model. Non-float tensors are copied from the base.

Usage: mergekit_ties.py --base B --model M1 --model M2 ... [--density 0.2]
       [--lambda 1] [--weight W ...] [--threads N] OUT
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def trim(tau, density, lowest_index_ties=False):
    """Keeps the k = ⌊n·density⌋ largest |τ| of one tensor, in place.

    lowest_index_ties: among equal |τ| at the threshold keep the lowest flat
    indices (tiesmm's documented choice) with a stable sort; slower, for the
    sanity check only.
    """
    n = tau.numel()
    if density >= 1:
        return tau
    k = int(n * density)
    if k == 0:
        raise ValueError(f"density {density} keeps no element of a tensor of {n}")
    flat = tau.view(-1)
    if lowest_index_ties:
        idx = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
    else:
        idx = torch.topk(flat.abs(), k, largest=True, sorted=False).indices
    keep = torch.zeros(n, dtype=torch.bool)
    keep[idx] = True
    del idx
    flat.masked_fill_(~keep, 0.0)
    return tau


def ties_tensor(base, thetas, weights, density, lam, lowest_index_ties=False):
    base32 = base.float()
    # One [N, ...] float32 stack of trimmed, weighted task vectors.
    u = torch.empty((len(thetas),) + tuple(base.shape), dtype=torch.float32)
    for i, th in enumerate(thetas):
        torch.sub(th.float(), base32, out=u[i])
        trim(u[i], density, lowest_index_ties)
        if weights[i] != 1.0:
            u[i].mul_(weights[i])
    gamma_pos = u.sum(dim=0) >= 0  # zero sum elects +
    num = torch.zeros_like(base32)
    den = torch.zeros_like(base32)
    for i in range(len(thetas)):
        agree = torch.where(gamma_pos, u[i] > 0, u[i] < 0)  # excludes uᵢ = 0
        num.add_(torch.where(agree, u[i], torch.zeros((), dtype=torch.float32)))
        den.add_(agree.to(torch.float32) * weights[i])
    den.masked_fill_(den == 0, 1.0)
    num.div_(den)
    if lam != 1.0:
        num.mul_(lam)
    return (base32 + num).to(base.dtype)


def bytes_needed(n, models):
    """The estimate the harness checks against MemAvailable before a run: per
    element of the largest tensor, the float32 base and stack (4 + 4·N bytes)
    and the vote's temporaries (~22 bytes: sum, masks, numerator, divisor,
    torch.where results), plus ~300 MB for Python and torch."""
    return (4 + 4 * models + 22) * n + 300 * 10**6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0)
    ap.add_argument("--weight", type=float, action="append")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-shard", type=int, default=5 * 10**9)
    ap.add_argument("--lowest-index-ties", action="store_true",
                    help="break threshold ties like tiesmm (stable sort; slower, for checks)")
    ap.add_argument("--estimate", action="store_true", help="print the bytes this merge needs and exit")
    ap.add_argument("out")
    a = ap.parse_args()
    st.setup_threads(a.threads)
    weights = a.weight or [1.0] * len(a.model)
    if len(weights) != len(a.model):
        sys.exit(f"{len(weights)} weights for {len(a.model)} models")

    t0 = time.time()
    base = st.Model(a.base)
    models = [st.Model(m) for m in a.model]
    st.check_same_tensors(base, models)
    names = base.names()
    if a.estimate:
        print(bytes_needed(max(base.numel(n) for n in names), len(models)))
        return
    w = st.StreamingWriter(a.out, [(n, base.tensors[n][1], base.tensors[n][2]) for n in names], a.max_shard)
    for name in names:
        b = base.tensor(name)
        if st.is_float(base.tensors[name][1]) and b.numel():
            out = ties_tensor(b, [m.tensor(name) for m in models], weights, a.density, a.lam, a.lowest_index_ties)
        else:
            out = b
        w.write(name, out)
    w.close()
    print(f"mergekit_ties: {len(names)} tensors in {time.time() - t0:.2f}s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
