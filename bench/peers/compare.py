#!/usr/bin/python3
"""Compares two merged checkpoints tensor by tensor.

Prints one JSON object: elements compared, the fraction whose bits are
identical, the largest |a − b| (as float32) and the tensor it is in, and the
largest |a − b| relative to the tensor's largest |a|.

Usage: compare.py A B
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

CHUNK = 1 << 24


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = st.Model(sys.argv[1]), st.Model(sys.argv[2])
    if set(a.names()) != set(b.names()):
        sys.exit(f"different tensor names: only in A {set(a.names()) - set(b.names())}, only in B {set(b.names()) - set(a.names())}")
    total = same = 0
    worst, worst_name, worst_rel = 0.0, None, 0.0
    for name in a.names():
        ta, tb = a.tensor(name).reshape(-1), b.tensor(name).reshape(-1)
        if ta.dtype != tb.dtype or ta.numel() != tb.numel():
            sys.exit(f"tensor {name!r}: {ta.dtype} {ta.numel()} vs {tb.dtype} {tb.numel()}")
        iv = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[ta.element_size()]
        amax = 0.0
        tworst = 0.0
        for s in range(0, ta.numel(), CHUNK):
            xa, xb = ta[s : s + CHUNK], tb[s : s + CHUNK]
            same += int((xa.view(iv) == xb.view(iv)).sum())
            total += xa.numel()
            if ta.is_floating_point():
                fa, fb = xa.float(), xb.float()
                tworst = max(tworst, float((fa - fb).abs().max()))
                amax = max(amax, float(fa.abs().max()))
        if tworst > worst:
            worst, worst_name = tworst, name
        if amax > 0:
            worst_rel = max(worst_rel, tworst / amax)
    print(json.dumps({
        "elements": total,
        "identical_fraction": same / total if total else 1.0,
        "differing": total - same,
        "max_abs_diff": worst,
        "max_abs_diff_tensor": worst_name,
        "max_rel_diff": worst_rel,
    }))


if __name__ == "__main__":
    main()
