#!/usr/bin/env bash
# Checks that build-guest.sh works on a machine whose apt lists are older than the archive
# (issue 10, item 1). Makes the lists stale on purpose: rewrites one package of the guest
# (libpcre2-8-0 by default) in the local bookworm-security list to an older version than the
# archive serves, so a download resolved from those lists fails as on a new machine
# ("Can't find a source to download version ..." or "File has unexpected size"). Then builds
# the guest into a scratch directory with `--force`; it must pass, because build-guest.sh
# refreshes the lists before it resolves anything. The original lists are put back at exit
# unless build-guest.sh replaced them with fresh ones.
#
# Needs root (it edits /var/lib/apt/lists) and lz4. Not part of scripts/test.sh: it changes
# the machine's apt state, which a test suite must not do behind the user's back.
#
# Usage: tests/guest/stale-lists-check.sh [PACKAGE] [OLD_VERSION]
set -euo pipefail
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=${1:-libpcre2-8-0}
old=${2:-10.42-1+deb12u1}
[ "$(id -u)" -eq 0 ] || { echo "stale-lists-check: needs root" >&2; exit 2; }
command -v lz4 >/dev/null || { echo "stale-lists-check: needs lz4" >&2; exit 2; }

lists=/var/lib/apt/lists
list=$(ls "$lists"/*bookworm-security_main_binary-amd64_Packages.lz4 2>/dev/null | head -n1)
[ -n "$list" ] || { echo "stale-lists-check: no bookworm-security Packages.lz4 list" >&2; exit 2; }

scratch=$(mktemp -d)
backup=$scratch/lists
cp -a "$lists" "$backup"
restore() {
  # Put the original lists back only if the stale one is still there (build-guest.sh failed
  # before refreshing); fresh lists from its apt-get update are kept.
  if cmp -s "$list" "$scratch/stale.lz4"; then
    rm -rf "$lists" && cp -a "$backup" "$lists"
  fi
  rm -rf "$scratch"
}
trap restore EXIT

lz4cat "$list" | python3 -c '
import re, sys
pkg, old = sys.argv[1], sys.argv[2]
blocks = sys.stdin.read().split("\n\n")
n = 0
for i, b in enumerate(blocks):
    if b.startswith("Package: %s\n" % pkg):
        cur = re.search(r"^Version: (.*)$", b, re.M).group(1)
        blocks[i] = b.replace(cur, old)
        n += 1
if n == 0:
    sys.exit("package %s is not in the list" % pkg)
sys.stdout.write("\n\n".join(blocks))
' "$pkg" "$old" >"$scratch/stale.txt"
lz4 -q -f "$scratch/stale.txt" "$scratch/stale.lz4"
cp "$scratch/stale.lz4" "$list"
# Old lists come with an old release file: make the local one name the stale list's hash, so
# that apt-get update sees the mirror's as newer and fetches the list again (as it would on a
# machine whose lists are really old), instead of keeping the local list as current.
release=${list%_main_binary-amd64_Packages.lz4}_InRelease
sum=$(sha256sum <"$scratch/stale.txt" | cut -d' ' -f1)
size=$(stat -c %s "$scratch/stale.txt")
awk -v sum="$sum" -v size="$size" '
  $3 == "main/binary-amd64/Packages" && length($1) == 64 { printf " %s %16s %s\n", sum, size, $3; next }
  { print }' "$release" >"$scratch/release" && cp "$scratch/release" "$release"
echo "stale-lists-check: the local list now offers $pkg $old; building the guest" >&2

PLEXD_GUEST_DIR=$scratch/guest "$script_dir/build-guest.sh" --force
echo "stale-lists-check: PASS: the guest was built from stale lists ($(apt-cache policy "$pkg" | awk '$1 == "Candidate:" { print $2 }') after the refresh)" >&2
