#!/usr/bin/env bash
# The whole side-by-side comparison in one go; writes bench/RESULTS.md (raw JSON, logs and
# latency plots go to bench/out/, which git ignores).
#
#   1. In-process (plexperf runs plexd's engine): null, malloc and uring-file bdevs, 4 KiB
#      randread (and randwrite for malloc), QD 1 and 128, one reactor (-m 0x1) and two
#      (-m 0x3 -C: both reactors drive the bdev).
#   1b. Volumes, in-process (bench/volumes.json): one RAM bdev vs a 4-column stripe and a 2-way
#      mirror over RAM bdevs, 4 KiB randread and randwrite, QD 128, one reactor.
#   1c. RAID-5, in-process (bench/raid5.json), side by side, QD 128, one reactor: a 4-column
#      RAID-5 volume vs a 4-column stripe (raid0) on the same four RAM bdevs with the same
#      16 KiB stripe unit: 4 KiB randwrite (read-modify-write), 4 KiB randread, full-stripe
#      sequential write (48 KiB = 3 data units, aligned; GB/s), and 4 KiB randread of a RAID-5
#      volume with one column missing (its disk absent at import), and the cost of the RAID-5
#      log (4 KiB randwrite on the same RAID-5 volume with a log plex on a fifth RAM bdev).
#   2. The vhost-user path, plexperf --vhost-user as the client (1 queue, 4 KiB randread,
#      QD 128 and QD 1): plexd vs qemu-storage-daemon, null backing (plexd null bdev vs
#      driver=null-co) and file backing (plexd uring bdev vs driver=file,aio=io_uring,
#      cache.direct=on) on the same file. Each back-end is pinned to CPU 0 (one reactor /
#      one iothread), the client to CPU 1.
#   3. If SPDK_DIR is set and holds build/examples/bdevperf (or BDEVPERF names one; built by
#      bench/build-spdk.sh, which writes the wrapper $SPDK_DIR/bdevperf.sh): SPDK's bdevperf on the same
#      in-process configs, and raid5f full-stripe write (bdev_raid_create raid5f over four RAM
#      bdevs, 16 KiB strips, 48 KiB writes) by both plexperf and bdevperf from one config
#      (never required; skipped with a note in the report otherwise).
#   4. A short profile of the in-process null randread path (perf record, or callgrind).
#
# Usage: bench/run.sh [-t SECONDS] [-o RESULTS.md] [-s SECTIONS] [-r]
#   -t  seconds per run (default 5; -t 1 checks the script in about two minutes)
#   -o  where to write the report (default bench/RESULTS.md)
#   -s  comma-separated sections to run (default all: inproc,volume,raid5,vhost,spdk,profile);
#       the report shows only the tables of the sections run, so write a partial run
#       elsewhere with -o (e.g. bench/run.sh -s raid5 -t 10 -o bench/out/raid5.md)
#   -r  measure nothing: rewrite the report from the last run's bench/out/
# Needs: cargo, python3, qemu-storage-daemon (Debian: qemu-utils); perf or valgrind for the
# profile (skipped if neither works).
set -euo pipefail
cd "$(dirname "$0")/.."

T=5
RESULTS=bench/RESULTS.md
REPORT_ONLY=0
SECTIONS=inproc,volume,raid5,vhost,spdk,profile
while getopts "t:o:s:rh" opt; do
  case $opt in
    t) T=$OPTARG ;;
    o) RESULTS=$OPTARG ;;
    r) REPORT_ONLY=1 ;;
    s) SECTIONS=$OPTARG ;;
    *) sed -n '2,36p' "$0"; exit 2 ;;
  esac
done
want() { [[ ",$SECTIONS," == *",$1,"* ]]; }

OUT=bench/out
if [ $REPORT_ONLY = 0 ]; then
rm -rf "$OUT"
mkdir -p "$OUT/vhost" "$OUT/cfg"
MANIFEST=$OUT/manifest.tsv
: >"$MANIFEST"
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
busiest=$(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | awk '{printf "%s%s (%s%% CPU)", (NR>1?", ":""), $2, $1}')
t0=$SECONDS

echo "== building (release)" >&2
cargo build --release --bins --quiet
PERF=build/release/plexperf
PLEXD=build/release/plexd
QSD=$(command -v qemu-storage-daemon || true)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# The data file for the uring / io_uring runs: written in full (no holes, so reads reach the
# disk's blocks) on the file system under build/ (O_DIRECT must work there; tmpfs refuses it).
FILE=build/tmp/bench-disk.img
FILE_MB=1024
mkdir -p build/tmp
if { want inproc || want vhost || want spdk; } &&
  { [ ! -f "$FILE" ] || [ "$(stat -c %s "$FILE")" -ne $((FILE_MB << 20)) ]; }; then
  echo "== writing $FILE ($FILE_MB MiB)" >&2
  dd if=/dev/urandom of="$FILE" bs=1M count=$FILE_MB oflag=direct status=none
fi
: >"$OUT/daemons.txt"

# One config per bdev, so plexperf and bdevperf load exactly the same thing.
cfg() { # name method params-json
  printf '{"subsystems":[{"subsystem":"bdev","config":[{"method":"%s","params":%s}]}]}\n' "$2" "$3" >"$OUT/cfg/$1.json"
}
cfg null bdev_null_create '{"name":"Null0","num_blocks":2621440,"block_size":4096}'
cfg malloc bdev_malloc_create '{"name":"Malloc0","num_blocks":65536,"block_size":4096}'
cfg uring bdev_uring_create "{\"name\":\"Uring0\",\"filename\":\"$PWD/$FILE\",\"block_size\":4096}"

