#!/usr/bin/python3
"""Turns bench/out/raw/*.jsonl (one line per timed run) into results.json,
results.md and chart.svg. Standard library only.

Usage: report.py [OUT_DIR]   (default bench/out)

Every ratio compares runs of one size measured by the same run.sh invocation
(a size's raw file is rewritten whole unless BENCH_RESUME=1).
"""

import glob
import json
import math
import os
import statistics
import sys
from collections import OrderedDict


def size_key(s):
    try:
        return (0, float(s))
    except ValueError:
        return (1, s)


def fmt_s(x):
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_ratio(x):
    if x is None:
        return "—"
    return f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def fmt_bytes(b):
    if not b:
        return "—"
    for unit, v in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= v:
            return f"{b / v:.2f} {unit}" if b < 10 * v else f"{b / v:.0f} {unit}" if b >= 100 * v else f"{b / v:.1f} {unit}"
    return f"{b} B"


def load(out):
    recs = []
    for p in sorted(glob.glob(os.path.join(out, "raw", "*.jsonl"))):
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line:
                    r = json.loads(line)
                    if "size" in r:
                        r["size"] = f"{r['size']:g}" if isinstance(r["size"], (int, float)) else str(r["size"])
                    recs.append(r)
    runs = []
    for p in sorted(glob.glob(os.path.join(out, "run-*.json"))):
        with open(p) as f:
            runs.append(json.load(f))
    return recs, runs


FLOORS = ["floor/warm", "floor/cold", "floor/write"]


def order(row):
    kind = {"floor": 0, "tiesmm": 1, "peer": 2}.get(row["kind"], 3)
    c = row["config"]
    floor = FLOORS.index(c) if c in FLOORS else len(FLOORS)  # records of older harnesses sort last
    return (kind, floor, row.get("preset") or row.get("peer") or "", "/maxmem" in c, "/cold" in c,
            row.get("kernel") or "", row.get("threads") or 0)


def summarize(recs):
    sizes = OrderedDict()
    for s in sorted({r["size"] for r in recs if "size" in r}, key=size_key):
        rs = [r for r in recs if r.get("size") == s]
        groups = OrderedDict()
        checks, evict = [], None
        for r in rs:
            kind = r.get("kind")
            if kind == "check":
                checks.append(r)
            elif kind == "info":
                evict = r.get("evict_method") or evict
            elif kind in ("floor", "tiesmm", "peer", "skipped"):
                groups.setdefault(r["config"], []).append(r)
        input_bytes = max((r.get("input_bytes") or 0 for r in rs), default=0)
        rows = []
        for cfg, g in groups.items():
            ok = [r for r in g if r.get("status") == "ok"]
            first = g[0]
            row = {
                "config": cfg,
                "kind": first.get("kind"),
                "method": first.get("method", cfg),
                "preset": first.get("preset"),
                "peer": first.get("peer"),
                "kernel": first.get("kernel"),
                "threads": first.get("threads"),
                "cache": first.get("cache"),
                "max_memory": first.get("max_memory"),
                "reps": len(ok),
                "failed": len(g) - len(ok),
                "status": "ok" if ok else first.get("status", "fail"),
                "note": "; ".join(sorted({r.get("note") for r in g if r.get("note")})),
            }
            if ok:
                walls = [r["wall_s"] for r in ok]
                row.update(
                    wall_median=statistics.median(walls),
                    wall_min=min(walls),
                    wall_max=max(walls),
                    rss_max_bytes=max(r.get("rss_bytes") or 0 for r in ok),
                    cpu_util=statistics.median([(r.get("user_s", 0) + r.get("sys_s", 0)) / r["wall_s"] for r in ok if r["wall_s"] > 0]),
                    load1=statistics.median([r.get("load1", 0) for r in ok]),
                    passes=sorted({r["passes"] for r in ok if r.get("passes") not in (None, "")}),
                    kernel_used=sorted({r["kernel_used"] for r in ok if r.get("kernel_used")}),
                    tiesmm_peak=sorted({r["tiesmm_peak"] for r in ok if r.get("tiesmm_peak")}),
                )
                if input_bytes:
                    row["input_gbps"] = input_bytes / 1e9 / row["wall_median"]
            if first.get("est_bytes"):
                row["est_bytes"] = first["est_bytes"]
            rows.append(row)
        by = {r["config"]: r for r in rows}

        def med(cfg):
            r = by.get(cfg)
            return r.get("wall_median") if r else None

        warm, cold = med("floor/warm"), med("floor/cold")
        # The disk floor of a warm merge, which writes its output durably:
        # the slower of reading the inputs and writing the output.
        write = med("floor/write")
        disk_warm = max(warm, write) if warm and write else None
        for row in rows:
            w = row.get("wall_median")
            if w is None:
                continue
            if row["config"] != "floor/warm" and warm:
                row["ratio_warm_floor"] = w / warm
            if row["config"] != "floor/cold" and cold:
                row["ratio_cold_floor"] = w / cold
            if row["kind"] in ("tiesmm", "peer") and row.get("cache") == "warm" and disk_warm:
                row["ratio_disk_floor"] = w / disk_warm
            if row["kind"] == "tiesmm":
                for peer in ("mergekit", "paper"):
                    pm = med(f"peer/{peer}/t{row['threads']}")
                    if pm:
                        row[f"ratio_peer_{peer}"] = w / pm
            if row.get("max_memory"):
                row["over_bound"] = row["rss_max_bytes"] > parse_size(row["max_memory"])
        rows.sort(key=order)
        sizes[s] = {"size": s, "input_bytes": input_bytes, "evict_method": evict, "rows": rows, "checks": checks,
                    "floors": {"warm": warm, "cold": cold, "write": write, "disk_warm": disk_warm},
                    "binaries": sorted({f"{r['git']} ({r['binary']})" for r in rs if r.get("binary")}),
                    "run_ids": sorted({r["run_id"] for r in rs if r.get("run_id")})}
    return sizes


