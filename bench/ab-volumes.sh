#!/usr/bin/env bash
# Old binary against new, side by side in one run: the in-process volume rows of bench/run.sh
# (one RAM bdev, a 4-column stripe and a 2-way mirror from bench/volumes.json; 4 KiB, QD 128,
# one reactor), randread and randwrite, with the two plexperf binaries interleaved round by
# round so that machine noise hits both alike. Prints the median IOPS of each and the new/old
# ratio, plus allocations per I/O of the new binary (--count-allocs).
#
# Usage: bench/ab-volumes.sh OLD_REV [-t SECONDS] [-n ROUNDS]
#   OLD_REV  a git revision to compare against (built in build/ab/<rev> via a git worktree)
#   -t       seconds per run (default 5), -n rounds (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { sed -n '2,12p' "$0"; exit 2; }
OLD_REV=$1
shift
T=5
N=5
while getopts "t:n:" opt; do
  case $opt in
    t) T=$OPTARG ;;
    n) N=$OPTARG ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done

old_sha=$(git rev-parse --short "$OLD_REV")
old_tree=build/ab/$old_sha
if [ ! -x "$old_tree/build/release/plexperf" ]; then
  echo "== building plexperf at $old_sha in $old_tree" >&2
  [ -d "$old_tree" ] || git worktree add -q --detach "$old_tree" "$old_sha"
  (cd "$old_tree" && cargo build --release -p plexd-perf --bins --quiet)
fi
echo "== building plexperf (working tree)" >&2
cargo build --release -p plexd-perf --bins --quiet

OLD=$old_tree/build/release/plexperf
NEW=build/release/plexperf
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # binary target workload -> IOPS
  "$1" --json bench/volumes.json -T "$2" -q 128 -o 4096 -w "$3" -t "$T" -m 0x1 \
    --output json --no-progress |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["total_iops"])'
}

for w in randread randwrite; do
  for target in Single bench/stripe4 bench/mirror2; do
    for i in $(seq "$N"); do
      for b in old new; do
        bin=$OLD; [ $b = new ] && bin=$NEW
        run "$bin" "$target" "$w" >>"$out/$b-${target#bench/}-$w"
      done
    done
  done
done

python3 - "$out" "$old_sha" <<'EOF'
import os, statistics, sys
d, old = sys.argv[1], sys.argv[2]
print(f"| volume | workload | old ({old}) IOPS | new IOPS | new/old |")
print("|---|---|---|---|---|")
for w in ("randread", "randwrite"):
    for t in ("Single", "stripe4", "mirror2"):
        o = statistics.median(float(x) for x in open(f"{d}/old-{t}-{w}"))
        n = statistics.median(float(x) for x in open(f"{d}/new-{t}-{w}"))
        print(f"| {t} | {w} | {o:,.0f} | {n:,.0f} | {n / o:.3f} |")
EOF
echo
echo "allocations per I/O on the reactors (new binary, --count-allocs):"
for target in bench/stripe4 bench/mirror2; do
  for w in randread randwrite; do
    printf '  %s %s: ' "${target#bench/}" "$w"
    "$NEW" --json bench/volumes.json -T "$target" -q 128 -o 4096 -w "$w" -t 2 -m 0x1 \
      --count-allocs --output json --no-progress |
      python3 -c 'import json,sys; a=json.load(sys.stdin)["allocations"]; print(a["count"], "allocations over", a["ios"], "I/Os")'
  done
done