# record KIND NAME KEY=VALUE... -- COMMAND...: runs COMMAND with stdout to $OUT/NAME.out and
# stderr to $OUT/NAME.err and adds a manifest line (a failed run is recorded, not fatal).
record() {
  local kind=$1 name=$2
  shift 2
  local meta=()
  while [ "$1" != "--" ]; do meta+=("$1"); shift; done
  shift
  echo "== $name: $*" >&2
  local rc=0
  "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || rc=$?
  [ $rc -eq 0 ] || echo "   exit $rc (see $OUT/$name.err)" >&2
  printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$name" "$rc" "${meta[*]}" "$*" >>"$MANIFEST"
}

PERF_OK=0
perf record -e cpu-clock -o "$OUT/perf-probe.data" -- true >/dev/null 2>&1 && PERF_OK=1
PT=$(( T < 3 ? T : 3 ))

# ---- 1. in-process ------------------------------------------------------------------------
want inproc && for bdev in null malloc uring; do
  workloads="randread"
  [ $bdev = malloc ] && workloads="randread randwrite"
  for w in $workloads; do
    for qd in 1 128; do
      for mask in 0x1 0x3; do
        extra=()
        [ $mask = 0x3 ] && extra=(-C)
        record inproc "inproc-$bdev-$w-q$qd-m$mask" bdev=$bdev w=$w qd=$qd mask=$mask -- \
          "$PERF" --json "$OUT/cfg/$bdev.json" -q "$qd" -o 4096 -w "$w" -t "$T" -m "$mask" "${extra[@]}" \
          --output json --no-progress
      done
    done
  done
done

# ---- 1b. volumes (in-process): a single RAM bdev vs a 4-column stripe and a 2-way mirror over
# RAM bdevs (bench/volumes.json), side by side, one reactor, QD 128.
want volume && for w in randread randwrite; do
  for target in Single bench/stripe4 bench/mirror2; do
    record volume "volume-${target#bench/}-$w" target="${target#bench/}" w=$w -- \
      "$PERF" --json bench/volumes.json -T "$target" -q 128 -o 4096 -w "$w" -t "$T" -m 0x1 \
      --output json --no-progress
  done
done

# ---- 1c. RAID-5 (in-process): bench/raid5.json builds group r5 (RAID-5 volume raid5 and stripe
# volume raid0 on the same four RAM bdevs, 4 columns, 16 KiB units each) and group r5d (a RAID-5
# volume like r5/raid5 on four other RAM bdevs, deported, one bdev deleted and imported again:
# it serves with that column missing). One reactor, QD 128.
R5_FULL=$(( (4 - 1) * 16 * 1024 )) # (ncol - 1) × stripe unit: one row's data, as in raid5.json
if want raid5; then
  for row in "randwrite 4096" "randread 4096" "write $R5_FULL"; do
    read -r w o <<<"$row"
    for target in raid5 raid0; do
      record raid5 "raid5-$target-$w-o$o" target=$target w=$w o=$o -- \
        "$PERF" --json bench/raid5.json -T "r5/$target" -q 128 -o "$o" -w "$w" -t "$T" -m 0x1 \
        --output json --no-progress
    done
  done
  # The same full-stripe write on raid5s: a RAID-5 volume like raid5 in the same group, with
  # skip_copy (parity computed from the request's buffers, no copy into the row buffer).
  record raid5 "raid5-raid5s-write-o$R5_FULL" target=raid5s w=write o="$R5_FULL" -- \
    "$PERF" --json bench/raid5.json -T r5/raid5s -q 128 -o "$R5_FULL" -w write -t "$T" -m 0x1 \
    --output json --no-progress
  record raid5 "raid5-degraded-randread-o4096" target=degraded w=randread o=4096 -- \
    "$PERF" --json bench/raid5.json -T r5d/raid5 -q 128 -o 4096 -w randread -t "$T" -m 0x1 \
    --output json --no-progress
  # The cost of the RAID-5 log: group r5l, the same RAID-5 volume with a log plex on a fifth
  # RAM bdev (every write goes to the log, durably, before the columns).
  record raid5 "raid5-logged-randwrite-o4096" target=logged w=randwrite o=4096 -- \
    "$PERF" --json bench/raid5.json -T r5l/raid5 -q 128 -o 4096 -w randwrite -t "$T" -m 0x1 \
    --output json --no-progress
fi

