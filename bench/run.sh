#!/usr/bin/env bash
# tiesmm benchmark harness: the read and write floors, tiesmm and two PyTorch peers on
# cached synthetic checkpoints, timed in the same run. See bench/README.md.
#
# Environment (defaults in brackets):
#   BENCH_SIZES         input sizes in GB (base + 3 fine-tunes), and "embed"
#                       for the big-embedding case   [0.5 1 2 4 8 embed]
#   BENCH_QUICK=1       sizes 0.5 1, 2 repetitions, no cold runs of tiesmm
#   BENCH_REPS          repetitions of each measurement          [3; quick 2]
#   BENCH_PEER_REPS     repetitions of each peer run             [BENCH_REPS]
#   BENCH_EMBED_REPS    repetitions of everything in "embed"     [1]
#   BENCH_THREADS       tiesmm thread counts                     [1 nproc]
#   BENCH_PEER_THREADS  torch thread counts for the peers        [BENCH_THREADS]
#   BENCH_KERNELS       kernel sets                              [tiesmm cpu --sets]
#   BENCH_PRESETS       TIES presets                             [paper mergekit]
#   BENCH_PEERS         peers to run                             [mergekit paper]
#   BENCH_DENSITY       trim density                             [0.2]
#   BENCH_MAXMEM        --max-memory of the bounded runs         [1GiB]
#   BENCH_COLD=0        skip the cold-cache floor and cold tiesmm runs
#   BENCH_CHECK=0       skip the peer-vs-tiesmm output check (smallest size,
#                       if at most BENCH_CHECK_MAX_GB [2])
#   BENCH_RESUME=1      keep a size's earlier measurements and run only the
#                       missing ones (default: a size starts afresh)
#   TIESMM              the binary to benchmark                  [bin/tiesmm]
#   BENCH_GIT_REV       what to record as its source revision    [git describe]
# Results: bench/out/raw/<size>.jsonl (one line per run), then
# bench/report.py writes bench/out/results.{md,json} and chart.svg.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=$ROOT/bench/data
OUT=$ROOT/bench/out
WORK=$DATA/work
PY=/usr/bin/python3 # Debian's, where python3-torch lives (pyenv may shadow it)
NPROC=$(nproc)

QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
	SIZES=${BENCH_SIZES:-0.5 1}
	REPS=${BENCH_REPS:-2}
	COLD_TIESMM=0
else
	SIZES=${BENCH_SIZES:-0.5 1 2 4 8 embed}
	REPS=${BENCH_REPS:-3}
	COLD_TIESMM=1
fi
PEER_REPS=${BENCH_PEER_REPS:-$REPS}
EMBED_REPS=${BENCH_EMBED_REPS:-1}
THREADS=${BENCH_THREADS:-1 $NPROC}
PEER_THREADS=${BENCH_PEER_THREADS:-$THREADS}
PRESETS=${BENCH_PRESETS:-paper mergekit}
PEERS=${BENCH_PEERS:-mergekit paper}
DENSITY=${BENCH_DENSITY:-0.2}
MAXMEM=${BENCH_MAXMEM:-1GiB}
COLD=${BENCH_COLD:-1}
[[ $COLD == 1 ]] || COLD_TIESMM=0
CHECK=${BENCH_CHECK:-1}
RESUME=${BENCH_RESUME:-0}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
[[ -x /usr/bin/time ]] || { log "installing GNU time"; apt-get install -y -qq time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }; }
[[ -x /usr/bin/time ]] || die "/usr/bin/time missing (apt-get install time)"
if ! $PY -c 'import torch' 2>/dev/null; then
	if [[ -n $PEERS ]]; then
		log "installing python3-torch (Debian) for the peers"
		{ apt-get update -qq && apt-get install -y -qq python3-torch python3-numpy >/dev/null; } || die "cannot install python3-torch; set BENCH_PEERS= to skip the peers"
	fi
fi

