#!/usr/bin/env bash
# Builds SPDK's bdevperf on this machine (Debian 12) for bench/run.sh's "spdk" section and
# raid5f row, from local git directories (no network needed except the Debian and PyPI
# package registries). Idempotent: a second run reuses the tree and only rebuilds what changed.
#
# Usage: bench/build-spdk.sh [SPDK_GIT [ISAL_GIT [OUT]]]
#   SPDK_GIT  SPDK git directory            (default /work/.mirror/spdk+spdk/repo)
#   ISAL_GIT  intel/isa-l git directory     (default /work/.mirror/intel+isa-l/repo)
#   OUT       SPDK tree to create or reuse  (default /work/spdk)
# The same three can be given as env vars SPDK_GIT, ISAL_GIT, SPDK_OUT. Other env vars:
#   SPDK_COMMIT  SPDK commit to check out (default 3230130e..., the one the reference used;
#                isa-l is checked out at the commit that SPDK commit pins as its submodule)
#   JOBS         make -j (default 2)      NICE  nice level for every build step (default 19)
#   SKIP_APT=1   do not run apt-get       TARGET  make target (default all; SPDK's make passes
#                its goal down to every subdirectory, so "examples" alone does not work)
#   SPDK_URING=1 also build the uring bdev (liburing-dev, --with-uring instead of the
#                reference's --without-uring): bench/run.sh's spdk section has a uring row,
#                which fails ("Method 'bdev_uring_create' was not found") without it
#
# Afterwards: SPDK_DIR=$OUT BDEVPERF=$OUT/bdevperf.sh bench/run.sh -s spdk ...
# ($OUT/bdevperf.sh sets LD_LIBRARY_PATH: with Debian's DPDK the build is shared-library only.)
# bench/run.sh uses $SPDK_DIR/bdevperf.sh by itself when it exists. For representative numbers
# reserve hugepages first (2.4 GB of RAM; give them back afterwards with 0 and umount):
#   echo 1200 > /proc/sys/vm/nr_hugepages
#   mkdir -p /dev/hugepages; mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
#
# What it does (facts from /work/shared/reference/spdk-build.md):
#  - Debian packages: libdpdk-dev (22.11) instead of SPDK's dpdk submodule, plus the build tools;
#    a venv ($OUT/.venv) with tabulate, jinja2, pyyaml for scripts/genrpc.py.
#  - isa-l submodule only (raid5f's XOR needs it; x86_64 has no --without-isal); the other
#    submodules (dpdk, intel-ipsec-mb, ocf, libvfio-user, xnvme, isa-l-crypto) are not needed.
#  - Three local adjustments for Debian's DPDK 22.11.x (see ADJUSTMENT 1-3 below).
set -euo pipefail

SPDK_GIT=${1:-${SPDK_GIT:-/work/.mirror/spdk+spdk/repo}}
ISAL_GIT=${2:-${ISAL_GIT:-/work/.mirror/intel+isa-l/repo}}
OUT=${3:-${SPDK_OUT:-/work/spdk}}
SPDK_COMMIT=${SPDK_COMMIT:-3230130e6a4114a97991d7e27cecd5ab64b696c3}
JOBS=${JOBS:-2}
NICE=${NICE:-19}
TARGET=${TARGET:-all}
N=(nice -n "$NICE")

log() { echo "== build-spdk: $*" >&2; }

# ---- packages -----------------------------------------------------------------------------
PKGS=(libdpdk-dev nasm autoconf automake libtool libnuma-dev libaio-dev libkeyutils-dev
  libcunit1-dev pkgconf help2man make g++ git python3-venv)
[ "${SPDK_URING:-0}" = 1 ] && PKGS+=(liburing-dev)
if [ "${SKIP_APT:-0}" != 1 ]; then
  log "apt-get update; apt-get install ${PKGS[*]}"
  "${N[@]}" apt-get update -q
  # libdpdk-dev pulls in systemd/udev packages; no service starts.
  DEBIAN_FRONTEND=noninteractive "${N[@]}" apt-get install -y -q --no-install-recommends "${PKGS[@]}"
fi

# ---- sources ------------------------------------------------------------------------------
if [ ! -e "$OUT/.git" ]; then
  log "cloning $SPDK_GIT into $OUT"
  "${N[@]}" git clone -q --no-checkout "$SPDK_GIT" "$OUT"
