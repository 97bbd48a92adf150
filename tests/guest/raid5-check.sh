#!/bin/sh
# Guest side of the RAID-5 test (tests/tests/vhost_raid5.rs; runs in the test guest as /test.sh,
# busybox ash): fio crc32c write + verify on /dev/vda, a RAID-5 volume, while the host fails a
# column and rebuilds it. The guest prints markers on the console; the host answers with lines
# on /dev/ttyS1 (run-guest.sh GUEST_CTL_SOCKET). Kernel command line words:
#
#   plexd_disk_size=BYTES   /dev/vda has this size
#   plexd_r5_a=OFF:LEN      region A: written across the column failure
#   plexd_r5_c=OFF:LEN      region C: written during the rebuild
#   plexd_r5_rate=RATE      fio's write rate limit (e.g. 4m), so the writes outlast the host's
#                           actions
#
# Steps (each fio pass is randwrite, 4k-128k blocks, libaio QD16, O_DIRECT, crc32c verify with
# verify_fatal, so a verify error or an I/O error fails the script):
#   1. fio A writes region A in the background; "R5-A-WRITING"; the host fails a disk and, once
#      the column is stale, answers "stale"; fio A must still be running then. fio A ends with
#      its verify pass (degraded): "R5-A-DONE".
#   2. On "go-rebuild": fio C (write + verify) on region C in the background, and verify-only
#      passes of region A one after another for as long as fio C runs; "R5-C-WRITING"; the host
#      starts the rebuild. All must pass: "R5-C-DONE".
#   3. On "rebuilt" (the host saw the rebuild done and the column current): verify-only passes
#      of regions A and C, then "raid5-check: PASS".

fail() { echo "RAID5-CHECK FAIL: $*"; exit 1; }
log() { echo "raid5-check: $*"; }
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n1; }
field() { echo "$1" | cut -d: -f"$2"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

await() {   # await LINE: the next line from the host must be LINE
  read -t 200 -r line <&3 || fail "no '$1' from the host within 200 s"
  [ "$line" = "$1" ] || fail "expected '$1' from the host, got '$line'"
  log "host: $1 at uptime $(uptime_s)s"
}

# fio_r5 NAME REGION [fio options...]: the pass over REGION (OFF:LEN), output in /tmp/NAME.out.
# A verify-only pass (--verify_only) replays the same offsets and sizes (same job, same seed).
fio_r5() {
  name=$1 region=$2
  shift 2
  fio --name="$name" --filename=/dev/vda --offset="$(field "$region" 1)" \
      --size="$(field "$region" 2)" --rw=randwrite --bsrange=4k-128k --ioengine=libaio \
      --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 "$@" >"/tmp/$name.out" 2>&1
}

# check_fio TAG PID NAME: waits for a background fio; fails with its output unless it passed.
check_fio() {
  wait "$2"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    cat "/tmp/$3.out"
    fail "fio $1 exited with status $rc"
  fi
  log "fio $1 ok at uptime $(uptime_s)s: $(grep -E '^ +(READ|WRITE):' "/tmp/$3.out" | tr -s ' ' | tr '\n' ';')"
}

log "start at uptime $(uptime_s)s"
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  [ "$i" -le 100 ] || fail "/dev/vda did not appear"
  sleep 0.1
done
size=$(blockdev --getsize64 /dev/vda) || fail "blockdev --getsize64"
want=$(arg plexd_disk_size)
[ -z "$want" ] || [ "$size" = "$want" ] || fail "size $size, expected $want"
a=$(arg plexd_r5_a)
c=$(arg plexd_r5_c)
rate=$(arg plexd_r5_rate)
[ -n "$a" ] && [ -n "$c" ] && [ -n "$rate" ] || fail "plexd_r5_a, plexd_r5_c and plexd_r5_rate are required"
log "/dev/vda: $size bytes; region A $a, region C $c, write rate $rate"
exec 3<>/dev/ttyS1 || fail "cannot open /dev/ttyS1 (run-guest.sh GUEST_CTL_SOCKET)"
stty -F /dev/ttyS1 -echo

# 1. Region A written across the column failure, then verified degraded.
fio_r5 r5a "$a" --rate=,"$rate" &
pid_a=$!
sleep 1
kill -0 "$pid_a" 2>/dev/null || { cat /tmp/r5a.out; fail "fio A ended within 1 s"; }
echo "R5-A-WRITING"
await stale
kill -0 "$pid_a" 2>/dev/null ||
  fail "fio A had ended when the column went stale: lower plexd_r5_rate"
check_fio "A (written across the failure, verified degraded)" "$pid_a" r5a
echo "R5-A-DONE"

# 2. During the rebuild: region C written and verified, region A verified.
await go-rebuild
fio_r5 r5c "$c" --rate=,"$rate" &
pid_c=$!
(
  n=0
  while kill -0 "$pid_c" 2>/dev/null; do
    fio_r5 r5a "$a" --verify_only || exit 1
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "fio C ended before region A was verified once" >/tmp/r5a.out; exit 1; }
  log "region A verified $n times while fio C ran"
) &
pid_av=$!
sleep 1
kill -0 "$pid_c" 2>/dev/null || { cat /tmp/r5c.out; fail "fio C ended within 1 s"; }
echo "R5-C-WRITING"
check_fio "C (written and verified during the rebuild)" "$pid_c" r5c
check_fio "A (verified during the rebuild, repeatedly)" "$pid_av" r5a
echo "R5-C-DONE"

# 3. After the rebuild: everything the guest wrote reads back right.
await rebuilt
fio_r5 r5a "$a" --verify_only || { cat /tmp/r5a.out; fail "fio A verify after the rebuild"; }
log "fio A verified after the rebuild"
fio_r5 r5c "$c" --verify_only || { cat /tmp/r5c.out; fail "fio C verify after the rebuild"; }
log "fio C verified after the rebuild"
exec 3<&-
log "PASS at uptime $(uptime_s)s"