# Freeze the binary: other work in this tree may rebuild bin/tiesmm mid-run.
SRC_BIN=${TIESMM:-$ROOT/bin/tiesmm}
if [[ ! -x $SRC_BIN ]]; then (cd "$ROOT" && go build -o bin/tiesmm ./cmd/tiesmm); fi
mkdir -p "$OUT/raw" "$OUT/logs" "$WORK"
BIN=$OUT/tiesmm
cp "$SRC_BIN" "$BIN"
BIN_SHA=$(sha256sum "$BIN" | cut -c1-12)
GIT_REV=${BENCH_GIT_REV:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)}
KERNELS=${BENCH_KERNELS:-$("$BIN" cpu --sets | tr '\n' ' ')}
BEST_KERNEL=${KERNELS%% *}
CPU_MODEL=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
RUN_ID=$(date +%Y%m%dT%H%M%S)

# ---------------------------------------------------------------- records
# jrec key=value ...: one JSON object; values that look like numbers stay numbers.
jrec() {
	local sep='' kv k v out='{'
	for kv in "$@"; do
		k=${kv%%=*} v=${kv#*=}
		if [[ $v =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
			out+="$sep\"$k\":$v"
		else
			v=${v//\\/\\\\} v=${v//\"/\\\"} v=${v//$'\t'/ }
			out+="$sep\"$k\":\"$v\""
		fi
		sep=','
	done
	printf '%s}\n' "$out"
}

RAW= # the current size's raw file
have() { [[ $RESUME == 1 && -f $RAW ]] && grep -qF "\"key\":\"$1\"" "$RAW"; }

# ---------------------------------------------------------------- cache state
EVICT_METHOD=
evict() { # evict the current size's inputs from the page cache
	sync
	if [[ -z $EVICT_METHOD || $EVICT_METHOD == drop_caches ]] && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
		EVICT_METHOD=drop_caches
		return
	fi
	EVICT_METHOD=posix_fadvise
	$PY -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "${INPUTS[@]}"
}
warm() { cat "${INPUTS[@]}" >/dev/null; }

sum_bytes() { stat -c %s "$@" | awk '{n += $1} END {printf "%.0f", n}'; } # mawk prints big sums as 1e+09

mem_available() { awk '/^MemAvailable/{printf "%.0f", $2*1024}' /proc/meminfo; }

# ---------------------------------------------------------------- one run
# run KEY REP CACHE FIELDS... -- CMD...: time CMD with /usr/bin/time -v and
# append a record. FIELDS are key=value pairs describing the configuration.
run() {
	local key=$1 rep=$2 cache=$3
	shift 3
	local fields=()
	while [[ $1 != -- ]]; do fields+=("$1"); shift; done
	shift
	local rkey="$key#$rep"
	if have "$rkey"; then return 0; fi
	[[ $cache == cold ]] && evict
	local tf=$WORK/time.txt so=$WORK/stdout.txt se=$WORK/stderr.txt rc=0 t0 t1 load
	load=$(cut -d' ' -f1 /proc/loadavg)
	t0=$(date +%s%N)
	/usr/bin/time -v -o "$tf" "$@" >"$so" 2>"$se" || rc=$?
	t1=$(date +%s%N)
	local wall rss user sys passes kernel tpeak status=ok note=''
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')
	rss=$(awk -F': ' '/Maximum resident set size/{printf "%.0f", $2*1024}' "$tf")
	user=$(awk -F': ' '/User time/{print $2}' "$tf")
	sys=$(awk -F': ' '/System time/{print $2}' "$tf")
	passes=$(sed -n 's/^passes: *\([0-9][0-9]*\).*/\1/p' "$so" | head -1)
	kernel=$(sed -n 's/^merged:.*kernels \([^ ,]*\).*/\1/p' "$so" | head -1)
	tpeak=$(sed -n 's/.*peak RSS \([0-9.]* [KMGT]*i*B\).*/\1/p' "$so" | head -1)
	if ((rc != 0)); then
		status=fail
		((rc == 137)) && status=killed
		note=$(tail -n 3 "$se" | tr '\n' ' ' | cut -c1-300)
	fi
	cat "$so" "$se" >"$OUT/logs/$SIZE-${rkey//[\/#]/_}.log"
	jrec key="$rkey" config="$key" rep="$rep" cache="$cache" size="$SIZE" input_bytes="$INPUT_BYTES" \
		"${fields[@]}" wall_s="$wall" rss_bytes="${rss:-0}" user_s="${user:-0}" sys_s="${sys:-0}" \
		load1="$load" passes="${passes:-}" kernel_used="${kernel:-}" tiesmm_peak="${tpeak:-}" \
		status="$status" rc="$rc" note="$note" run_id="$RUN_ID" binary="$BIN_SHA" git="$GIT_REV" \
		>>"$RAW"
	log "  $rkey: ${wall}s rss $(((${rss:-0}) / 1048576))MiB${kernel:+ kernels $kernel}${passes:+ passes $passes} load $load ${status/ok/}"
	return 0
}

skip() { # skip KEY FIELDS...: record a configuration that was not run, and why
	local key=$1
	shift
	if have "$key#0"; then return 0; fi
	jrec key="$key#0" config="$key" rep=0 cache=warm size="$SIZE" input_bytes="$INPUT_BYTES" "$@" run_id="$RUN_ID" >>"$RAW"
}

# ---------------------------------------------------------------- data sets
synth_args() { # the synth flags for a size label
	case $1 in
	embed) echo "--params 1 --embed-rows 128256 --embed-cols 8192" ;;
	*) awk -v s="$1" 'BEGIN{ if (s+0 <= 0) exit 1; printf "--params %.6gM", s*1e9/8/1e6 }' || die "bad size $1" ;;
	esac
}
expected_bytes() { # rough input bytes before the set exists (embed: 4 × 5.6 GB)
	case $1 in
	embed) echo 22400000000 ;;
	*) awk -v s="$1" 'BEGIN{printf "%.0f", s*1e9}' ;;
	esac
}

