#!/usr/bin/env bash
# Measures the CPU an idle plexd uses over a window (default 10 s), per poll mode.
# Usage: bench/idle-cpu.sh [SECONDS] [CPUMASK]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
mask=${2:-0x3}
cargo build --release --bins --quiet
hz=$(getconf CLK_TCK)
for mode in adaptive interrupt busy; do
  sock=$(mktemp -u /tmp/plexd-idle.XXXXXX.sock)
  build/release/plexd -m "$mask" --poll-mode "$mode" -r "$sock" --config examples/demo.json 2>/dev/null &
  pid=$!
  sleep 1
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  sleep "$secs"
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill -TERM $pid; wait $pid || true
  awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" -v m="$mode" -v mask="$mask" \
    'BEGIN { printf "poll-mode %-9s cpumask %s: %.2f%% of one core over %ss\n", m, mask, (b-a)/hz/s*100, s }'
done
