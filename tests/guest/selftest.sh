#!/bin/sh
# Guest-side self-test of the test guest (runs inside it as /test.sh under busybox ash).
# Checks that a virtio-blk disk shows up as /dev/vda with the expected size and serial,
# writes and verifies it with fio (psync, then libaio with two non-overlapping jobs), flushes
# it (fsync), and discards it. Exit status 0 = pass; run-guest.sh propagates it.
#
# Host side, with a plain QEMU disk (64 MiB by default):
#   truncate -s 64M /tmp/x.img
#   tests/guest/run-guest.sh tests/guest/selftest.sh \
#     -drive file=/tmp/x.img,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0,serial=selftest
# Or a vhost-user-blk export instead of the -drive/-device pair:
#   -chardev socket,id=vub0,path=SOCK -device vhost-user-blk-pci,chardev=vub0,num-queues=2
#
# Expectations can be changed with kernel command line words (GUEST_APPEND on the host):
#   plexd_disk_size=BYTES    (default 67108864)
#   plexd_disk_serial=STR    (default "selftest"; "-" skips the check)
#   plexd_disk_queues=N      number of blk-mq hardware queues (default "-": not checked)

fail() { echo "SELFTEST FAIL: $*"; exit 1; }
arg() {   # arg NAME DEFAULT: value of NAME= on the kernel command line
  v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n1)
  echo "${v:-$2}"
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }

echo "selftest: start at uptime $(uptime_s)s"
want_size=$(arg plexd_disk_size 67108864)
want_serial=$(arg plexd_disk_serial selftest)
want_queues=$(arg plexd_disk_queues -)

i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  [ "$i" -le 50 ] || fail "/dev/vda did not appear"
  sleep 0.1
done

size=$(blockdev --getsize64 /dev/vda) || fail "blockdev --getsize64 /dev/vda"
echo "selftest: /dev/vda size $size bytes (logical block $(blockdev --getss /dev/vda))"
[ "$size" = "$want_size" ] || fail "size $size, expected $want_size"

serial=$(cat /sys/block/vda/serial 2>/dev/null) || fail "no /sys/block/vda/serial"
echo "selftest: serial '$serial'"
[ "$want_serial" = "-" ] || [ "$serial" = "$want_serial" ] || fail "serial '$serial', expected '$want_serial'"
queues=$(find /sys/block/vda/mq -mindepth 1 -maxdepth 1 | wc -l)
echo "selftest: queues $queues, nr_requests $(cat /sys/block/vda/queue/nr_requests)"
[ "$want_queues" = "-" ] || [ "$queues" = "$want_queues" ] || fail "$queues queues, expected $want_queues"

half=$((size / 2))
echo "selftest: fio psync randwrite + crc32c verify"
fio --name=v --filename=/dev/vda --rw=randwrite --bsrange=4k-64k --size=32M \
    --ioengine=psync --verify=crc32c --do_verify=1 --direct=1 ||
  fail "fio psync"

if fio --enghelp 2>/dev/null | grep -qw libaio; then
  echo "selftest: fio libaio iodepth=16, 2 jobs on disjoint halves"
  fio --name=v2 --filename=/dev/vda --rw=randwrite --bsrange=4k-64k --size="$half" \
      --numjobs=2 --offset_increment="$half" --ioengine=libaio --iodepth=16 \
      --verify=crc32c --do_verify=1 --direct=1 --group_reporting ||
    fail "fio libaio"
else
  echo "selftest: fio has no libaio engine; 2 psync jobs on disjoint halves"
  fio --name=v2 --filename=/dev/vda --rw=randwrite --bsrange=4k-64k --size="$half" \
      --numjobs=2 --offset_increment="$half" --ioengine=psync \
      --verify=crc32c --do_verify=1 --direct=1 --group_reporting ||
    fail "fio psync, 2 jobs"
fi

# Flush: buffered writes, each followed by fsync, which the kernel turns into a flush request
# when the device reports a volatile write cache (virtio FLUSH without CONFIG_WCE: "write back").
echo "selftest: fio write + fsync (flush), write_cache '$(cat /sys/block/vda/queue/write_cache)'"
fio --name=flush --filename=/dev/vda --rw=write --bs=4k --size=1M --ioengine=psync \
    --fsync=1 --verify=crc32c --do_verify=1 ||
  fail "fio fsync"
sync && blockdev --flushbufs /dev/vda || fail "blockdev --flushbufs"
echo "selftest: flush ok"

if ! command -v blkdiscard >/dev/null; then
  echo "selftest: SKIP discard (busybox has no blkdiscard)"
elif [ "$(cat /sys/block/vda/queue/discard_max_bytes)" = 0 ]; then
  echo "selftest: SKIP discard (device does not support it)"
else
  blkdiscard /dev/vda || fail "blkdiscard"
  echo "selftest: blkdiscard ok (discard_max_bytes $(cat /sys/block/vda/queue/discard_max_bytes))"
fi

echo "selftest: PASS at uptime $(uptime_s)s"