ensure_set() { # ensure_set LABEL: build bench/data/LABEL once; 1 if it cannot fit
	local label=$1 dir=$DATA/$1 args stamp
	args="$(synth_args "$label") --models 3 --seed 1 --dtype bf16"
	stamp="$args"
	if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$stamp" ]]; then return 0; fi
	local need avail
	need=$(($(expected_bytes "$label") * 3 / 2 + 2000000000)) # inputs + one output + peer output + 2 GB
	avail=$(df -B1 --output=avail "$DATA" | tail -1)
	if ((need > avail)); then
		log "size $label: needs ~$((need / 1000000000)) GB of disk, $((avail / 1000000000)) GB free: skipped"
		return 1
	fi
	log "size $label: synth $args"
	rm -rf "$dir"
	# shellcheck disable=SC2086
	"$BIN" synth $args --force "$dir" >"$OUT/logs/synth-$label.log" 2>&1 || die "synth $label failed: $(tail -3 "$OUT/logs/synth-$label.log")"
	echo "$stamp" >"$dir/.complete"
}

# ---------------------------------------------------------------- one size
bench_size() {
	SIZE=$1
	local dir=$DATA/$SIZE reps=$REPS preps=$PEER_REPS
	RAW=$OUT/raw/$SIZE.jsonl
	if ! ensure_set "$SIZE"; then
		[[ $RESUME == 1 ]] || : >"$RAW"
		INPUT_BYTES=$(expected_bytes "$SIZE")
		skip "skipped" kind=skipped note="not enough free disk"
		return 0
	fi
	[[ $RESUME == 1 ]] || : >"$RAW"
	mapfile -t INPUTS < <(find "$dir"/base "$dir"/ft1 "$dir"/ft2 "$dir"/ft3 -name '*.safetensors' | sort)
	INPUT_BYTES=$(sum_bytes "${INPUTS[@]}")
	local models=(--base "$dir/base" --model "$dir/ft1" --model "$dir/ft2" --model "$dir/ft3")
	local big=0 outbytes wcount
	# A merge writes about one model's bytes: the base's (the output's dtype).
	outbytes=$(sum_bytes "$dir"/base/*.safetensors)
	wcount=$(((outbytes + (8 << 20) - 1) >> 23))
	if [[ $SIZE == embed ]]; then reps=$EMBED_REPS preps=$EMBED_REPS big=1; fi
	log "size $SIZE: $((INPUT_BYTES / 1000000)) MB of inputs in ${#INPUTS[@]} files; reps $reps"

	local r p k t
	# The floor: read every input once.
	warm
	for ((r = 0; r < reps; r++)); do
		run floor/warm "$r" warm kind=floor method=cat threads=1 -- sh -c 'exec cat "$@" >/dev/null' cat "${INPUTS[@]}"
	done
	if [[ $COLD == 1 ]]; then
		for ((r = 0; r < reps; r++)); do
			run floor/cold "$r" cold kind=floor method=cat threads=1 -- sh -c 'exec cat "$@" >/dev/null' cat "${INPUTS[@]}"
		done
		# evict() settles the method on first use; record it with the size.
		jrec key="evict#0" config=evict rep=0 size="$SIZE" kind=info evict_method="$EVICT_METHOD" run_id="$RUN_ID" >>"$RAW"
		log "  cold cache by $EVICT_METHOD"
	fi
	# The write floor: the output's bytes written to the disk the merge
	# writes to, as fast as it takes them (dd, 8 MiB O_DIRECT writes: no page
	# cache, durable when dd returns). A merge fsyncs its output, so it cannot
	# finish before the disk has it, whatever the read floor; the disk's speed
	# varies between runs, so a merge can beat this median.
	local wfile=$WORK/write-floor
	for ((r = 0; r < reps; r++)); do
		rm -f "$wfile"
		run floor/write "$r" warm kind=floor method="dd O_DIRECT" threads=1 output_bytes="$outbytes" -- \
			dd if=/dev/zero of="$wfile" bs=8M count="$wcount" oflag=direct status=none
	done
	rm -f "$wfile"

	# tiesmm, warm: every preset × kernel set × thread count (the big case:
	# the best kernel with all threads only).
	local keep=0 ks=$KERNELS ts=$THREADS
	[[ $CHECK == 1 && $SIZE == "$CHECK_SIZE" ]] && keep=1
	((big)) && ks=$BEST_KERNEL ts=$NPROC
	for p in $PRESETS; do
		for k in $ks; do
			for t in $ts; do
				warm
				for ((r = 0; r < reps; r++)); do
					rm -rf "$WORK/tiesmm-$p"
					run "tiesmm/$p/$k/t$t" "$r" warm kind=tiesmm method="tiesmm $p" preset="$p" kernel="$k" threads="$t" -- \
						"$BIN" merge "${models[@]}" --preset "$p" --density "$DENSITY" --threads "$t" --kernel "$k" --quiet --force "$WORK/tiesmm-$p"
				done
			done
		done
		# Bounded memory: the best kernel, all threads, --max-memory.
		warm
		for ((r = 0; r < reps; r++)); do
			rm -rf "$WORK/tiesmm-maxmem"
			run "tiesmm/$p/$BEST_KERNEL/t$NPROC/maxmem" "$r" warm kind=tiesmm method="tiesmm $p --max-memory $MAXMEM" preset="$p" kernel="$BEST_KERNEL" threads="$NPROC" max_memory="$MAXMEM" -- \
				"$BIN" merge "${models[@]}" --preset "$p" --density "$DENSITY" --threads "$NPROC" --max-memory "$MAXMEM" --quiet --force "$WORK/tiesmm-maxmem"
		done
		rm -rf "$WORK/tiesmm-maxmem"
		if [[ $COLD_TIESMM == 1 ]]; then
			for ((r = 0; r < reps; r++)); do
				rm -rf "$WORK/tiesmm-cold"
				run "tiesmm/$p/$BEST_KERNEL/t$NPROC/cold" "$r" cold kind=tiesmm method="tiesmm $p (cold)" preset="$p" kernel="$BEST_KERNEL" threads="$NPROC" -- \
					"$BIN" merge "${models[@]}" --preset "$p" --density "$DENSITY" --threads "$NPROC" --quiet --force "$WORK/tiesmm-cold"
			done
			rm -rf "$WORK/tiesmm-cold"
		fi
		((keep)) || rm -rf "$WORK/tiesmm-$p"
	done

	# The PyTorch peers, warm, unless their estimated memory exceeds what is available.
	for p in $PEERS; do
		local est avail
		est=$($PY "$ROOT/bench/peers/${p}_ties.py" "${models[@]}" --estimate x)
		for t in $PEER_THREADS; do
			avail=$(mem_available)
			if ((est > avail * 9 / 10)); then
				log "  peer $p: needs ~$((est / 1000000000)) GB, $((avail / 1000000000)) GB available: not run"
				skip "peer/$p/t$t" kind=peer method="$p peer" peer="$p" threads="$t" status=oom-skipped \
					est_bytes="$est" avail_bytes="$avail" note="out of memory: needs ~$((est / 1000000000)) GB, $((avail / 1000000000)) GB available"
				continue
			fi
			warm
			for ((r = 0; r < preps; r++)); do
				have "peer/$p/t$t#$r" && continue
				rm -rf "$WORK/peer-$p"
				run "peer/$p/t$t" "$r" warm kind=peer method="$p peer" peer="$p" threads="$t" est_bytes="$est" -- \
					$PY "$ROOT/bench/peers/${p}_ties.py" "${models[@]}" --density "$DENSITY" --threads "$t" "$WORK/peer-$p"
			done
		done
		if ((keep)) && [[ ! -d $WORK/peer-$p ]] && ((est <= $(mem_available) * 9 / 10)); then # resumed: make the output to check
			$PY "$ROOT/bench/peers/${p}_ties.py" "${models[@]}" --density "$DENSITY" --threads "$NPROC" "$WORK/peer-$p" >/dev/null
		fi
		if ((keep)) && [[ -d $WORK/peer-$p ]]; then
			# A resumed run may have skipped the tiesmm runs that leave this output.
			[[ -d $WORK/tiesmm-$p ]] || "$BIN" merge "${models[@]}" --preset "$p" --density "$DENSITY" --quiet --force "$WORK/tiesmm-$p" >/dev/null
			check "$p" "$WORK/peer-$p" "$WORK/tiesmm-$p"
			if [[ $p == mergekit ]] && ! have "check/mergekit-lowest-index-ties#0"; then # ties broken like tiesmm: should be bit-identical
				rm -rf "$WORK/peer-$p-lowest"
				$PY "$ROOT/bench/peers/mergekit_ties.py" "${models[@]}" --density "$DENSITY" --threads "$NPROC" --lowest-index-ties "$WORK/peer-$p-lowest" >/dev/null
				check "$p-lowest-index-ties" "$WORK/peer-$p-lowest" "$WORK/tiesmm-$p"
				rm -rf "$WORK/peer-$p-lowest"
			fi
		fi
		rm -rf "$WORK/peer-$p"
	done
	rm -rf "$WORK"/tiesmm-*
}

check() { # check NAME PEER_OUT TIESMM_OUT: compare outputs, record the result
	local res
	have "check/$1#0" && return 0
	res=$($PY "$ROOT/bench/peers/compare.py" "$2" "$3") || { log "  check $1 failed"; return 0; }
	log "  check $1 vs tiesmm: $res"
	# compare.py prints a JSON object: splice it into the record.
	printf '{"key":"check/%s#0","config":"check/%s","kind":"check","size":"%s","peer":"%s","run_id":"%s",%s\n' \
		"$1" "$1" "$SIZE" "$1" "$RUN_ID" "${res#\{}" >>"$RAW"
}

# ---------------------------------------------------------------- main
# The output check runs once, on the smallest size of this run, if that is at
# most BENCH_CHECK_MAX_GB (it reruns the mergekit peer with stable tie-breaking).
CHECK_SIZE=$(for s in $SIZES; do [[ $s == embed ]] || echo "$s"; done | sort -g | head -1)
awk -v s="${CHECK_SIZE:-0}" -v m="${BENCH_CHECK_MAX_GB:-2}" 'BEGIN{exit !(s > 0 && s <= m)}' || CHECK_SIZE=
jrec run_id="$RUN_ID" git="$GIT_REV" binary="$BIN_SHA" kernels="$KERNELS" cpu="$CPU_MODEL" nproc="$NPROC" \
	mem_bytes="$(awk '/^MemTotal/{printf "%.0f", $2*1024}' /proc/meminfo)" sizes="$SIZES" reps="$REPS" quick="$QUICK" \
	>"$OUT/run-$RUN_ID.json"
log "run $RUN_ID: tiesmm $GIT_REV ($BIN_SHA), kernels: $KERNELS; sizes: $SIZES; reps $REPS; threads $THREADS"
for s in $SIZES; do
	bench_size "$s"
	$PY "$ROOT/bench/report.py" "$OUT" >/dev/null || log "report failed"
done
$PY "$ROOT/bench/report.py" "$OUT"
log "done: $OUT/results.md, results.json, chart.svg"