# ---- 2. vhost-user path ------------------------------------------------------------------
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_socket() { # path pid
  for _ in $(seq 200); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
# vhost_run BACKEND BACKING PID SOCKET: the client runs at QD 128 and QD 1 against SOCKET.
vhost_run() {
  local backend=$1 backing=$2 pid=$3 sock=$4
  for qd in 128 1; do
    local name="vhost-$backend-$backing-q$qd" c0 c1
    c0=$(ticks "$pid")
    record vhost "$name" backend=$backend backing=$backing qd=$qd -- \
      taskset -c 1 "$PERF" --vhost-user "$sock" --queues 1 -q "$qd" -o 4096 -w randread -t "$T" \
      --output json --no-progress --plot "$OUT/$name.svg"
    c1=$(ticks "$pid")
    # Back-end CPU over the run, for CPU per I/O (clock ticks; includes connect/teardown).
    sed -i "\$s/\t$name\t\([0-9]*\)\t/\t$name\t\1\tbackend_ticks=$((c1 - c0)) /" "$MANIFEST"
  done
}
start_plexd() { # backing; sets DAEMON_PID
  local backing=$1 bdev method params
  case $backing in
    null) bdev=Null0 method=bdev_null_create params='{"name":"Null0","num_blocks":20971520,"block_size":512}' ;;
    file) bdev=Uring0 method=bdev_uring_create params="{\"name\":\"Uring0\",\"filename\":\"$PWD/$FILE\",\"block_size\":512}" ;;
  esac
  printf '{"subsystems":[{"subsystem":"bdev","config":[{"method":"%s","params":%s}]},{"subsystem":"vhost_blk","config":[{"method":"vhost_create_blk_controller","params":{"ctrlr":"plexd-%s","dev_name":"%s"}}]}]}\n' \
    "$method" "$params" "$backing" "$bdev" >"$OUT/cfg/plexd-vhost-$backing.json"
  echo "taskset -c 0 $PLEXD -m 0x1 -r $OUT/vhost/rpc.sock -S $OUT/vhost --config $OUT/cfg/plexd-vhost-$backing.json" >>"$OUT/daemons.txt"
  taskset -c 0 "$PLEXD" -m 0x1 -r "$OUT/vhost/rpc.sock" -S "$OUT/vhost" \
    --config "$OUT/cfg/plexd-vhost-$backing.json" >"$OUT/plexd-$backing.log" 2>&1 &
  DAEMON_PID=$!
  pids+=("$DAEMON_PID")
}
start_qsd() { # backing; sets DAEMON_PID
  local backing=$1 blockdev
  case $backing in
    null) blockdev="driver=null-co,node-name=disk0,size=$((10 << 30)),read-zeroes=off" ;;
    file) blockdev="driver=file,node-name=disk0,filename=$PWD/$FILE,cache.direct=on,aio=io_uring" ;;
  esac
  local args=(--object iothread,id=iot0 --blockdev "$blockdev"
    --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$OUT/vhost/qsd-$backing,writable=on,num-queues=1,iothread=iot0")
  echo "taskset -c 0 $QSD ${args[*]}" >>"$OUT/daemons.txt"
  taskset -c 0 "$QSD" "${args[@]}" >"$OUT/qsd-$backing.log" 2>&1 &
  DAEMON_PID=$!
  pids+=("$DAEMON_PID")
}
want vhost && for backing in null file; do
  start_plexd $backing
  pid=$DAEMON_PID
  if wait_socket "$OUT/vhost/plexd-$backing" "$pid"; then
    vhost_run plexd $backing "$pid" "$OUT/vhost/plexd-$backing"
    if [ $backing = null ] && [ $PERF_OK = 1 ]; then
      # An extra, unmeasured run while perf samples plexd: what limits the vhost null path.
      VHOST_PROFILE_CMD="perf record -e cpu-clock -F 2999 -p PLEXD_PID -o $OUT/perf-vhost.data -- sleep $PT  # during: taskset -c 1 $PERF --vhost-user $OUT/vhost/plexd-null -q 128 -o 4096 -w randread -t $PT"
      echo "== profile: $VHOST_PROFILE_CMD" >&2
      perf record -e cpu-clock -F 2999 -p "$pid" -o "$OUT/perf-vhost.data" -- sleep "$PT" >/dev/null 2>&1 &
      prof=$!
      taskset -c 1 "$PERF" --vhost-user "$OUT/vhost/plexd-null" -q 128 -o 4096 -w randread -t "$PT" \
        --no-progress >"$OUT/profile-vhost-run.out" 2>&1 || true
      wait $prof || true
      perf report -i "$OUT/perf-vhost.data" --stdio --no-children --sort symbol --percent-limit 0.8 \
        2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 >"$OUT/profile-vhost.txt" || true
    fi
  else
    echo "   plexd ($backing) did not start: see $OUT/plexd-$backing.log" >&2
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -n "$QSD" ]; then
    start_qsd $backing
    pid=$DAEMON_PID
    if wait_socket "$OUT/vhost/qsd-$backing" "$pid"; then
      vhost_run qsd $backing "$pid" "$OUT/vhost/qsd-$backing"
    else
      echo "   qemu-storage-daemon ($backing) did not start: see $OUT/qsd-$backing.log" >&2
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
done

# ---- 3. SPDK's bdevperf (optional) -----------------------------------------------------
# BDEVPERF (if set) overrides the binary, e.g. the wrapper bench/build-spdk.sh writes
# ($SPDK_DIR/bdevperf.sh: shared-library path, --no-pci, hugepages or --no-huge), used by
# default when it is there.
if [ -z "${BDEVPERF:-}" ] && [ -n "${SPDK_DIR:-}" ]; then
  BDEVPERF=$SPDK_DIR/build/examples/bdevperf
  [ -x "$SPDK_DIR/bdevperf.sh" ] && BDEVPERF=$SPDK_DIR/bdevperf.sh
fi
BDEVPERF=${BDEVPERF:-}
spdk_note=
if ! want spdk; then
  spdk_note="not run (-s without spdk)"
elif [ -z "$BDEVPERF" ]; then
  spdk_note="skipped: SPDK_DIR is not set (no SPDK build on this machine)"
elif [ ! -x "$BDEVPERF" ]; then
  spdk_note="skipped: $BDEVPERF is not an executable"
