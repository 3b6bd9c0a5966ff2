#!/usr/bin/env bash
# A/B timing of tiesmm binaries on one of bench/run.sh's cached sets: every
# repetition reads the inputs once with cat (the floor), then runs each
# binary with each preset in turn, so a noisy machine hits all of them alike.
# Prints medians (and min–max) of wall time and of CPU time (user + sys).
#
#   bench/ab.sh SIZE REPS "PRESETS" BIN...     e.g. bench/ab.sh 4 6 "paper mergekit" /tmp/old bin/tiesmm
#
# SIZE is a directory of bench/data (0.5 1 2 4 8: run bench/run.sh once to
# make them) or a path to a synth directory. COLD=1 evicts the inputs from the
# page cache before every run (drop_caches, else posix_fadvise). Outputs go
# to $AB_OUT (default /tmp/tiesmm-ab) and stay there for cmp.
set -euo pipefail
[[ $# -ge 4 ]] || { sed -n 2,12p "$0"; exit 2; }
size=$1 reps=$2 presets=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
data=$size
[[ -d $data ]] || data=$root/bench/data/$size
[[ -d $data/base ]] || { echo "no set at $data (run bench/run.sh first)" >&2; exit 1; }
out=${AB_OUT:-/tmp/tiesmm-ab}
mkdir -p "$out"
inputs=("$data"/base/*.safetensors "$data"/ft*/*.safetensors)
models=(--base "$data/base")
for d in "$data"/ft*; do models+=(--model "$d"); done
log=$out/times.txt
: >"$log"

evict() {
	sync
	{ echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null && return
	python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "${inputs[@]}"
}
settle() { if [[ ${COLD:-0} == 1 ]]; then evict; else cat "${inputs[@]}" >/dev/null; fi; }

settle
for ((r = 0; r < reps; r++)); do
	settle
	/usr/bin/time -f "cat floor %e %U %S" -a -o "$log" cat "${inputs[@]}" >/dev/null
	for p in $presets; do
		for b in "$@"; do
			name=$(basename "$b")
			rm -rf "$out/$name-$p"
			settle
			/usr/bin/time -f "$p $name %e %U %S" -a -o "$log" "$b" merge "${models[@]}" --preset "$p" --density 0.2 --quiet "$out/$name-$p" >/dev/null 2>&1 ||
				echo "$p $name failed" >>"$log"
		done
	done
done
python3 - "$log" <<'EOF'
import collections, statistics, sys
wall, cpu = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 5 and f[0] != "Command":
        wall[(f[0], f[1])].append(float(f[2]))
        cpu[(f[0], f[1])].append(float(f[3]) + float(f[4]))
for k in sorted(wall):
    w = wall[k]
    print(f"{k[0]:9} {k[1]:14} wall median {statistics.median(w):.3f} s ({min(w):.2f}–{max(w):.2f}, n {len(w)})  cpu median {statistics.median(cpu[k]):.2f} s")
EOF
