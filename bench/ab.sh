#!/usr/bin/env bash
# Old binaries against new, side by side in one run, interleaved round by round so that machine
# noise hits both alike. The rows are those of bench/run.sh that a refactor must not move:
#   inproc  plexperf runs the engine in-process: null and malloc bdevs, 4 KiB randread (and
#           malloc randwrite), QD 1 and 128, one reactor (-m 0x1)
#   volume  a single RAM bdev, a 4-column stripe and a 2-way mirror (bench/volumes.json),
#           randread and randwrite, QD 128, one reactor
#   vhost   plexd (null bdev, one reactor pinned to CPU 0) served over vhost-user to
#           plexperf --vhost-user (pinned to CPU 1), 1 queue, 4 KiB randread, QD 128 and 1
# Prints the median IOPS of old and new per row and the new/old ratio, then the allocations per
# I/O of the new binary on the volume rows (--count-allocs).
#
# Usage: bench/ab.sh OLD_REV [-t SECONDS] [-n ROUNDS] [-s SECTIONS]
#   OLD_REV  a git revision to compare against (built in build/ab/<rev> via a git worktree)
#   -t       seconds per run (default 5), -n rounds (default 5)
#   -s       comma-separated sections (default inproc,volume,vhost)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,18p' "$0"; exit 2; }
[ $# -ge 1 ] || usage
OLD_REV=$1
shift
T=5
N=5
SECTIONS=inproc,volume,vhost
while getopts "t:n:s:" opt; do
  case $opt in
    t) T=$OPTARG ;;
    n) N=$OPTARG ;;
    s) SECTIONS=$OPTARG ;;
    *) usage ;;
  esac
done
want() { [[ ",$SECTIONS," == *",$1,"* ]]; }

old_sha=$(git rev-parse --short "$OLD_REV")
old_tree=build/ab/$old_sha
if [ ! -x "$old_tree/build/release/plexperf" ] || [ ! -x "$old_tree/build/release/plexd" ]; then
  echo "== building plexperf and plexd at $old_sha in $old_tree" >&2
  [ -d "$old_tree" ] || git worktree add -q --detach "$old_tree" "$old_sha"
  (cd "$old_tree" && cargo build --release -p plexd-perf -p plexd --bins --quiet)
fi
echo "== building plexperf and plexd (working tree)" >&2
cargo build --release -p plexd-perf -p plexd --bins --quiet

declare -A PERF=([old]=$old_tree/build/release/plexperf [new]=build/release/plexperf)
declare -A PLEXD=([old]=$old_tree/build/release/plexd [new]=build/release/plexd)
out=$(mktemp -d)
daemon=
cleanup() {
  [ -z "$daemon" ] || { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; } || true
  rm -rf "$out"
}
trap cleanup EXIT
rows=()

iops() { python3 -c 'import json,sys; print(json.load(sys.stdin)["total_iops"])'; }

# cfg NAME METHOD PARAMS: a one-bdev config file.
cfg() {
  printf '{"subsystems":[{"subsystem":"bdev","config":[{"method":"%s","params":%s}]}%s]}\n' \
    "$2" "$3" "${4:-}" >"$out/$1.json"
}
cfg null bdev_null_create '{"name":"Null0","num_blocks":2621440,"block_size":4096}'
cfg malloc bdev_malloc_create '{"name":"Malloc0","num_blocks":65536,"block_size":4096}'
cfg vhost-null bdev_null_create '{"name":"Null0","num_blocks":20971520,"block_size":512}' \
  ',{"subsystem":"vhost_blk","config":[{"method":"vhost_create_blk_controller","params":{"ctrlr":"ab","dev_name":"Null0"}}]}'

# The in-process rows: "ROW NAME|plexperf arguments" (the binary and the common tail added).
specs=()
if want inproc; then
  for bw in null:randread malloc:randread malloc:randwrite; do
    for qd in 1 128; do
      specs+=("inproc ${bw%%:*} ${bw#*:} QD$qd|--json $out/${bw%%:*}.json -q $qd -w ${bw#*:}")
    done
  done
fi
if want volume; then
  for w in randread randwrite; do
    for target in Single bench/stripe4 bench/mirror2; do
      specs+=("volume ${target#bench/} $w QD128|--json bench/volumes.json -T $target -q 128 -w $w")
    done
  done
fi
# Each round runs every row once per binary, old then new.
for i in $(seq "$N"); do
  for spec in "${specs[@]}"; do
    row=${spec%%|*}
    read -ra args <<<"${spec#*|}"
    [ "$i" = 1 ] && rows+=("$row")
    for b in old new; do
      "${PERF[$b]}" "${args[@]}" -o 4096 -t "$T" -m 0x1 --output json --no-progress | iops >>"$out/$b-$row"
    done
  done
done

if want vhost; then
  # One daemon per binary and round, each serving its own socket directory.
  for i in $(seq "$N"); do
    for b in old new; do
      mkdir -p "$out/vh-$b"
      taskset -c 0 "${PLEXD[$b]}" -m 0x1 -r "$out/vh-$b/rpc.sock" -S "$out/vh-$b" \
        --config "$out/vhost-null.json" >"$out/plexd-$b.log" 2>&1 &
      daemon=$!
      for _ in $(seq 200); do [ -S "$out/vh-$b/ab" ] && break; sleep 0.05; done
      [ -S "$out/vh-$b/ab" ] || { echo "plexd ($b) did not start:" >&2; cat "$out/plexd-$b.log" >&2; exit 1; }
      for qd in 128 1; do
        row="vhost null randread QD$qd"
        [ "$i" = 1 ] && [ $b = old ] && rows+=("$row")
        # The client is always the new plexperf, so only the daemon differs.
        taskset -c 1 "${PERF[new]}" --vhost-user "$out/vh-$b/ab" --queues 1 -q "$qd" -o 4096 \
          -w randread -t "$T" --output json --no-progress | iops >>"$out/$b-$row"
      done
      kill "$daemon"
      wait "$daemon" 2>/dev/null || true
      daemon=
      rm -rf "$out/vh-$b"
    done
  done
fi

printf '%s\n' "${rows[@]}" >"$out/rows"
python3 - "$out" "$old_sha" <<'PY'
import statistics, sys
d, old = sys.argv[1], sys.argv[2]
print(f"| row | old ({old}) IOPS | new IOPS | new/old |")
print("|---|---|---|---|")
for row in open(f"{d}/rows").read().splitlines():
    o = statistics.median(float(x) for x in open(f"{d}/old-{row}"))
    n = statistics.median(float(x) for x in open(f"{d}/new-{row}"))
    print(f"| {row} | {o:,.0f} | {n:,.0f} | {n / o:.3f} |")
PY

if want volume; then
  echo
  echo "allocations per I/O on the reactors (new binary, --count-allocs):"
  for target in bench/stripe4 bench/mirror2; do
    for w in randread randwrite; do
      printf '  %s %s: ' "${target#bench/}" "$w"
      "${PERF[new]}" --json bench/volumes.json -T "$target" -q 128 -o 4096 -w "$w" -t 2 -m 0x1 \
        --count-allocs --output json --no-progress |
        python3 -c 'import json,sys; a=json.load(sys.stdin)["allocations"]; print(a["count"], "allocations over", a["ios"], "I/Os")'
    done
  done
fi