else
  for bdev in null malloc uring; do
    workloads="randread"
    [ $bdev = malloc ] && workloads="randread randwrite"
    for w in $workloads; do
      for qd in 1 128; do
        for mask in 0x1 0x3; do
          extra=()
          [ $mask = 0x3 ] && extra=(-C)
          record spdk "spdk-$bdev-$w-q$qd-m$mask" bdev=$bdev w=$w qd=$qd mask=$mask -- \
            "$BDEVPERF" --json "$OUT/cfg/$bdev.json" -q "$qd" -o 4096 -w "$w" -t "$T" -m "$mask" "${extra[@]}"
        done
      done
    done
  done
  # raid5f full-stripe write: the same config (four RAM bdevs, bdev_raid_create raid5f with
  # 16 KiB strips) loaded by both tools; 48 KiB aligned sequential writes, QD 128, 1 reactor.
  m=""
  for i in 0 1 2 3; do
    m+="{\"method\":\"bdev_malloc_create\",\"params\":{\"name\":\"R5f$i\",\"num_blocks\":131072,\"block_size\":512}},"
  done
  printf '{"subsystems":[{"subsystem":"bdev","config":[%s{"method":"bdev_raid_create","params":{"name":"Raid5f","raid_level":"raid5f","base_bdevs":["R5f0","R5f1","R5f2","R5f3"],"strip_size_kb":16}}]}]}\n' \
    "$m" >"$OUT/cfg/raid5f.json"
  record raid5f "raid5f-plexd" tool=plexd -- \
    "$PERF" --json "$OUT/cfg/raid5f.json" -T Raid5f -q 128 -o "$R5_FULL" -w write -t "$T" -m 0x1 \
    --output json --no-progress
  record spdk "raid5f-spdk" tool=spdk bdev=raid5f -- \
    "$BDEVPERF" --json "$OUT/cfg/raid5f.json" -T Raid5f -q 128 -o "$R5_FULL" -w write -t "$T" -m 0x1
fi

# ---- 4. profile of the in-process null path ----------------------------------------------
PROFILE_CMD=()
profile_tool=none
pt=$PT
if ! want profile; then
  :
elif [ $PERF_OK = 1 ]; then
  profile_tool=perf
  PROFILE_CMD=(perf record -e cpu-clock -F 2999 -o "$OUT/perf.data" -- "$PERF" --json "$OUT/cfg/null.json"
    -q 128 -o 4096 -w randread -t "$pt" -m 0x1 --no-progress)
  echo "== profile: ${PROFILE_CMD[*]}" >&2
  if "${PROFILE_CMD[@]}" >"$OUT/profile-run.out" 2>"$OUT/profile-run.err"; then
    perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol --percent-limit 0.8 \
      2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 >"$OUT/profile.txt" || true
  fi
elif command -v valgrind >/dev/null; then
  profile_tool=callgrind
  PROFILE_CMD=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$PERF"
    --json "$OUT/cfg/null.json" -q 128 -o 4096 -w randread --ios 300000 -m 0x1 --no-progress)
  echo "== profile: ${PROFILE_CMD[*]}" >&2
  if "${PROFILE_CMD[@]}" >"$OUT/profile-run.out" 2>"$OUT/profile-run.err"; then
    callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | sed -n '/PROGRAM TOTALS/,$p' |
      grep -v -e '^-' -e '^$' -e 'file:function' | cut -c1-160 | head -25 >"$OUT/profile.txt" || true
  fi
fi

elapsed=$((SECONDS - t0))
# What the report needs besides bench/out/*, so -r can rewrite it later.
{
  printf 'T=%q\nstarted_at=%q\nload_before=%q\nelapsed=%q\nprofile_tool=%q\n' \
    "$T" "$started_at" "$load_before" "$elapsed" "$profile_tool"
  printf 'PROFILE_CMD_TEXT=%q\nVHOST_PROFILE_CMD=%q\nbusiest=%q\n' \
    "${PROFILE_CMD[*]:-}" "${VHOST_PROFILE_CMD:-}" "$busiest"
  printf 'SECTIONS_RUN=%q\nspdk_note=%q\nR5_FULL=%q\n' "$SECTIONS" "$spdk_note" "$R5_FULL"
} >"$OUT/meta.env"
fi # REPORT_ONLY

# ---- the report ----------------------------------------------------------------------------
[ -f "$OUT/meta.env" ] || { echo "run.sh -r: no previous run in $OUT" >&2; exit 1; }
# shellcheck source=/dev/null
. "$OUT/meta.env"
python3 - "$OUT" "$RESULTS" "$T" "$started_at" "$load_before" "$elapsed" "$profile_tool" \
  "$PROFILE_CMD_TEXT" "$VHOST_PROFILE_CMD" "$busiest" "${SECTIONS_RUN:-}" "${spdk_note:-}" \
  "${R5_FULL:-49152}" <<'PY'
import json, os, re, subprocess, sys

