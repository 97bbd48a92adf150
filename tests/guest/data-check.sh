#!/bin/sh
# Guest-side data checks of /dev/vda (runs inside the test guest as /test.sh, busybox ash).
# Everything it does is driven by kernel command line words (GUEST_APPEND on the host), so
# the host decides what is on the disk and checks afterwards what the guest left there.
# Offsets and lengths are in bytes and must be multiples of 4096. Steps, in this order:
#
#   plexd_disk_size=BYTES      /dev/vda has this size
#   plexd_lbs=BYTES            /sys/block/vda/queue/logical_block_size
#   plexd_ro=0|1               /sys/block/vda/ro
#   plexd_check=OFF:LEN:SHA256 (repeatable) the disk's bytes [OFF, OFF+LEN), read with
#                              O_DIRECT, have this SHA-256
#   plexd_write=OFF:LEN:TAG    (repeatable) writes the guest pattern (below) to [OFF, OFF+LEN)
#                              with dd + fsync, then reads it back with O_DIRECT and compares
#   plexd_fio=OFF:LEN          fio randwrite + crc32c verify (libaio, iodepth 8) on that range
#   plexd_write_fails=OFF      (repeatable) writing 4 KiB at OFF must fail, buffered + fsync
#                              and O_DIRECT (a read-only disk)
#   plexd_handshake=1          print PLEXD-GUEST-READY, then wait (up to 200 s) for a line
#                              "release" on /dev/ttyS1 (run-guest.sh GUEST_CTL_SOCKET), then
#                              write + verify with fio again (the device still works)
#
# The guest pattern: 64-byte records, one per 64 bytes of the range; the record at absolute
# disk offset O is printf("%s %016x ", TAG, O) padded with '.' to 63 bytes, plus '\n'.
# (tests/tests/vhost_guest.rs builds the same bytes to check the host file.)
#
# Exit status 0 = every requested check passed. Output lines start with "data-check:".

fail() { echo "DATA-CHECK FAIL: $*"; exit 1; }
log() { echo "data-check: $*"; }
args() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }   # every value of NAME=
arg() { args "$1" | tail -n1; }
field() { echo "$1" | cut -d: -f"$2"; }
blocks() {   # blocks BYTES: BYTES / 4096, refusing unaligned values
  [ $(($1 % 4096)) -eq 0 ] || fail "$1 is not a multiple of 4096"
  echo $(($1 / 4096))
}
disk_sha() {   # disk_sha OFF LEN: SHA-256 of the disk's bytes, read with O_DIRECT
  dd if=/dev/vda bs=4096 skip="$(blocks "$1")" count="$(blocks "$2")" iflag=direct 2>/dev/null |
    sha256sum | cut -d' ' -f1
}
pattern() {   # pattern OFF LEN TAG > FILE
  awk -v off="$1" -v len="$2" -v tag="$3" 'BEGIN {
    pad = "................................................................"
    for (o = off; o < off + len; o += 64) {
      s = sprintf("%s %016x ", tag, o)
      printf "%s%s\n", s, substr(pad, 1, 63 - length(s))
    }
  }'
}
fio_verify() {   # fio_verify NAME OFF LEN
  fio --name="$1" --filename=/dev/vda --offset="$2" --size="$3" --rw=randwrite \
      --bsrange=4k-64k --ioengine=libaio --iodepth=8 --direct=1 \
      --verify=crc32c --do_verify=1 --verify_fatal=1 --minimal >/tmp/fio.out 2>&1 ||
    { cat /tmp/fio.out; return 1; }
  log "fio $1: randwrite + crc32c verify of [$2, +$3) ok"
}

log "start at uptime $(cut -d' ' -f1 /proc/uptime)s"
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  [ "$i" -le 100 ] || fail "/dev/vda did not appear"
  sleep 0.1
done

size=$(blockdev --getsize64 /dev/vda) || fail "blockdev --getsize64"
lbs=$(cat /sys/block/vda/queue/logical_block_size)
ro=$(cat /sys/block/vda/ro)
log "/dev/vda: $size bytes, logical block $lbs, ro $ro, serial '$(cat /sys/block/vda/serial 2>/dev/null)'"
want=$(arg plexd_disk_size)
[ -z "$want" ] || [ "$size" = "$want" ] || fail "size $size, expected $want"
want=$(arg plexd_lbs)
[ -z "$want" ] || [ "$lbs" = "$want" ] || fail "logical block size $lbs, expected $want"
want=$(arg plexd_ro)
[ -z "$want" ] || [ "$ro" = "$want" ] || fail "/sys/block/vda/ro is $ro, expected $want"

for c in $(args plexd_check); do
  off=$(field "$c" 1) len=$(field "$c" 2) sum=$(field "$c" 3)
  got=$(disk_sha "$off" "$len")
  [ "$got" = "$sum" ] || fail "check [$off, +$len): sha256 $got, expected $sum"
  log "check [$off, +$len) ok"
done

n=0
for w in $(args plexd_write); do
  off=$(field "$w" 1) len=$(field "$w" 2) tag=$(field "$w" 3)
  n=$((n + 1))
  pattern "$off" "$len" "$tag" > /tmp/w.$n
  [ "$(wc -c < /tmp/w.$n)" -eq "$len" ] || fail "pattern for [$off, +$len) has the wrong length"
  dd if=/tmp/w.$n of=/dev/vda bs=4096 seek="$(blocks "$off")" conv=notrunc,fsync 2>/dev/null ||
    fail "dd write [$off, +$len)"
  want=$(sha256sum < /tmp/w.$n | cut -d' ' -f1)
  got=$(disk_sha "$off" "$len")
  [ "$got" = "$want" ] || fail "read-back of [$off, +$len): sha256 $got, expected $want"
  rm -f /tmp/w.$n
  log "write '$tag' [$off, +$len) + read-back ok"
done

f=$(arg plexd_fio)
if [ -n "$f" ]; then
  fio_verify region "$(field "$f" 1)" "$(field "$f" 2)" || fail "fio on [$f]"
fi

for off in $(args plexd_write_fails); do
  b=$(blocks "$off")
  if dd if=/dev/zero of=/dev/vda bs=4096 seek="$b" count=1 conv=notrunc,fsync 2>/tmp/dd.err; then
    fail "buffered write at $off succeeded on a read-only disk"
  fi
  log "buffered write at $off refused: $(grep -m1 "^dd:" /tmp/dd.err)"
  if dd if=/dev/zero of=/dev/vda bs=4096 seek="$b" count=1 oflag=direct conv=notrunc 2>/tmp/dd.err; then
    fail "O_DIRECT write at $off succeeded on a read-only disk"
  fi
  log "O_DIRECT write at $off refused: $(grep -m1 "^dd:" /tmp/dd.err)"
done

if [ "$(arg plexd_handshake)" = 1 ]; then
  exec 3<>/dev/ttyS1 || fail "cannot open /dev/ttyS1 (run-guest.sh GUEST_CTL_SOCKET)"
  stty -F /dev/ttyS1 -echo
  echo "PLEXD-GUEST-READY"
  read -t 200 -r line <&3 || fail "no release line on /dev/ttyS1 within 200 s"
  [ "$line" = release ] || fail "unexpected line on /dev/ttyS1: '$line'"
  exec 3<&-
  log "released"
  fio_verify after-release 0 8388608 || fail "fio after the release"
fi

sync
log "PASS at uptime $(cut -d' ' -f1 /proc/uptime)s"
