#!/usr/bin/env bash
# Starts plexd in the foreground with a demo config (a 256 MiB RAM bdev "Malloc0", a null bdev
# "Null0", and disk group "demo" over four 64 MiB RAM disks holding a 96 MiB mirror-stripe
# volume, bdev "demo/vol01") on the default socket /var/tmp/plexd.sock. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
sock=${PLEXD_SOCKET:-/var/tmp/plexd.sock}
cat <<MSG
plexd demo: socket $sock, config examples/demo.json
In another terminal:
  build/release/plexctl -s $sock bdev list
  build/release/plexctl -s $sock bdev iostat
  build/release/plexctl -s $sock print                 # the volume tree, vxprint style
  build/release/plexctl -s $sock save-config
MSG
exec build/release/plexd -r "$sock" --config examples/demo.json "$@"