out, results, T, started, load, elapsed, ptool, pcmd, vpcmd, busiest, sections, spdk_note, r5_full = sys.argv[1:14]
ALL_SECTIONS = "inproc,volume,raid5,vhost,spdk,profile"
sections = sections or ALL_SECTIONS
rows = []
for line in open(os.path.join(out, "manifest.tsv")):
    kind, name, rc, meta, cmd = line.rstrip("\n").split("\t")
    m = dict(kv.split("=", 1) for kv in meta.split())
    text = open(os.path.join(out, name + ".out")).read()
    r = {"kind": kind, "name": name, "rc": int(rc), "meta": m, "cmd": cmd, "data": None}
    if kind == "spdk":
        # bdevperf's table: " Total : IOPS MiB/s Fail/s TO/s Average min max"
        for l in text.splitlines():
            if re.match(r"\s*Total\s*:", l):
                f = l.split(":", 1)[1].split()
                r["data"] = {"total_iops": float(f[0]), "avg_us": float(f[4]) if len(f) > 4 else None}
    else:
        try:
            r["data"] = json.loads(text)
        except ValueError:
            pass
    rows.append(r)

def fmt_iops(v):
    if v is None: return "—"
    return f"{v/1e6:.2f} M" if v >= 1e6 else f"{v/1e3:.1f} k"

def fmt(v, d=None):
    if v is None: return "—"
    if d is None: d = 3 if v < 1 else 2 if v < 10 else 1
    return f"{v:.{d}f}"

def find(kind, **kw):
    for r in rows:
        if r["kind"] == kind and all(r["meta"].get(k) == v for k, v in kw.items()):
            return r
    return None

def iops(r):
    return r["data"]["total_iops"] if r and r["data"] and r["data"].get("total_iops") is not None else None

def lat(r, key):
    if not r or not r["data"] or "jobs" not in r["data"]: return None
    if key == "avg":
        js = r["data"]["jobs"]
        n = sum(j["ios"] for j in js)
        return sum(j["latency_us"]["avg"] * j["ios"] for j in js) / n if n else None
    return r["data"]["total_latency_us"][key]

def ratio(a, b):
    return f"{a/b:.2f}×" if a and b else "—"

# SPDK 26.09-pre bdevperf on this machine, one core, QD 128, 4 KiB (issue 5).
spdk_ref = {("null", "randread"): 19e6, ("malloc", "randread"): 1.7e6, ("malloc", "randwrite"): 1.33e6}
have_spdk = any(r["kind"] == "spdk" for r in rows)

L = []
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
nproc = os.cpu_count()
kernel = os.uname().release
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
def has(kind):
    return any(r["kind"] == kind for r in rows)

L += ["# plexperf: side-by-side results", "",
      "Generated by `bench/run.sh" + ("" if T == "5" else f" -t {T}")
      + ("" if sections == ALL_SECTIONS else f" -s {sections}") + "`; rerun it to regenerate this file. "
      "Every number below was measured side by side in that one run, on one machine, "
      f"{T} s per configuration.", "",
      "## Machine", "",
      f"- CPU: {cpu or 'unknown'}; `nproc` = {nproc}; kernel {kernel}",
      f"- started {started}, load average before the run: {load}; whole run took {elapsed} s",
      f"- busiest processes when the run started (averaged over their lifetime, as `ps` reports): {busiest}",
      f"- plexd {rev}{' (with uncommitted changes)' if dirty else ''}, release build (`cargo build --release --bins`)",
      "- Other work was running on this 2-core machine during the run (other engineers' tests and "
      "QEMU guests), so absolute numbers are noisy and the back-ends did not have a core to themselves; "
      "the side-by-side ratios and the per-CPU figures are what to read.", ""]

goals = []
# ---- in-process table
if has("inproc"):
    L += ["## In-process (plexperf runs plexd's engine; 4 KiB)", "",
          "One reactor: `-m 0x1`. Two reactors: `-m 0x3 -C` (each reactor runs a job on the same bdev, on disjoint halves). "
          "CPU is the whole process's CPU seconds per million I/Os.", ""]
    hdr = "| bdev | workload | QD | 1 reactor IOPS | IOPS per CPU-s | p99 µs | 2 reactors IOPS | IOPS per CPU-s | p99 µs | 2r / 1r |"
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    if have_spdk:
        hdr += " SPDK 1r IOPS | plexd/SPDK 1r | SPDK 2r IOPS | plexd/SPDK 2r |"
        sep += "---|---|---|---|"
    hdr += " SPDK ref (issue 5) | 1r / ref | per CPU-s / ref |"
    sep += "---|---|---|"
    L += [hdr, sep]
    def per_cpu(r):
        c = r["data"].get("cpu_seconds_per_million_ios") if r and r["data"] else None
        return 1e6 / c if c else None
    for bdev, w in [("null", "randread"), ("malloc", "randread"), ("malloc", "randwrite"), ("uring", "randread")]:
        for qd in ["1", "128"]:
            a = find("inproc", bdev=bdev, w=w, qd=qd, mask="0x1")
            b = find("inproc", bdev=bdev, w=w, qd=qd, mask="0x3")
            if not a and not b: continue
            line = (f"| {bdev} | {w} | {qd} | {fmt_iops(iops(a))} | {fmt_iops(per_cpu(a))} | {fmt(lat(a,'p99'))} | "
                    f"{fmt_iops(iops(b))} | {fmt_iops(per_cpu(b))} | {fmt(lat(b,'p99'))} | {ratio(iops(b), iops(a))} |")
            if have_spdk:
                sa = find("spdk", bdev=bdev, w=w, qd=qd, mask="0x1")
                sb = find("spdk", bdev=bdev, w=w, qd=qd, mask="0x3")
                line += f" {fmt_iops(iops(sa))} | {ratio(iops(a), iops(sa))} | {fmt_iops(iops(sb))} | {ratio(iops(b), iops(sb))} |"
            ref = spdk_ref.get((bdev, w)) if qd == "128" else None
            line += f" {fmt_iops(ref)} | {ratio(iops(a), ref)} | {ratio(per_cpu(a), ref)} |"
            L.append(line)
            if qd == "128" and (bdev, w) in [("null", "randread"), ("malloc", "randread")]:
                goals.append((f"{bdev} randread, 1 reactor, QD 128 ≥ {fmt_iops(ref)} IOPS",
                              iops(a) is not None and iops(a) >= ref,
                              f"{fmt_iops(iops(a))} ({fmt_iops(per_cpu(a))} per CPU-second)"))
            if qd == "128" and w == "randread" and bdev in ("null", "malloc"):
                eff = per_cpu(b) / per_cpu(a) if per_cpu(a) and per_cpu(b) else None
                goals.append((f"{bdev} randread QD 128: 2 reactors ≥ 1.8× one",
                              bool(iops(a) and iops(b) and iops(b) >= 1.8 * iops(a)),
                              f"{ratio(iops(b), iops(a))}; per CPU-second each of the 2 reactors does {fmt(eff, 2)} of what one "
                              f"does alone, so {fmt(2 * eff, 2) if eff else '—'}× if each had a whole core"))
    L += ["", "IOPS per CPU-s: requests completed per second of CPU the plexperf process used (the whole "
          "process, all reactors), which holds up better than IOPS when other work takes CPU time from the reactors. "
          "SPDK ref: SPDK 26.09-pre bdevperf on this machine, 1 core, QD 128 (issue 5); "
          "measured when the machine was quiet, so compare it with the per-CPU-second column when the load is high."]
    L.append("")

