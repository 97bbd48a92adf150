#!/usr/bin/env bash
# Boots plexd's test guest under QEMU (TCG) and runs one guest-side shell script in it.
#
# Usage: tests/guest/run-guest.sh TEST_SCRIPT [extra qemu args...]
#
# TEST_SCRIPT is packed as /test.sh into a small gzip'd cpio that is appended to the cached
# initramfs (build/guest/initramfs.cpio.gz; built or refreshed first by build-guest.sh, which
# is a no-op when cached). The guest's /init loads the virtio modules, runs `/bin/sh /test.sh`
# (busybox ash) with the serial console as stdout/stderr, prints `PLEXD-GUEST-EXIT <status>`
# and powers off. Extra arguments go to qemu verbatim, e.g. a disk:
#   -drive file=disk.img,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0,serial=s0
# or a vhost-user-blk export:
#   -chardev socket,id=vub0,path=SOCK -device vhost-user-blk-pci,chardev=vub0,num-queues=2
# Guest RAM is a shared memfd (share=on), as vhost-user needs; the default NIC is off (-nic none).
#
# The serial output (qemu's stderr merged in, CRs and terminal escapes stripped) goes to stdout, and also to
# $GUEST_LOG if set. Exit status: the guest's PLEXD-GUEST-EXIT status; 124 if the timeout
# hit; 125 if qemu ended without printing the line (boot failure, panic, bad qemu args).
#
# Env: GUEST_TIMEOUT  seconds before qemu is killed (default 300)
#      GUEST_LOG      also write the serial output to this file
#      GUEST_MEM      guest RAM, also the memfd size (default 512M)
#      GUEST_SMP      vCPUs (default 2)
#      GUEST_APPEND   extra kernel command line words (the guest sees them in /proc/cmdline)
#      GUEST_CTL_SOCKET  if set, a second serial port (the guest's /dev/ttyS1) is connected to
#                     a Unix socket that qemu creates at this path (server, no wait): a host
#                     test can connect and send lines to the guest script, e.g. a go-ahead.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -r "$1" ] || [ -d "$1" ]; then
  echo "usage: $0 TEST_SCRIPT [extra qemu args...]" >&2
  exit 2
fi
test_script=$1
shift

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
guest_dir=${PLEXD_GUEST_DIR:-$repo_root/build/guest}
timeout_s=${GUEST_TIMEOUT:-300}
mem=${GUEST_MEM:-512M}
smp=${GUEST_SMP:-2}

"$script_dir/build-guest.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexd-guest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# /test.sh in its own cpio, concatenated after the cached initramfs (the kernel unpacks
# concatenated gzip'd cpio archives in order).
mkdir "$tmp/root"
cat "$test_script" > "$tmp/root/test.sh"   # also works for <(...)
chmod 0755 "$tmp/root/test.sh"
(cd "$tmp/root" && echo test.sh | cpio --quiet -o -H newc -R 0:0) | gzip -1 > "$tmp/test.cpio.gz"
cat "$guest_dir/initramfs.cpio.gz" "$tmp/test.cpio.gz" > "$tmp/initrd.cpio.gz"

ctl_args=()
if [ -n "${GUEST_CTL_SOCKET:-}" ]; then
  # An explicit -serial turns off -nographic's default one: give the console back to stdio.
  ctl_args=(-serial mon:stdio
            -chardev "socket,id=plexdctl,path=$GUEST_CTL_SOCKET,server=on,wait=off"
            -serial chardev:plexdctl)
fi

logs=("$tmp/serial.log")
[ -n "${GUEST_LOG:-}" ] && logs+=("$GUEST_LOG")

set +e
timeout --kill-after=10 "$timeout_s" \
  qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp "$smp" -m "$mem" \
    -nographic -no-reboot -nic none \
    -kernel "$guest_dir/vmlinuz" -initrd "$tmp/initrd.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet${GUEST_APPEND:+ $GUEST_APPEND}" \
    -object "memory-backend-memfd,id=mem,size=$mem,share=on" -numa node,memdev=mem \
    "${ctl_args[@]}" "$@" </dev/null 2>&1 |
  sed -u -e 's/\r$//' -e 's/\x1bc//g' -e 's/\x1b\[[?0-9;]*[A-Za-z]//g' | tee "${logs[@]}"
qemu_rc=${PIPESTATUS[0]}
set -e

if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
  echo "run-guest: timed out after ${timeout_s}s" >&2
  exit 124
fi
line=$(grep -E '^PLEXD-GUEST-EXIT [0-9]+$' "$tmp/serial.log" | tail -n1 || true)
if [ -z "$line" ]; then
  echo "run-guest: no PLEXD-GUEST-EXIT line (qemu exit status $qemu_rc)" >&2
  exit 125
fi
exit "${line#PLEXD-GUEST-EXIT }"