fi
if [ ! -f "$OUT/configure" ] ||
  [ "$(git -C "$OUT" rev-parse HEAD 2>/dev/null || true)" != "$(git -C "$OUT" rev-parse "$SPDK_COMMIT^{commit}")" ]; then
  log "checking out $SPDK_COMMIT"
  git -C "$OUT" checkout -q --detach "$SPDK_COMMIT"
fi
# isa-l from the local git directory, at the commit SPDK pins (git submodule update does that).
git -C "$OUT" config submodule.isa-l.url "$ISAL_GIT"
git -C "$OUT" submodule init isa-l >/dev/null
git -C "$OUT" config submodule.isa-l.url "$ISAL_GIT" # init keeps an existing url; be sure
"${N[@]}" git -C "$OUT" -c protocol.file.allow=always submodule update isa-l
log "SPDK $(git -C "$OUT" log -1 --format=%h) isa-l $(git -C "$OUT/isa-l" log -1 --format=%h)"

# ---- python for scripts/genrpc.py -----------------------------------------------------------
if [ ! -x "$OUT/.venv/bin/python3" ]; then
  log "venv $OUT/.venv (tabulate jinja2 pyyaml)"
  python3 -m venv "$OUT/.venv"
fi
"$OUT/.venv/bin/python3" -c 'import tabulate, jinja2, yaml' 2>/dev/null ||
  "${N[@]}" "$OUT/.venv/bin/pip" install -q tabulate jinja2 pyyaml
export PATH="$OUT/.venv/bin:$PATH"

cd "$OUT"

# ---- ADJUSTMENT 2: lib/env_dpdk/env.mk links rte_log and rte_argparse unconditionally; those
# libraries exist only from DPDK 23.11 (Debian 12 has 22.11). Link each only when present.
if ! grep -q 'plexd build-spdk.sh' lib/env_dpdk/env.mk; then
  log "adjustment 2: env.mk links rte_log/rte_argparse only when present"
  grep -q '^DPDK_LIB_LIST = rte_eal rte_kvargs rte_log rte_telemetry rte_argparse$' lib/env_dpdk/env.mk ||
    { echo "env.mk: the DPDK_LIB_LIST line differs from SPDK $SPDK_COMMIT; adjust by hand" >&2; exit 1; }
  sed -i 's|^DPDK_LIB_LIST = rte_eal rte_kvargs rte_log rte_telemetry rte_argparse$|DPDK_LIB_LIST = rte_eal rte_kvargs rte_telemetry\
# plexd build-spdk.sh: rte_log and rte_argparse exist only from DPDK 23.11.\
ifneq (, $(wildcard $(DPDK_LIB_DIR)/librte_log.*))\
DPDK_LIB_LIST += rte_log\
endif\
ifneq (, $(wildcard $(DPDK_LIB_DIR)/librte_argparse.*))\
DPDK_LIB_LIST += rte_argparse\
endif|' lib/env_dpdk/env.mk
fi

# ---- ADJUSTMENT 3: lib/env_dpdk/pci_dpdk.c refuses DPDK 22.11 releases after 22.11.4 at start-up
# ("DPDK version 22.11.11 is not supported"), because a later LTS release might have changed
# DPDK's private PCI ABI. The check only guards PCI code that bdevperf --no-pci (and a VM
# without NVMe devices) never uses: accept later 22.11.x with a warning.
if ! grep -q 'plexd build-spdk.sh' lib/env_dpdk/pci_dpdk.c; then
  log "adjustment 3: pci_dpdk.c accepts DPDK 22.11.x (x > 4) with a warning"
  python3 - lib/env_dpdk/pci_dpdk.c <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
old = """			 * pci_dpdk_xxx.c implementation for the new minor release.
			 */
			goto not_supported;
		}"""
new = """			 * pci_dpdk_xxx.c implementation for the new minor release.
			 */
			/* plexd build-spdk.sh: accepted for benchmarks (PCI is not used). */
			SPDK_WARNLOG("%s: a 22.11 release after 22.11.4, using the 22.11 PCI table.\\n",
				     rte_version());
		}"""
if s.count(old) != 1:
    sys.exit("pci_dpdk.c: the 22.11 minor-release check differs from the expected one; adjust by hand")
open(p, "w").write(s.replace(old, new))
EOF
fi

# ---- configure ----------------------------------------------------------------------------
CONFIGURE_OPTS=(--with-dpdk --with-raid5f --with-vhost --without-isal-crypto --without-crypto
  --without-fio --without-xnvme --without-ocf --without-vfio-user --without-idxd --disable-tests
  --disable-unit-tests --without-usdt --without-virtio --without-fsdev --without-nvme-cuse
  --without-rdma --without-uring --without-iscsi-initiator)
