#!/usr/bin/env bash
# Sanity figures for the vhost-user-blk path with a real guest: the same TCG test guest
# (tests/guest) runs the same fio job (4k randread, iodepth 32, 2 jobs, libaio, direct, 10 s)
# against
#   (a) plexd serving a null bdev (once per cpumask in PLEXD_MASKS), and
#   (b) qemu-storage-daemon serving driver=null-co (one iothread),
# both exporting vhost-user-blk with 2 queues, and prints IOPS and p99 completion latency side
# by side, with the guest's disk interrupts per I/O, the server's CPU time over the whole
# guest run (boot included), and the exact commands. Under TCG the guest is CPU-bound (QEMU
# emulates every guest instruction), so these numbers check that nothing is badly wrong; they
# do not measure the back-ends. On a small host, CPU the server spends (polling included) is
# taken from the guest's vCPU threads.
#
# Usage: bench/guest-sanity.sh
# Env:   PLEXD_MASKS   plexd cpumasks to run (default "0x1 0x3"; 0x1 = one reactor, like
#                      qemu-storage-daemon's one iothread)
#        PLEXD_ARGS    extra plexd arguments (e.g. "--poll-mode interrupt"; default none)
#        FIO_RUNTIME   seconds of fio per run (default 10)
# Needs: qemu-system-x86_64 and the guest image (tests/guest/build-guest.sh, run here) and
#        qemu-storage-daemon (Debian: qemu-utils; 10.0 from bookworm-backports here).
set -euo pipefail
cd "$(dirname "$0")/.."

masks=${PLEXD_MASKS:-0x1 0x3}
read -ra plexd_args <<<"${PLEXD_ARGS:-}"
runtime=${FIO_RUNTIME:-10}
size=$((1 << 30))

command -v qemu-storage-daemon >/dev/null ||
  { echo "guest-sanity: qemu-storage-daemon not found (apt-get install qemu-utils)" >&2; exit 1; }
cargo build --release --bins --quiet
tests/guest/build-guest.sh

work=$(mktemp -d /tmp/plexd-sanity.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

wait_for_socket() {   # wait_for_socket PATH
  local i
  for i in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "guest-sanity: $1 did not appear" >&2
  return 1
}

# stop_server NAME: records the server's CPU time (user + system, seconds) in $work/NAME.cpu.
stop_server() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f\n", ($14 + $15) / hz }' "/proc/$server_pid/stat" > "$work/$1.cpu"
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=
}

# run_guest NAME SOCKET: boots the guest against SOCKET and leaves fio's JSON in $work/NAME.json.
guest_cmd=(tests/guest/run-guest.sh tests/guest/fio-bench.sh
           -chardev "socket,id=vub0,path=SOCKET"
           -device vhost-user-blk-pci,chardev=vub0,num-queues=2,queue-size=256)
run_guest() {
  local rc=0
  GUEST_TIMEOUT=240 GUEST_APPEND="plexd_fio_runtime=$runtime" \
    "${guest_cmd[@]/SOCKET/$2}" > "$work/$1.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    cat "$work/$1.log" >&2
    echo "guest-sanity: the guest failed against $1 (status $rc)" >&2
    exit 1
  fi
  sed -n '/^BENCH-JSON-BEGIN$/,/^BENCH-JSON-END$/p' "$work/$1.log" | sed '1d;$d' > "$work/$1.json"
}

results=()
commands=()

for mask in $masks; do
  name=plexd-$mask
  plexd_cmd=(build/release/plexd -m "$mask" "${plexd_args[@]}" -r "$work/plexd.sock" -S "$work")
  "${plexd_cmd[@]}" 2> "$work/$name.plexd.log" &
  server_pid=$!
  wait_for_socket "$work/plexd.sock"
  ctl=(build/release/plexctl -s "$work/plexd.sock")
  "${ctl[@]}" bdev null create Null0 --size 1GiB --block-size 512 >/dev/null
  "${ctl[@]}" call vhost_create_blk_controller '{"ctrlr":"vhost.0","dev_name":"Null0"}' >/dev/null
  echo "guest-sanity: $name: fio ${runtime}s ..." >&2
  run_guest "$name" "$work/vhost.0"
  stop_server "$name"
  rm -f "$work/plexd.sock"
  results+=("$name")
  echo "plexd null bdev (-m $mask${PLEXD_ARGS:+ $PLEXD_ARGS})" > "$work/$name.label"
  commands+=("$name: ${plexd_cmd[*]}"
             "    ${ctl[*]} bdev null create Null0 --size 1GiB --block-size 512"
             "    ${ctl[*]} call vhost_create_blk_controller '{\"ctrlr\":\"vhost.0\",\"dev_name\":\"Null0\"}'")
done

qsd_cmd=(qemu-storage-daemon
         --object iothread,id=iot0
         --blockdev "driver=null-co,node-name=null0,size=$size,read-zeroes=off"
         --export "type=vhost-user-blk,id=exp0,node-name=null0,addr.type=unix,addr.path=$work/qsd.sock,writable=on,num-queues=2,iothread=iot0")
"${qsd_cmd[@]}" 2> "$work/qsd.log" &
server_pid=$!
wait_for_socket "$work/qsd.sock"
echo "guest-sanity: qemu-storage-daemon: fio ${runtime}s ..." >&2
run_guest qsd "$work/qsd.sock"
stop_server qsd
results+=(qsd)
echo "qemu-storage-daemon null-co (1 iothread)" > "$work/qsd.label"
commands+=("qsd: ${qsd_cmd[*]}")

guest_line="${guest_cmd[*]}"
echo
echo "Guest: GUEST_APPEND=plexd_fio_runtime=$runtime $guest_line"
echo "       (qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m 512M; see tests/guest/run-guest.sh)"
echo "fio in the guest: --rw=randread --bs=4k --iodepth=32 --numjobs=2 --ioengine=libaio --direct=1 --runtime=$runtime --time_based --group_reporting"
echo "Host: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) (after the runs)"
echo
python3 - "$work" "${results[@]}" <<'EOF'
import json, sys
work, names = sys.argv[1], sys.argv[2:]
print(f"{'back-end':<50} {'IOPS':>8} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>8} {'irq/IO':>7} {'srv CPU s':>9}")
for n in names:
    with open(f"{work}/{n}.json") as f:
        job = json.load(f)["jobs"][0]["read"]
    with open(f"{work}/{n}.label") as f:
        label = f.read().strip()
    irqs = None
    with open(f"{work}/{n}.log") as f:
        for line in f:
            if line.startswith("BENCH-IRQS "):
                irqs = int(line.split()[1])
    with open(f"{work}/{n}.cpu") as f:
        cpu = f.read().strip()
    pct = job["clat_ns"]["percentile"]
    per_io = f"{irqs / job['total_ios']:.2f}" if irqs is not None and job["total_ios"] else "?"
    print(f"{label:<50} {job['iops']:>8.0f} {pct['50.000000']/1e3:>8.0f} "
          f"{pct['99.000000']/1e3:>8.0f} {pct['99.900000']/1e3:>8.0f} {per_io:>7} {cpu:>9}")
EOF
echo
echo "Commands:"
printf '  %s\n' "${commands[@]}"
