#!/usr/bin/env bash
# Builds plexd's minimal test guest from Debian 12 (bookworm) packages:
#
#   build/guest/vmlinuz            kernel of linux-image-cloud-amd64 (6.1)
#   build/guest/initramfs.cpio.gz  busybox-static, the virtio-blk modules, fio + its
#                                  shared libraries + ld.so, and an /init that loads the
#                                  modules, runs /test.sh, prints `PLEXD-GUEST-EXIT <status>`
#                                  and powers off.
#
# Nothing is installed on the host except missing host tools (qemu-system-x86, cpio, ...)
# via apt. The guest's packages are fetched with `apt-get download` into build/guest/debs
# and unpacked with `dpkg-deb -x` into a scratch staging dir.
#
# Idempotent and safe to rerun (also concurrently: a lock serialises builds). When the
# outputs exist and were built by this exact version of the script, it only checks the
# host tools and exits (well under a second). `--force` (or PLEXD_GUEST_REBUILD=1) re-resolves
# package versions against the apt lists and rebuilds; already downloaded .debs are reused.
#
# Usage: tests/guest/build-guest.sh [--force]
# Env:   PLEXD_GUEST_DIR  output dir (default: <repo>/build/guest)
# All progress messages go to stderr; stdout stays empty.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
out=${PLEXD_GUEST_DIR:-$repo_root/build/guest}
force=${PLEXD_GUEST_REBUILD:-0}
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# Modules /init loads, in this order (dependencies from modules.dep are inserted first).
guest_modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk)
kernel_meta=linux-image-cloud-amd64

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# A new machine's apt lists can be older than the archive: versions they name may no longer be
# downloadable ("Can't find a source to download version ..."). Every path that resolves or
# installs packages refreshes them first, once per run; the cached path below never does.
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update (refreshing the package lists before resolving versions)"
    as_root apt-get update -q >&2 || log "warning: apt-get update failed; continuing with the lists we have"
    apt_updated=1
  fi
}

# ---- host tools (installed only when missing; apt never removes anything here) ------------
apt_install() {
  local opts=(-y -q --no-install-recommends --no-remove)
  apt_update_once
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >&2
}
# qemu-system-x86 must match an installed qemu-utils / qemu-system-common: e.g. qemu-utils
# 10.0 from bookworm-backports (qemu-storage-daemon) Breaks qemu-system-common 7.2, and a
# plain install would remove it. Install the same version, from bookworm-backports through a
# throw-away source list if the configured sources lack it (the host's apt config is untouched).
install_qemu() {
  local v codename tmp_apt rc=0
  v=$(dpkg-query -W -f='${Status} ${Version}\n' qemu-utils qemu-system-common 2>/dev/null |
      awk '$3 == "installed" { print $4; exit }')
  if [ -z "$v" ]; then apt_install qemu-system-x86; return; fi
  apt_update_once
  if apt-cache madison qemu-system-x86 | awk -F' *[|] *' -v v="$v" '$2 == v { f = 1 } END { exit !f }'; then
    apt_install "qemu-system-x86=$v"; return
  fi
  case $v in *bpo*) ;; *) die "qemu-system-x86 $v (matching the installed qemu-utils) is not in the apt sources" ;; esac
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  tmp_apt=$(mktemp -d)
  mkdir -p "$tmp_apt/lists/partial"
  { cat /etc/apt/sources.list 2>/dev/null || true
    echo "deb http://deb.debian.org/debian $codename-backports main"; } > "$tmp_apt/sources.list"
  local o=(-o "Dir::Etc::sourcelist=$tmp_apt/sources.list" -o "Dir::State::Lists=$tmp_apt/lists"
           -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  log "installing qemu-system-x86=$v from $codename-backports"
  as_root apt-get "${o[@]}" -o APT::Sandbox::User=root update -q >&2 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${o[@]}" install -y -q --no-install-recommends \
      --no-remove -t "$codename-backports" "qemu-system-x86=$v" >&2 || rc=$?
  rm -rf "$tmp_apt"
  [ "$rc" -eq 0 ] || die "could not install qemu-system-x86=$v"
}
command -v qemu-system-x86_64 >/dev/null || install_qemu
need_pkgs=()
need_tool() { command -v "$1" >/dev/null || need_pkgs+=("$2"); }
need_tool cpio cpio
need_tool gzip gzip
need_tool timeout coreutils
need_tool flock util-linux
need_tool chroot coreutils
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing host tools: ${need_pkgs[*]}"
  apt_install "${need_pkgs[@]}"
