#!/usr/bin/env bash
# Every merge method against the floors of its own inputs and output, in the same run,
# on a cached synthetic set (base + 3 fine-tunes): the read floor (cat of the files the
# method reads, warm) and the write floor (dd O_DIRECT of the bytes it writes); the
# disk floor is the slower of the two. Then each under a memory bound, with its peak
# RSS. Prints a Markdown table and writes it to bench/out/methods.md.
#
#   bench/methods.sh [DIR]     DIR holds base/ ft1/ ft2/ ft3/ (default: made by synth)
#
# Environment (defaults in brackets):
#   METHODS_PARAMS    synth --params of the set made when DIR is not given   [500M]
#   METHODS_REPS      repetitions of each floor and merge, alternating       [3]
#   METHODS_MAXMEM    --max-memory of the bounded run                        [1GiB]
#   METHODS_ONLY      the methods to run, space-separated                    [all]
#   TIESMM            the binary                                             [bin/tiesmm]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${TIESMM:-$ROOT/bin/tiesmm}
REPS=${METHODS_REPS:-3}
MAXMEM=${METHODS_MAXMEM:-1GiB}
PARAMS=${METHODS_PARAMS:-500M}
OUT=$ROOT/bench/out
WORK=$ROOT/bench/data/work-methods
mkdir -p "$OUT" "$WORK"

DIR=${1:-}
if [[ -z $DIR ]]; then
	DIR=$ROOT/bench/data/methods-$PARAMS
	stamp="--params $PARAMS --models 3 --seed 1 --dtype bf16"
	if [[ ! -f $DIR/.complete || $(cat "$DIR/.complete") != "$stamp" ]]; then
		# shellcheck disable=SC2086
		"$BIN" synth $stamp --force "$DIR" >/dev/null
		echo "$stamp" >"$DIR/.complete"
	fi
fi

# config METHOD: the method's YAML on DIR, and on stdout the folders it reads.
config() {
	local m=$1 f=$WORK/$1.yml
	case $m in
	ties | dare_ties | breadcrumbs_ties | della | della_linear | dare_linear | breadcrumbs | task_arithmetic | linear)
		{
			echo "merge_method: $m"
			[[ $m == linear ]] || echo "base_model: $DIR/base"
			echo "models:"
			density=", density: 0.2"
			[[ $m == task_arithmetic || $m == linear ]] && density=
			for i in 1 2 3; do echo "  - {model: $DIR/ft$i, parameters: {weight: 1$density}}"; done
		} >"$f"
		[[ $m == linear ]] && echo "$DIR/ft1 $DIR/ft2 $DIR/ft3" || echo "$DIR/base $DIR/ft1 $DIR/ft2 $DIR/ft3"
		;;
	model_stock | karcher | sce | emr | pcb)
		{
			echo "merge_method: $m"
			echo "base_model: $DIR/base"
			echo "models: [{model: $DIR/ft1}, {model: $DIR/ft2}, {model: $DIR/ft3}]"
			[[ $m == sce ]] && echo "parameters: {select_topk: 0.5}"
		} >"$f"
		echo "$DIR/base $DIR/ft1 $DIR/ft2 $DIR/ft3"
		;;
	multislerp | multislerp-bf16)
		{
			echo "merge_method: multislerp"
			echo "base_model: $DIR/base"
			echo "models:"
			for i in 1 2 3; do echo "  - {model: $DIR/ft$i, parameters: {weight: 0.$((i + 2))}}"; done
			[[ $m == multislerp-bf16 ]] && echo "compute_dtype: bfloat16"
		} >"$f"
		echo "$DIR/base $DIR/ft1 $DIR/ft2 $DIR/ft3"
		;;
	nuslerp | nuslerp-bf16)
		{
			echo "merge_method: nuslerp"
			echo "base_model: $DIR/base"
			echo "models: [{model: $DIR/ft1, parameters: {weight: 1}}, {model: $DIR/ft2, parameters: {weight: 3}}]"
			[[ $m == nuslerp-bf16 ]] && echo "compute_dtype: bfloat16"
		} >"$f"
		echo "$DIR/base $DIR/ft1 $DIR/ft2"
		;;
	slerp | nearswap | arcee_fusion)
		{
			echo "merge_method: $m"
			echo "base_model: $DIR/base"
			echo "models: [{model: $DIR/ft1}]"
			[[ $m == slerp ]] && echo "parameters: {t: 0.5}"
			[[ $m == nearswap ]] && echo "parameters: {t: 0.001}"
		} >"$f"
		echo "$DIR/base $DIR/ft1"
		;;
	*) echo "unknown method $m" >&2 && return 1 ;;
	esac
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

ALL="ties task_arithmetic linear model_stock slerp nuslerp multislerp karcher sce nearswap arcee_fusion nuslerp-bf16 multislerp-bf16 emr pcb"
METHODS=${METHODS_ONLY:-$ALL}
table=$OUT/methods.md
{
	echo "| method | input GB | output GB | read floor s | write floor s | merge s | ÷ read floor | ÷ disk floor | peak RSS under $MAXMEM |"
	echo "|---|---|---|---|---|---|---|---|---|"
} >"$table"
for m in $METHODS; do
	read -r -a dirs <<<"$(config "$m")"
	files=()
	for d in "${dirs[@]}"; do files+=("$d"/*.safetensors); done
	bytes=$(cat "${files[@]}" | wc -c)
	"$BIN" merge --quiet --force "$WORK/$m.yml" "$WORK/out-$m" >/dev/null
	outbytes=$(find "$WORK/out-$m" -name '*.safetensors' -printf '%s\n' | awk '{s+=$1} END{print s}')
	floors=() writes=() merges=()
	for _ in $(seq "$REPS"); do
		t0=$(now)
		cat "${files[@]}" >/dev/null
		t1=$(now)
		dd if=/dev/zero of="$WORK/write-floor" bs=8M count=$(((outbytes + 8388607) / 8388608)) oflag=direct status=none
		t2=$(now)
		rm -f "$WORK/write-floor"
		"$BIN" merge --quiet --force "$WORK/$m.yml" "$WORK/out-$m" >/dev/null
		t3=$(now)
		floors+=("$(echo "$t1 - $t0" | bc -l)")
		writes+=("$(echo "$t2 - $t1" | bc -l)")
		merges+=("$(echo "$t3 - $t2" | bc -l)")
	done
	floor=$(printf '%s\n' "${floors[@]}" | median)
	write=$(printf '%s\n' "${writes[@]}" | median)
	merge=$(printf '%s\n' "${merges[@]}" | median)
	disk=$(echo "if ($floor > $write) $floor else $write" | bc -l)
	peak=$("$BIN" merge --quiet --force --json --max-memory "$MAXMEM" "$WORK/$m.yml" "$WORK/out-$m" |
		/usr/bin/python3 -c 'import json,sys; print("%.1f MiB" % (json.load(sys.stdin)["peak_rss_bytes"]/2**20))')
	printf '| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %s |\n' "$m" "$(echo "$bytes / 1000000000" | bc -l)" \
		"$(echo "$outbytes / 1000000000" | bc -l)" "$floor" "$write" "$merge" \
		"$(echo "$merge / $floor" | bc -l)" "$(echo "$merge / $disk" | bc -l)" "$peak" | tee -a "$table"
	rm -rf "$WORK/out-$m"
done
echo "written to $table"
