#!/usr/bin/env bash
# Saved configs keep loading: an old plexd builds a config (uring, malloc, null and delay
# bdevs, a disk group with a mirrored and a striped volume, an SPDK raid1, a vhost controller)
# and saves it; the plexd of this tree starts from that file and saves again; the two saved
# configs must be identical (entries compared per subsystem, order-insensitive).
#
# Usage: scripts/config-compat.sh OLD_REV
#   OLD_REV  a git revision whose release plexd is built in build/ab/<rev> (as bench/ab.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { sed -n '2,9p' "$0"; exit 2; }
old_sha=$(git rev-parse --short "$1")
old_tree=build/ab/$old_sha
if [ ! -x "$old_tree/build/release/plexd" ]; then
  [ -d "$old_tree" ] || git worktree add -q --detach "$old_tree" "$old_sha"
  (cd "$old_tree" && cargo build --release -p plexd --bins --quiet)
fi
cargo build -p plexd -p plexd-plexctl --bins --quiet
OLD=$old_tree/build/release/plexd
NEW=build/debug/plexd
CTL=build/debug/plexctl
D=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$D"' EXIT
call() { "$CTL" -s "$D/rpc.sock" call "$@" >/dev/null; }
start() { # binary log [config]
  "$1" -m 0x1 -r "$D/rpc.sock" -S "$D" ${3:+--config "$3"} >"$D/$2.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$D/rpc.sock" ] && break; sleep 0.1; done
  "$CTL" -s "$D/rpc.sock" --timeout 30 framework wait-init >/dev/null 2>&1 || sleep 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; rm -f "$D/rpc.sock"; }

for i in 0 1 2 3; do truncate -s 256M "$D/disk$i.img"; done
start "$OLD" old
for i in 0 1 2 3; do
  call bdev_uring_create "{\"name\":\"U$i\",\"filename\":\"$D/disk$i.img\",\"block_size\":512}"
done
call bdev_malloc_create '{"name":"M0","num_blocks":65536,"block_size":4096}'
call bdev_malloc_create '{"name":"M1","num_blocks":65536,"block_size":4096}'
call bdev_null_create '{"name":"N0","num_blocks":1024,"block_size":4096}'
call bdev_delay_create '{"base_bdev_name":"N0","name":"D0","avg_read_latency":10,"p99_read_latency":20,"avg_write_latency":10,"p99_write_latency":20}'
call dg_create '{"name":"dg0","disks":["U0","U1","U2","U3"]}'
call volume_create '{"dg":"dg0","name":"m","size":"32M","layout":"mirror","nmirror":2}'
call volume_create '{"dg":"dg0","name":"s","size":"32M","layout":"stripe","ncol":2}'
call bdev_raid_create '{"name":"R0","raid_level":"raid1","base_bdevs":["M0","M1"]}'
call vhost_create_blk_controller '{"ctrlr":"c0","dev_name":"dg0/m"}'
# Let any running task (a mirror's initial sync) finish, so the saved states are final.
for _ in $(seq 300); do
  "$CTL" -s "$D/rpc.sock" --json task list | grep -q '"state": "running"' || break
  sleep 0.1
done
"$CTL" -s "$D/rpc.sock" save-config >"$D/old.json"
stop
start "$NEW" new "$D/old.json"
"$CTL" -s "$D/rpc.sock" save-config >"$D/new.json"
stop
python3 - "$D/old.json" "$D/new.json" "$old_sha" <<'PY'
import json, sys
def entries(path):
    c = json.load(open(path))
    return {s["subsystem"]: sorted(json.dumps(e, sort_keys=True) for e in (s.get("config") or []))
            for s in c["subsystems"]}
a, b = entries(sys.argv[1]), entries(sys.argv[2])
if a == b:
    n = sum(len(v) for v in a.values())
    print(f"ok: the config saved by {sys.argv[3]} ({n} entries) loads and saves back identically")
    sys.exit(0)
for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
        print(f"{k}: only old: {set(a.get(k, [])) - set(b.get(k, []))}")
        print(f"{k}: only new: {set(b.get(k, [])) - set(a.get(k, []))}")
sys.exit(1)
PY