# ---- volume table
if has("volume"):
    L += ["## Volumes (in-process, 1 reactor, QD 128, 4 KiB)", "",
          "`bench/volumes.json`: `Single` is one 256 MiB RAM bdev; `stripe4` a 256 MiB 4-column stripe "
          "(64 KiB stripe unit) and `mirror2` a 256 MiB 2-way mirror, both in a disk group over four RAM bdevs. "
          "Runs side by side in this run; the ratio is against `Single` with the same workload.", "",
          "| volume | workload | IOPS | vs Single | p50 µs | p99 µs | CPU s per M I/O |", "|---|---|---|---|---|---|---|"]
    for w in ["randread", "randwrite"]:
        base = find("volume", target="Single", w=w)
        for t in ["Single", "stripe4", "mirror2"]:
            r = find("volume", target=t, w=w)
            c = r["data"].get("cpu_seconds_per_million_ios") if r and r["data"] else None
            L.append(f"| {t} | {w} | {fmt_iops(iops(r))} | {ratio(iops(r), iops(base))} | "
                     f"{fmt(lat(r,'p50'))} | {fmt(lat(r,'p99'))} | {fmt(c, 3)} |")
        s4 = find("volume", target="stripe4", w=w)
        if w == "randread":
            goals.append(("4-column stripe over RAM bdevs: randread costs < 10% vs one RAM bdev (issue 4)",
                          bool(iops(s4) and iops(base) and iops(s4) >= 0.9 * iops(base)),
                          ratio(iops(s4), iops(base))))
    L.append("")

# ---- RAID-5 table
def gbps(r):
    if not r or not r["data"]: return None
    if r["kind"] == "spdk":
        return iops(r) * int(r5_full) / 1e9 if iops(r) else None
    return sum(j["mibps"] for j in r["data"].get("jobs", [])) * 1048576 / 1e9 or None

def met(v, goal):
    return "—" if v is None else ("yes" if v >= goal else "no")