fi

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

stamp_want="script-sha256 $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
if [ "$force" != 1 ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ] &&
   [ -f "$out/stamp" ] && [ "$(head -n1 "$out/stamp")" = "$stamp_want" ]; then
  exit 0   # cached
fi

t0=$(date +%s)
log "building the test guest in $out"

# ---- resolve packages ---------------------------------------------------------------------
apt_update_once
kernel_pkg=$(apt-cache depends "$kernel_meta" | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[ -n "$kernel_pkg" ] || die "cannot resolve the kernel package $kernel_meta depends on"

# fio's shared libraries: the closure of fio's Depends restricted to library packages, plus
# libc6. Which .so files actually go into the guest is decided later by the staged ld.so's
# `--list` (ldd) on the extracted binary, so the guest uses no file from the host.
lib_closure() {   # breadth first, one apt-cache call per level (each call costs ~0.5 s)
  local -A seen=()
  local level=("$@") next d
  while [ "${#level[@]}" -gt 0 ]; do
    next=()
    for d in $(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
                 --no-replaces --no-enhances "${level[@]}" |
               awk '$1 ~ /^\|?(Pre)?Depends:$/ && $2 !~ /^</ { print $2 }' | sort -u); do
      case $d in
        libc6 | libc-bin | *-common | *-data | *-bin) continue ;;
        lib* | zlib1g) ;;
        *) continue ;;
      esac
      [ -n "${seen[$d]:-}" ] && continue
      seen[$d]=1; next+=("$d"); echo "$d"
    done
    level=("${next[@]}")
  done
}
mapfile -t fio_libs < <(lib_closure fio | sort)
pkgs=("$kernel_pkg" busybox-static fio libc6 "${fio_libs[@]}")
log "kernel package: $kernel_pkg; ${#pkgs[@]} packages in total"

# Expected .deb file name of each candidate (apt-get download's naming: epoch ':' -> %3a).
debs_dir=$out/debs
mkdir -p "$debs_dir"
declare -A deb_of=()
missing=()
while read -r pkg ver arch; do
  f="${pkg}_${ver//:/%3a}_${arch}.deb"
  deb_of[$pkg]=$f
  [ -s "$debs_dir/$f" ] || missing+=("$pkg=$ver")