def parse_size(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return float(s[: -len(u)]) * units[u]
    return float(s)


def label(s, input_bytes):
    gb = input_bytes / 1e9
    if s == "embed":
        return f"big embedding ({gb:.1f} GB)"
    return f"{s} GB ({gb:.2f} GB)"


def row_name(row):
    c = row["config"]
    if row["kind"] == "floor":
        return {"floor/warm": "floor: cat, warm cache", "floor/cold": "floor: cat, cold cache",
                "floor/write": "floor: write the output's bytes (dd, O_DIRECT)"}.get(c, c)
    if row["kind"] == "tiesmm":
        extra = ""
        if row.get("max_memory"):
            extra = f", --max-memory {row['max_memory']}"
        if row.get("cache") == "cold":
            extra += ", cold cache"
        return f"tiesmm {row['preset']}, {row['kernel']}, {row['threads']} thr{extra}"
    if row["kind"] == "peer":
        return f"PyTorch {row['peer']} peer, {row['threads']} thr"
    return c


def markdown(sizes, runs):
    L = []
    meta = runs[-1] if runs else {}
    L.append("# tiesmm benchmark results\n")
    if meta:
        L.append(f"Machine: {meta.get('cpu')} ({meta.get('nproc')} cores, {meta.get('mem_bytes', 0) / 2**30:.0f} GiB RAM); "
                 f"tiesmm {meta.get('git')} (binary {meta.get('binary')}), kernel sets on this CPU: {meta.get('kernels', '').strip()}. "
                 f"Runs: {', '.join(r['run_id'] for r in runs)}.\n")
    L.append("Inputs: a BF16 base + 3 fine-tunes from `tiesmm synth --seed 1`; density 0.2; warm page cache unless said. "
             "Wall time is the median of the repetitions (min–max); ratios divide medians measured in the same run; "
             "GB/s counts input bytes (10⁹); peak RSS is /usr/bin/time's maximum resident set size (the largest over the repetitions); "
             "load is the 1-minute load average when each run started (the machine is shared: a load above the core count means others were running).\n")

    # Summary across sizes.
    L.append("## Summary (all cores, fastest kernel set)\n")
    L.append("Floors in seconds: reading the inputs (`cat`, warm and cold cache) and writing the output's bytes "
             "(`dd` with O_DIRECT: how fast the disk takes them). Warm tiesmm runs are given as time ÷ the warm read floor, and in brackets "
             "÷ the disk floor, the slower of the warm read and the write (a merge fsyncs its output, so it cannot finish before the disk "
             "has it; the write's speed varies between runs, so a merge can come in under its median); "
             "cold runs ÷ the cold read floor; the peers ÷ the warm read floor.\n")
    L.append("| input | read warm | write | read cold | tiesmm paper | tiesmm mergekit | tiesmm paper, cold | tiesmm mergekit, cold | mergekit peer | paper peer | tiesmm peak RSS with --max-memory |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for s, d in sizes.items():
        rows = d["rows"]
        fl = d["floors"]
        cells = [label(s, d["input_bytes"])] + [f"{fmt_s(fl[k])} s" if fl.get(k) else "—" for k in ("warm", "write", "cold")]
        for preset in ("paper", "mergekit"):
            best = fastest(rows, preset)
            cells.append(f"{fmt_ratio(best.get('ratio_warm_floor'))} ({fmt_ratio(best.get('ratio_disk_floor'))})" if best else "—")
        for preset in ("paper", "mergekit"):
            c = coldest(rows, preset)
            cells.append(fmt_ratio(c.get("ratio_cold_floor")) if c else "—")
        for peer in ("mergekit", "paper"):
            pr = [r for r in rows if r["kind"] == "peer" and r["peer"] == peer]
            pr.sort(key=lambda r: -(r.get("threads") or 0))
            if not pr:
                cells.append("—")
            elif pr[0].get("wall_median") is None:
                cells.append(f"out of memory at {d['input_bytes'] / 1e9:.1f} GB" if pr[0]["status"] == "oom-skipped" else pr[0]["status"])
            else:
                cells.append(fmt_ratio(pr[0].get("ratio_warm_floor")))
        mm = [r for r in rows if r.get("max_memory") and r.get("rss_max_bytes")]
        cells.append(", ".join(f"{r['preset']} {fmt_bytes(r['rss_max_bytes'])}{' (over the bound!)' if r.get('over_bound') else ''}" for r in mm) or "—")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    for s, d in sizes.items():
        L.append(f"## {label(s, d['input_bytes'])}\n")
        info = []
        if d.get("binaries"):
            info.append("tiesmm " + ", ".join(d["binaries"]))
        if d.get("run_ids"):
            info.append("run " + ", ".join(d["run_ids"]))
        if d.get("evict_method"):
            info.append(f"cold cache by `{d['evict_method']}`")
        L.append("; ".join(info) + ".\n")
        L.append("| configuration | kernels used | wall s, median (min–max) | reps | ÷ warm floor | ÷ cold floor | ÷ disk floor | ÷ mergekit peer | ÷ paper peer | GB/s | peak RSS | passes | CPU use | load |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            if r["kind"] == "skipped":
                L.append(f"| skipped | | {r['note']} | | | | | | | | | | | |")
                continue
            if r.get("wall_median") is None:
                L.append(f"| {row_name(r)} | | **{r['status']}**: {r['note']} | 0 | | | | | | | | | | |")
                continue
            wall = f"{fmt_s(r['wall_median'])} ({fmt_s(r['wall_min'])}–{fmt_s(r['wall_max'])})"
            if r["failed"]:
                wall += f", **{r['failed']} failed**: {r['note']}"
            rss = fmt_bytes(r["rss_max_bytes"])
            if r.get("over_bound"):
                rss = f"**{rss} > {r['max_memory']}**"
            L.append("| " + " | ".join([
                row_name(r), ", ".join(r.get("kernel_used") or []) or "", wall, str(r["reps"]),
                fmt_ratio(r.get("ratio_warm_floor")), fmt_ratio(r.get("ratio_cold_floor")), fmt_ratio(r.get("ratio_disk_floor")),
                fmt_ratio(r.get("ratio_peer_mergekit")), fmt_ratio(r.get("ratio_peer_paper")),
                f"{r['input_gbps']:.2f}" if r.get("input_gbps") else "—", rss,
                ",".join(str(p) for p in r.get("passes") or []), f"{r['cpu_util']:.2f}", f"{r['load1']:.1f}",
            ]) + " |")
        if d["checks"]:
            L.append("\nOutput check against tiesmm with the same preset (bf16 elements):\n")
            L.append("| peer | elements | bit-identical | max \\|diff\\| | in tensor | max \\|diff\\| ÷ tensor's max \\|value\\| |")
            L.append("|---|---|---|---|---|---|")
            for c in d["checks"]:
                L.append(f"| {c['peer']} | {c['elements']} | {100 * c['identical_fraction']:.4f} % | {c['max_abs_diff']:g} | "
                         f"{c.get('max_abs_diff_tensor') or '—'} | {c['max_rel_diff']:.3g} |")
        L.append("")
    return "\n".join(L)


def fastest(rows, preset):
    """The fastest warm, unbounded, all-threads tiesmm row of a preset."""
    cand = [r for r in rows if r["kind"] == "tiesmm" and r["preset"] == preset and r.get("wall_median")
            and not r.get("max_memory") and r.get("cache") == "warm"]
    if not cand:
        return None
    top = max(r["threads"] for r in cand)
    return min((r for r in cand if r["threads"] == top), key=lambda r: r["wall_median"])


def coldest(rows, preset):
    """The cold-cache tiesmm row of a preset."""
    return next((r for r in rows if r["kind"] == "tiesmm" and r["preset"] == preset and r.get("cache") == "cold"
                 and r.get("wall_median")), None)


# ---------------------------------------------------------------- chart

# One colour per method; its cold-cache line is the same colour, dashed.
COLORS = {"floor: cat": "#444444", "floor: dd write": "#17becf",
          "tiesmm paper": "#1f77b4", "tiesmm mergekit": "#2ca02c",
          "PyTorch mergekit": "#d62728", "PyTorch paper": "#ff7f0e"}


def color(name):
    return next((c for prefix, c in COLORS.items() if name.startswith(prefix)), "#8c564b")


def chart(sizes):
    series = OrderedDict()
    oom = []

    def add(name, x, row):
        if row and row.get("wall_median"):
            series.setdefault(name, []).append((x, row["wall_median"] / x))

    for s, d in sizes.items():
        x = d["input_bytes"] / 1e9
        if x <= 0:
            continue
        rows = d["rows"]
        by = {r["config"]: r for r in rows}
        add("floor: cat, warm cache", x, by.get("floor/warm"))
        add("floor: cat, cold cache", x, by.get("floor/cold"))
        add("floor: dd write of the output", x, by.get("floor/write"))
        for preset in ("paper", "mergekit"):
            add(f"tiesmm {preset}", x, fastest(rows, preset))
        for preset in ("paper", "mergekit"):
            add(f"tiesmm {preset}, cold cache", x, coldest(rows, preset))
        for peer in ("mergekit", "paper"):
            pr = sorted((r for r in rows if r["kind"] == "peer" and r["peer"] == peer), key=lambda r: -(r.get("threads") or 0))
            if pr and pr[0].get("wall_median"):
                add(f"PyTorch {peer} peer", x, pr[0])
            elif pr and pr[0]["status"] == "oom-skipped":
                oom.append((f"PyTorch {peer} peer", x))
    if not series:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>"

    W, H, ml, mr, mt, mb = 860, 500, 70, 250, 40, 55
    pw, ph = W - ml - mr, H - mt - mb
    xs = [x for pts in series.values() for x, _ in pts] + [x for _, x in oom]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1 = math.log2(min(xs)) - 0.3, math.log2(max(xs)) + 0.3
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)) + 0.15)
    X = lambda x: ml + (math.log2(x) - x0) / (x1 - x0) * pw  # noqa: E731
    Y = lambda y: mt + ph - (math.log10(y) - y0) / (y1 - y0) * ph  # noqa: E731
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{ml + pw / 2}" y="20" text-anchor="middle" font-size="15">Merge time per GB of input (lower is better)</text>',
         f'<text x="{ml + pw / 2}" y="34" text-anchor="middle" font-size="11" fill="#555">all threads; tiesmm: fastest kernel set; warm page cache unless dashed</text>']
    for e in range(int(y0), int(y1) + 1):
        for m in (1, 2, 5):
            v = m * 10**e
            if v < 10**y0 or v > 10**y1:
                continue
            yy = Y(v)
            o.append(f'<line x1="{ml}" y1="{yy:.1f}" x2="{ml + pw}" y2="{yy:.1f}" stroke="{"#ccc" if m == 1 else "#eee"}"/>')
            if m in (1, 2, 5):
                o.append(f'<text x="{ml - 6}" y="{yy + 4:.1f}" text-anchor="end">{v:g}</text>')
    for x in sorted(set(round(v, 3) for v in xs)):
        xx = X(x)
        o.append(f'<line x1="{xx:.1f}" y1="{mt}" x2="{xx:.1f}" y2="{mt + ph}" stroke="#eee"/>')
        o.append(f'<text x="{xx:.1f}" y="{mt + ph + 16}" text-anchor="middle">{x:g}</text>')
    o.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    o.append(f'<text x="{ml + pw / 2}" y="{H - 12}" text-anchor="middle">input size, GB (base + 3 fine-tunes, log scale)</text>')
    o.append(f'<text transform="translate(18 {mt + ph / 2}) rotate(-90)" text-anchor="middle">seconds per GB of input</text>')
    colors = {}
    for i, (name, pts) in enumerate(series.items()):
        c = color(name)
        colors[name] = c
        dash = ' stroke-dasharray="6 4"' if "cold" in name else ""
        pts.sort()
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        o.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for x, y in pts:
            o.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{c}"><title>{name}: {y:.3g} s/GB at {x:.2f} GB</title></circle>')
        ly = mt + 10 + 20 * i
        o.append(f'<line x1="{ml + pw + 15}" y1="{ly}" x2="{ml + pw + 40}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>')
        o.append(f'<text x="{ml + pw + 46}" y="{ly + 4}">{name}</text>')
    for j, (name, x) in enumerate(oom):
        c = colors.get(name, "#d62728")
        o.append(f'<text x="{X(x) + 6:.1f}" y="{mt + 16 + 15 * j}" text-anchor="end" fill="{c}">{name.split()[1]} peer: out of memory at {x:.1f} GB</text>')
    o.append("</svg>")
    return "\n".join(o)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    recs, runs = load(out)
    sizes = summarize(recs)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"runs": runs, "sizes": list(sizes.values())}, f, indent=1)
    md = markdown(sizes, runs)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out, "chart.svg"), "w") as f:
        f.write(chart(sizes) + "\n")
    print(md)


if __name__ == "__main__":
    main()