if has("raid5"):
    full_kib = int(r5_full) // 1024
    L += ["## RAID-5 (in-process, 1 reactor, QD 128)", "",
          "`bench/raid5.json`: `raid5` is a 256 MiB RAID-5 volume of 4 columns and `raid0` a 256 MiB "
          "4-column stripe, both in group `r5` on the same four RAM bdevs with the same 16 KiB stripe unit; "
          "`degraded` is the same RAID-5 volume in group `r5d` on four other RAM bdevs, imported with one "
          "of them missing (column NODEVICE, volume DEGRADED); `raid5s` is a RAID-5 volume like `raid5` in group `r5` "
          "with `skip_copy` (full-stripe writes compute parity from the request's buffers instead of copying them first). "
          f"Full-stripe write: sequential {full_kib} KiB writes (3 data units, aligned to the row), "
          "so every RAID-5 write is a full stripe computing parity without reads. Ratio: RAID-5 / raid0, same workload; "
          "the goals are judged on it. Per CPU-s: the same ratio of work done per second of CPU the process used, "
          "which holds up better when other work takes CPU time from the reactor.", "",
          "| row | RAID-5 | raid0 | RAID-5 / raid0 | goal | met | per CPU-s | RAID-5 p50 µs | RAID-5 p99 µs | raid0 p99 µs |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    def cpu_ratio(a, b):
        ca = a["data"].get("cpu_seconds_per_million_ios") if a and a["data"] else None
        cb = b["data"].get("cpu_seconds_per_million_ios") if b and b["data"] else None
        return f"{cb / ca:.2f}×" if ca and cb else "—"
    for label, w, o, goal, unit in [("4 KiB randwrite (read-modify-write)", "randwrite", "4096", 0.25, "iops"),
                                    ("4 KiB randread", "randread", "4096", 0.9, "iops"),
                                    (f"full-stripe sequential write ({full_kib} KiB)", "write", r5_full, 0.7, "gbps")]:
        a = find("raid5", target="raid5", w=w, o=o)
        b = find("raid5", target="raid0", w=w, o=o)
        va, vb = (iops(a), iops(b)) if unit == "iops" else (gbps(a), gbps(b))
        show = fmt_iops if unit == "iops" else (lambda v: "—" if v is None else f"{v:.2f} GB/s")
        rr = va / vb if va and vb else None
        L.append(f"| {label} | {show(va)} | {show(vb)} | {fmt(rr, 2) + '×' if rr else '—'} | ≥ {goal}× | {met(rr, goal)} | "
                 f"{cpu_ratio(a, b)} | {fmt(lat(a,'p50'))} | {fmt(lat(a,'p99'))} | {fmt(lat(b,'p99'))} |")
        goals.append((f"RAID-5 {label}: ≥ {goal}× raid0 on the same disks (issue 12)",
                      bool(rr and rr >= goal), f"{fmt(rr, 2)}×" if rr else "—"))
    sa = find("raid5", target="raid5s", w="write", o=r5_full)
    sb = find("raid5", target="raid0", w="write", o=r5_full)
    sr = gbps(sa) / gbps(sb) if gbps(sa) and gbps(sb) else None
    L.append(f"| full-stripe sequential write ({full_kib} KiB), `skip_copy` volume | "
             f"{'—' if gbps(sa) is None else f'{gbps(sa):.2f} GB/s'} | {'—' if gbps(sb) is None else f'{gbps(sb):.2f} GB/s'} | "
             f"{fmt(sr, 2) + '×' if sr else '—'} | ≥ 0.7× | {met(sr, 0.7)} | {cpu_ratio(sa, sb)} | "
             f"{fmt(lat(sa,'p50'))} | {fmt(lat(sa,'p99'))} | {fmt(lat(sb,'p99'))} |")
    goals.append((f"RAID-5 full-stripe sequential write ({full_kib} KiB) with skip_copy: ≥ 0.7× raid0 (issue 12)",
                  bool(sr and sr >= 0.7), f"{fmt(sr, 2)}×" if sr else "—"))
    d = find("raid5", target="degraded", w="randread")
    h = find("raid5", target="raid5", w="randread", o="4096")
    z = find("raid5", target="raid0", w="randread", o="4096")
    L.append(f"| degraded 4 KiB randread (one column missing) | {fmt_iops(iops(d))} | {fmt_iops(iops(z))} | "
             f"{ratio(iops(d), iops(z))} | none set ({ratio(iops(d), iops(h))} of healthy RAID-5) | — | "
             f"{cpu_ratio(d, z)} | {fmt(lat(d,'p50'))} | {fmt(lat(d,'p99'))} | {fmt(lat(z,'p99'))} |")
    lg = find("raid5", target="logged", w="randwrite")
    nl = find("raid5", target="raid5", w="randwrite", o="4096")
    cost = 1 - iops(lg) / iops(nl) if iops(lg) and iops(nl) else None
    L.append(f"| RAID-5 with a log, 4 KiB randwrite (the log's cost vs no log; goal ≤ 30%) | {fmt_iops(iops(lg))} | "
             f"{fmt_iops(iops(nl))} (no log) | {ratio(iops(lg), iops(nl))} | cost ≤ 30% | "
             f"{'—' if cost is None else ('yes' if cost <= 0.30 else 'no')} | {cpu_ratio(lg, nl)} | "
             f"{fmt(lat(lg,'p50'))} | {fmt(lat(lg,'p99'))} | {fmt(lat(nl,'p99'))} |")
    goals.append(("RAID-5 log costs ≤ 30% of read-modify-write IOPS (issue 12)",
                  bool(cost is not None and cost <= 0.30), "—" if cost is None else f"{cost * 100:.0f}%"))
    L += ["", "In the log row the second column is the same RAID-5 volume without a log (group `r5`), "
          "and the ratio is logged / not logged.", ""]

if "spdk" in sections or has("raid5f"):
    L += ["## raid5f full-stripe write: plexd vs SPDK bdevperf (1 reactor, QD 128)", ""]
    p5, s5 = find("raid5f", tool="plexd"), find("spdk", tool="spdk", bdev="raid5f")
    if p5 or s5:
        rr = gbps(p5) / gbps(s5) if gbps(p5) and gbps(s5) else None
        L += [f"`bdev_raid_create raid5f` over four RAM bdevs, 16 KiB strips, sequential {int(r5_full) // 1024} KiB writes, "
              "the same config file (`bench/out/cfg/raid5f.json`) loaded by both.", "",
              "| plexd | SPDK | plexd / SPDK | goal | met |", "|---|---|---|---|---|",
              f"| {'—' if gbps(p5) is None else f'{gbps(p5):.2f} GB/s'} | {'—' if gbps(s5) is None else f'{gbps(s5):.2f} GB/s'} | "
              f"{fmt(rr, 2) + '×' if rr else '—'} | ≥ 1.2× | {met(rr, 1.2)} |", ""]
        goals.append(("raid5f full-stripe write ≥ 1.2× SPDK bdevperf raid5f (issue 12)", bool(rr and rr >= 1.2),
                      f"{fmt(rr, 2)}×" if rr else "—"))
    else:
        L += [f"Not measured: {spdk_note or 'no SPDK run'}.", ""]

# ---- vhost table
if has("vhost"):
    L += ["## vhost-user path (plexperf --vhost-user client, 1 queue, 4 KiB randread)", "",
          "Back-end pinned to CPU 0 (plexd: one reactor, default adaptive polling; qemu-storage-daemon: one iothread, "
          "default adaptive polling), client pinned to CPU 1, busy-polling its virtqueue. "
          "Null backing: plexd null bdev vs `driver=null-co,read-zeroes=off` (neither touches the data). "
          "File backing: the same 1 GiB file, plexd uring bdev (O_DIRECT) vs `driver=file,aio=io_uring,cache.direct=on`. "
          "Back-end CPU: the daemon's CPU seconds per million I/Os over the client's run.", ""]
    L += ["| backing | QD | plexd IOPS | qsd IOPS | plexd / qsd | plexd p50 µs | qsd p50 µs | plexd p99 µs | qsd p99 µs | plexd p99.9 µs | qsd p99.9 µs | plexd CPU s/M | qsd CPU s/M |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    hz = os.sysconf("SC_CLK_TCK")
    def bcpu(r):
        if not r or not r["data"] or "backend_ticks" not in r["meta"]: return None
        n = sum(j["ios"] for j in r["data"]["jobs"])
        return int(r["meta"]["backend_ticks"]) / hz * 1e6 / n if n else None
    for backing in ["null", "file"]:
        for qd in ["128", "1"]:
            p = find("vhost", backend="plexd", backing=backing, qd=qd)
            q = find("vhost", backend="qsd", backing=backing, qd=qd)
            L.append(f"| {backing} | {qd} | {fmt_iops(iops(p))} | {fmt_iops(iops(q))} | {ratio(iops(p), iops(q))} | "
                     f"{fmt(lat(p,'p50'))} | {fmt(lat(q,'p50'))} | {fmt(lat(p,'p99'))} | {fmt(lat(q,'p99'))} | "
                     f"{fmt(lat(p,'p99_9'))} | {fmt(lat(q,'p99_9'))} | {fmt(bcpu(p),3)} | {fmt(bcpu(q),3)} |")
    L += ["", "Latency distributions of these runs: `bench/out/vhost-*.svg` (`--plot`).", ""]
    p = find("vhost", backend="plexd", backing="null", qd="128")
    q = find("vhost", backend="qsd", backing="null", qd="128")
    goals.append(("vhost null QD 128: plexd ≥ 2× qemu-storage-daemon IOPS",
                  bool(iops(p) and iops(q) and iops(p) >= 2 * iops(q)), ratio(iops(p), iops(q))))
    goals.append(("vhost null QD 128: plexd p99 below qemu-storage-daemon's",
                  bool(lat(p, "p99") and lat(q, "p99") and lat(p, "p99") < lat(q, "p99")),
                  f"{fmt(lat(p, 'p99'))} µs vs {fmt(lat(q, 'p99'))} µs"))
L += ["## Goals in this run", "", "| goal | met | measured |", "|---|---|---|"]
L += [f"| {g} | {'yes' if ok else 'no'} | {m} |" for g, ok, m in goals] + [""]

failed = [r for r in rows if r["rc"] != 0 or r["data"] is None]
if failed:
    L += ["## Runs that failed", ""] + [f"- `{r['name']}` (exit {r['rc']}): see `bench/out/{r['name']}.err`" for r in failed] + [""]

# ---- profile
pfile = os.path.join(out, "profile.txt")
if "profile" in sections:
    L += ["## Profile: in-process null randread, 1 reactor, QD 128", ""]
if "profile" not in sections:
    pass
elif ptool != "none" and os.path.exists(pfile) and os.path.getsize(pfile):
    L += [f"`{pcmd}` ({ptool}; `perf stat` hardware counters are not available in this VM, "
          "software cpu-clock sampling is), top functions by self time:", "", "```"]
    L += [re.sub(r"(\s+-)+\s*$", "", l.rstrip()) for l in open(pfile)] + ["```", ""]
else:
    L += ["No profiler worked on this machine (neither `perf record -e cpu-clock` nor valgrind).", ""]
vfile = os.path.join(out, "profile-vhost.txt")
if vpcmd and os.path.exists(vfile) and os.path.getsize(vfile):
    L += ["### plexd serving the vhost-user null path (1 reactor, client QD 128)", "",
          f"`{vpcmd}`, top functions of plexd by self time:", "", "```"]
    L += [re.sub(r"(\s+-)+\s*$", "", l.rstrip()) for l in open(vfile)] + ["```", ""]
notes = "bench/profile-notes.md"
if "profile" in sections and os.path.exists(notes):
    L += [open(notes).read().strip(), ""]

# ---- commands
L += ["## Exact commands", ""]
daemons = [l.rstrip() for l in open(os.path.join(out, "daemons.txt"))]
if daemons:
    L += ["Daemons (started one at a time, each stopped before the next):", "", "```"] + daemons + ["```", ""]
L += ["Clients, in run order:", "", "```"]
L += [r["cmd"] for r in rows] + ["```", ""]
L += ["Configs are written by the script to `bench/out/cfg/` (one bdev each, in SPDK's JSON format, "
      "so SPDK's bdevperf loads the same files)."]
for n in ["null", "malloc", "uring"]:
    L += ["", f"`{n}.json`: `" + open(os.path.join(out, "cfg", n + ".json")).read().strip() + "`"]
open(results, "w").write("\n".join(L) + "\n")
print(f"wrote {results}", file=sys.stderr)
PY