done < <(apt-cache show --no-all-versions "${pkgs[@]}" |
         awk '/^Package:/ { p = $2 } /^Version:/ { v = $2 } /^Architecture:/ { a = $2 }
              /^$/ { if (p != "") print p, v, a; p = "" } END { if (p != "") print p, v, a }')
for p in "${pkgs[@]}"; do [ -n "${deb_of[$p]:-}" ] || die "no candidate for package $p"; done
if [ "${#missing[@]}" -gt 0 ]; then
  log "downloading ${#missing[@]} .deb(s) into $debs_dir"
  (cd "$debs_dir" && apt-get -q -o APT::Sandbox::User=root download "${missing[@]}" >&2) ||
    die "apt-get download failed although the package lists were just refreshed; see the apt error above"
fi
# Drop .debs no longer wanted (e.g. superseded versions).
for f in "$debs_dir"/*.deb; do
  keep=0
  for p in "${pkgs[@]}"; do [ "$(basename "$f")" = "${deb_of[$p]}" ] && keep=1 && break; done
  [ "$keep" = 1 ] || { log "removing stale $(basename "$f")"; rm -f "$f"; }
done

# ---- unpack ---------------------------------------------------------------------------------
stage=$out/stage
rm -rf "$stage" "$out/rootfs"
mkdir -p "$stage"
for p in "${pkgs[@]}"; do dpkg-deb -x "$debs_dir/${deb_of[$p]}" "$stage"; done
bb=$stage/bin/busybox
[ -x "$bb" ] || die "busybox-static did not provide bin/busybox"

# ---- kernel + modules -------------------------------------------------------------------------
kver=${kernel_pkg#linux-image-}
moddir=$stage/lib/modules/$kver
[ -f "$stage/boot/vmlinuz-$kver" ] || die "no boot/vmlinuz-$kver in $kernel_pkg"
[ -d "$moddir" ] || die "no lib/modules/$kver in $kernel_pkg"
# busybox insmod cannot load compressed modules: decompress any (bookworm's 6.1 ships plain .ko).
ncomp=0
while IFS= read -r -d '' m; do
  case $m in
    *.ko.xz) xz -dq "$m" ;;
    *.ko.zst) zstd -dq --rm "$m" ;;
    *.ko.gz) gzip -dq "$m" ;;
  esac
  ncomp=$((ncomp + 1))
done < <(find "$moddir" \( -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) -print0)
[ "$ncomp" -eq 0 ] || log "decompressed $ncomp kernel modules"
# The package has no modules.dep (Debian runs depmod in postinst): generate it.
if [ ! -s "$moddir/modules.dep" ] || [ "$ncomp" -gt 0 ]; then
  "$bb" depmod -b "$stage" "$kver"
fi

declare -A modpath=() loaded=()
while IFS= read -r line; do
  path=${line%%:*}; name=$(basename "$path" .ko); name=${name//-/_}
  modpath[$name]=$path
done < "$moddir/modules.dep"
mod_order=()
add_module() {   # depth-first: dependencies before the module itself
  local name=${1//-/_} dep
  [ -n "${loaded[$name]:-}" ] && return 0
  loaded[$name]=1
  if [ -z "${modpath[$name]:-}" ]; then
    grep -q "/$name.ko" "$moddir/modules.builtin" 2>/dev/null && { log "module $name is built in"; return 0; }
    die "kernel module $name not found"
  fi
  local deps=()
  read -ra deps <<<"$(grep "^${modpath[$name]}:" "$moddir/modules.dep" | cut -d: -f2-)"
  for dep in "${deps[@]}"; do add_module "$(basename "$dep" .ko)"; done
  mod_order+=("$name")
}
for m in "${guest_modules[@]}"; do add_module "$m"; done
log "modules: ${mod_order[*]}"

# ---- rootfs ---------------------------------------------------------------------------------
root=$out/rootfs
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc,usr/bin,usr/lib/x86_64-linux-gnu,usr/lib64}
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s bin "$root/sbin"; ln -s ../bin "$root/usr/sbin"
mkdir -p "$root/usr/lib/modules/$kver"
chmod 1777 "$root/tmp"

install -m 0755 "$bb" "$root/bin/busybox"
for a in $("$bb" --list); do
  case $a in busybox | init | linuxrc) continue ;; esac
  ln -s busybox "$root/bin/$a"
done

printf '%s\n' "${mod_order[@]}" > "$root/etc/guest-modules"
for m in "${mod_order[@]}"; do
  install -m 0644 "$moddir/${modpath[$m]}" "$root/lib/modules/$kver/$m.ko"
done

# fio and every library it loads, resolved by the staged (Debian) ld.so against the staged
# libraries only: `ld.so --list` is what ldd runs.
stage_path() {   # resolve symlinks inside the stage (Debian has some absolute ones)
  local f=$1 t n=0
  while [ -L "$f" ]; do
    t=$(readlink "$f")
    case $t in /*) f=$stage$t ;; *) f=$(dirname "$f")/$t ;; esac
    n=$((n + 1)); [ "$n" -lt 20 ] || die "symlink loop at $1"
  done
  echo "$f"
}
install -m 0755 "$stage/usr/bin/fio" "$root/usr/bin/fio"
stage_ldso=$(find "$stage/lib" "$stage/usr/lib" -name 'ld-linux-x86-64.so.2' -type f | head -n1)
[ -n "$stage_ldso" ] || die "libc6 did not provide ld-linux-x86-64.so.2"
libpath=$(find "$stage" -path "$stage/lib/modules" -prune -o -name '*.so*' \( -type f -o -type l \) \
            -printf '%h\n' | sort -u | paste -sd:)
ldd_out=$("$stage_ldso" --library-path "$libpath" --list "$stage/usr/bin/fio") ||
  die "ld.so --list failed on fio:"$'\n'"$ldd_out"
nlibs=0 interp=
while read -r soname arrow path _; do
  if [[ $soname == /* ]]; then        # fio's ELF interpreter, /lib64/ld-linux-x86-64.so.2
    interp=$soname
  elif [ "$arrow" = "=>" ]; then
    case $path in
      "$stage"/*) ;;
      *) die "fio needs $soname, not found in the staged packages (resolved to '$path')" ;;
    esac
    install -m 0755 "$(stage_path "$path")" "$root/usr/lib/x86_64-linux-gnu/$soname"
    nlibs=$((nlibs + 1))
  fi
done <<<"$ldd_out"
[ -n "$interp" ] || die "ld.so --list did not report fio's ELF interpreter"
install -m 0755 "$stage_ldso" "$root/usr/lib/x86_64-linux-gnu/$(basename "$interp")"
[ -e "$root$interp" ] || ln -s "/usr/lib/x86_64-linux-gnu/$(basename "$interp")" "$root$interp"
log "fio: $nlibs shared libraries + $interp"

cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/:/bin/sh
EOF
echo 'root:x:0:' > "$root/etc/group"

cat > "$root/init" <<'EOF'
#!/bin/sh
# plexd test guest /init (generated by tests/guest/build-guest.sh).
export PATH=/bin:/usr/bin HOME=/ TMPDIR=/tmp
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/shm /dev/pts && mount -t tmpfs tmpfs /dev/shm
for m in $(cat /etc/guest-modules); do
  insmod "/lib/modules/$(uname -r)/$m.ko" || echo "init: insmod $m failed"
done
cd /
if [ -f /test.sh ]; then
  /bin/sh /test.sh
  status=$?
else
  echo "init: no /test.sh, nothing to run"
  status=0
fi
sync
echo "PLEXD-GUEST-EXIT $status"
poweroff -f
# -no-reboot turns a reboot (or a panic, with panic=-1) into QEMU exiting as well.
reboot -f
EOF
chmod 0755 "$root/init"

# Sanity check: the guest's fio runs with nothing but the guest's own files.
if [ "$(id -u)" -eq 0 ]; then
  chroot "$root" /usr/bin/fio --version >/dev/null || die "fio does not run inside the guest rootfs"
else
  "$root$interp" --library-path "$root/usr/lib/x86_64-linux-gnu" "$root/usr/bin/fio" --version >/dev/null ||
    die "fio does not run with the guest's libraries"
fi

# ---- outputs (written atomically; the stamp last) -------------------------------------------
cp "$stage/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
  gzip -6 -n > "$out/initramfs.cpio.gz.tmp"
mv -f "$out/vmlinuz.tmp" "$out/vmlinuz"
mv -f "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
rm -rf "$stage"   # the .debs stay cached; the rootfs is kept for inspection
{
  echo "$stamp_want"
  echo "kernel $kernel_pkg"
  for p in "${pkgs[@]}"; do echo "deb ${deb_of[$p]}"; done
} > "$out/stamp"
log "done in $(( $(date +%s) - t0 )) s: $out/vmlinuz, $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1))"