[ "${SPDK_URING:-0}" = 1 ] && CONFIGURE_OPTS=("${CONFIGURE_OPTS[@]/--without-uring/--with-uring}")
stamp="$OUT/.plexd-configure-opts"
if [ ! -f mk/config.mk ] || [ "$(cat "$stamp" 2>/dev/null)" != "${CONFIGURE_OPTS[*]}" ]; then
  log "configure ${CONFIGURE_OPTS[*]}"
  # With a packaged DPDK, configure forces CONFIG_SHARED=y (shared libraries only).
  "${N[@]}" ./configure "${CONFIGURE_OPTS[@]}"
  echo "${CONFIGURE_OPTS[*]}" >"$stamp"
fi

# ---- ADJUSTMENT 1: configure turns CONFIG_IPSEC_MB on because Debian's DPDK links libIPSec_MB
# (librte_crypto_ipsec_mb), and make then tries to build the absent intel-ipsec-mb submodule.
# Nothing here uses it (--without-crypto): turn it off in mk/config.mk (after every configure).
# (configure writes "CONFIG_IPSEC_MB?=y".)
if grep -q '^CONFIG_IPSEC_MB?*=y' mk/config.mk; then
  log "adjustment 1: CONFIG_IPSEC_MB=n in mk/config.mk"
  sed -i 's/^CONFIG_IPSEC_MB\(?*\)=y/CONFIG_IPSEC_MB\1=n/' mk/config.mk
fi

# ---- build --------------------------------------------------------------------------------
log "make -j$JOBS $TARGET (nice -n $NICE)"
"${N[@]}" make -j"$JOBS" "$TARGET"
test -x build/examples/bdevperf

# ---- wrapper ------------------------------------------------------------------------------
# Shared libraries: build/lib (SPDK) and isa-l/.libs. The wrapper also
#  - adds --no-pci --disable-cpumask-locks --no-rpc-server (no PCI devices are used; several
#    runs or other SPDK apps may share the machine) unless BDEVPERF_RAW=1;
#  - uses hugepages when 2 GiB are free and hugetlbfs is mounted, else runs with
#    --no-huge -s 2048 (malloc bdevs then warm up slowly and run at about half the rate:
#    prefer hugepages, see the header);
#  - removes the /var/run/dpdk/spdk_pid<pid> directory each run leaves behind.
cat >"$OUT/bdevperf.sh" <<EOF
#!/usr/bin/env bash
# Written by plexd's bench/build-spdk.sh: runs $OUT/build/examples/bdevperf with its shared
# libraries. bench/run.sh: SPDK_DIR=$OUT BDEVPERF=$OUT/bdevperf.sh
SPDK=$OUT
export LD_LIBRARY_PATH="\$SPDK/build/lib:\$SPDK/isa-l/.libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
extra=()
if [ "\${BDEVPERF_RAW:-0}" != 1 ]; then
  extra=(--no-pci --disable-cpumask-locks --no-rpc-server)
  case " \$* " in
    *" --no-huge "*|*" -s "*|*" --mem-size "*) ;;
    *)
      free=\$(awk '/^HugePages_Free:/ {print \$2}' /proc/meminfo)
      size=\$(awk '/^Hugepagesize:/ {print \$2}' /proc/meminfo)
      if [ "\$(( \${free:-0} * \${size:-0} ))" -ge \$(( 2048 * 1024 )) ] &&
        grep -q ' hugetlbfs ' /proc/mounts; then
        extra+=(-s 2048)
      else
        echo "bdevperf.sh: no hugetlbfs mount or fewer than 2 GiB of free hugepages: --no-huge -s 2048" >&2
        extra+=(--no-huge -s 2048)
      fi ;;
  esac
fi
"\$SPDK/build/examples/bdevperf" "\${extra[@]}" "\$@" &
pid=\$!
trap 'kill \$pid 2>/dev/null' INT TERM
rc=0
wait \$pid || rc=\$?
if kill -0 \$pid 2>/dev/null; then rc=0; wait \$pid || rc=\$?; fi
rmdir "/var/run/dpdk/spdk_pid\$pid" 2>/dev/null || rm -rf "/var/run/dpdk/spdk_pid\$pid" 2>/dev/null
exit \$rc
EOF
chmod +x "$OUT/bdevperf.sh"
log "done: SPDK_DIR=$OUT BDEVPERF=$OUT/bdevperf.sh bench/run.sh -s spdk"
