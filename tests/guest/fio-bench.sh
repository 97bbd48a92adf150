#!/bin/sh
# Guest-side fio benchmark of /dev/vda (runs inside the test guest as /test.sh, busybox ash).
# Prints fio's JSON report between the lines BENCH-JSON-BEGIN and BENCH-JSON-END, for the host
# to parse (bench/guest-sanity.sh), and `BENCH-IRQS N`: the disk's request-queue interrupts
# (virtio MSI-X vectors named *-req.*) taken during the fio run. Knobs (kernel command line words, GUEST_APPEND on the host):
#   plexd_fio_rw=randread  plexd_fio_bs=4k  plexd_fio_iodepth=32  plexd_fio_numjobs=2
#   plexd_fio_runtime=10   (seconds, time based; direct=1, libaio, one merged report)
# Under TCG the guest is CPU-bound: the figures are a sanity check, not a measurement.
fail() { echo "FIO-BENCH FAIL: $*"; exit 1; }
arg() {
  v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n1)
  echo "${v:-$2}"
}
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ "$i" -le 100 ] || fail "/dev/vda did not appear"; sleep 0.1
done
irqs() {   # sum over CPUs of the virtio request-queue interrupt counts
  awk -v n="$(nproc)" '/virtio[0-9]*-req/ { for (i = 2; i <= n + 1; i++) s += $i } END { print s + 0 }' /proc/interrupts
}
irq0=$(irqs)
fio --name=bench --filename=/dev/vda --rw="$(arg plexd_fio_rw randread)" \
    --bs="$(arg plexd_fio_bs 4k)" --iodepth="$(arg plexd_fio_iodepth 32)" \
    --numjobs="$(arg plexd_fio_numjobs 2)" --runtime="$(arg plexd_fio_runtime 10)" \
    --time_based --ioengine=libaio --direct=1 --group_reporting \
    --eta=never --output-format=json --output=/tmp/fio.json || fail "fio"
irq1=$(irqs)
echo; echo "BENCH-IRQS $((irq1 - irq0))"
echo BENCH-JSON-BEGIN
cat /tmp/fio.json
echo BENCH-JSON-END
