#!/usr/bin/env bash
# Measures Vessel's VMM against QEMU microvm; prints one record per sample on stdout:
#   BENCH <metric> <vessel|qemu> <value>
# Usage: tests/bench/measure.sh lab|native STAGE   (bench.sh builds STAGE and calls this)
#
#   lab     boot to guest init (ms from process start to "PROBE init" on the console), split into
#           the guest's own uptime at that line and what came before its clock started (VMM setup,
#           firmware), and the host overhead (KiB resident beyond guest memory, at that line); needs
#           a KVM that boots Linux, i.e. run it inside tests/lab/run.sh
#           and, with the peer "host", virtio-fs against the lab host's own file system (tmpfs):
#           sequential write and read of 256 MiB (MiB/s) and create, stat and delete of 10,000
#           files (ms), the same code on both sides (vessel-guest-probe's fsbench; BENCH_FS_RUNS
#           runs, default 1)
#   native  setup: ms from spawning the VMM to its first KVM_RUN, seen as the line each VMM logs
#           just before that ioctl (VM creation works on this host's kvm_pvm even though guests
#           do not boot)
#
# Both sides boot the same vmlinux and initramfs (vessel-guest-probe as /init) with 1 vCPU, 128 MiB
# of anonymous RAM in transparent huge pages, a 16550 serial console and the same kernel command line; they run
# alternately, BENCH_RUNS times each (default 5).
set -euo pipefail
mode=${1:?usage: measure.sh lab|native STAGE}
stage=${2:?usage: measure.sh lab|native STAGE}
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${BENCH_RUNS:-5}
# Which parts to measure (bench.sh passes it on): any of boot, setup, fs.
parts=" ${BENCH_PARTS:-boot setup fs} "
kernel=$repo/build/share/vessel/vmlinux
cpio=$stage/probe.cpio
marker="PROBE init"
# Vessel's fixed command line (docs/design.md, "Guest boot"); QEMU gets the same.
cmdline="console=ttyS0 reboot=k panic=-1 pci=off nomodule quiet no_timer_check noreplace-smp"

allow=false qemu_cpu=host
if [ "$mode" = native ]; then
  allow=true
  # kvm_pvm refuses QEMU's IA32_ARCH_CAPABILITIES write; irrelevant to setup time.
  qemu_cpu=host,-arch-capabilities
fi
cat > "$stage/vm-$mode.json" <<JSON
{"vcpus": 1, "memory_mib": 128, "kernel": "$kernel", "initramfs": "$cpio",
 "serial": "stderr", "vsock_cid": 3, "allow_unsupported_host": $allow}
JSON
vessel=("$stage/vmm" "$stage/vm-$mode.json")
# QEMU's leanest microvm: no option ROMs, PIT, PIC, RTC or ACPI; one ISA serial port; guest RAM
# QEMU's default (anonymous, 2 MiB aligned, MADV_HUGEPAGE), as Vessel's is.
qemu=(qemu-system-x86_64 -M "microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off,isa-serial=on"
  -m 128M -smp 1 -enable-kvm -cpu "$qemu_cpu"
  -nodefaults -no-user-config -display none -no-reboot -serial stdio
  -kernel "$kernel" -initrd "$cpio" -append "$cmdline")

# boot SIDE CMD...: one boot; records ms, the guest's uptime at init and the host overhead.
boot() {
  local side=$1 out; shift
  out=$(VESSEL_BENCH_LOG="$stage/console-$side.log" "$stage/vessel-bench" "$marker" "$@")
  echo "$side: $out" >&2
  local ms=${out#ms=}; ms=${ms%% *}
  local over=${out#*overhead_kib=}; over=${over%% *}
  local up; up=$(sed -n 's/.*PROBE init uptime_ms=\([0-9]*\).*/\1/p' "$stage/console-$side.log")
  echo "BENCH boot_ms $side $ms"
  echo "BENCH preguest_ms $side $((ms - ${up:-0}))"
  echo "BENCH uptime_ms $side ${up:-0}"
  echo "BENCH overhead_kib $side $over"
}

# setup SIDE CMD...: ms from spawning the VMM to its first KVM_RUN, as vessel-bench times the
# first line that says so: Vessel's debug log ("vcpu 0: first KVM_RUN", logged just before the
# ioctl) and QEMU's trace event kvm_vcpu_ioctl with KVM_RUN's number (0xae80; the "log" trace
# backend writes it to stderr just before the ioctl). No tracer: strace, used until 2026-11-30,
# stopped both at every traced ioctl (QEMU issues 7 times as many as Vessel).
setup() {
  local side=$1 out; shift
  out=$(VMM_LOG=debug "$stage/vessel-bench" "$setup_marker" "$@")
  local us=${out#*us=}; us=${us%% *}
  local ms; ms=$(awk -v us="$us" 'BEGIN { printf "%.1f", us / 1000 }')
  echo "$side: setup ${ms} ms" >&2
  echo "BENCH setup_${mode}_ms $side $ms"
}

want() { [[ $parts == *" $1 "* ]]; }
for i in $(seq "$runs"); do
  { [ "$mode" = lab ] && want boot; } || { [ "$mode" = native ] && want setup; } || break
  echo "--- run $i of $runs ($mode)" >&2
  if [ "$mode" = lab ]; then
    boot vessel "${vessel[@]}"
    boot qemu "${qemu[@]}"
  else
    setup_marker="vcpu 0: first KVM_RUN" setup vessel "${vessel[@]}"
    setup_marker="type 0xae80" setup qemu "${qemu[@]}" -trace kvm_vcpu_ioctl
  fi
done

# fsbench: the probe's file-system benchmark in a guest over virtio-fs (share on the lab's tmpfs),
# then natively on the same tmpfs.
if [ "$mode" = lab ] && want fs; then
  share=/tmp/vessel-fsbench-share
  # The agent's read-ahead window for a container's share, so the probe's mount matches it.
  ra_kb=$(sed -n 's/^pub const SHARE_READ_AHEAD_KB: u32 = \([0-9]*\);/\1/p' "$repo/guest-agent/src/init.rs")
  [ -n "$ra_kb" ] || { echo "measure: SHARE_READ_AHEAD_KB not found in guest-agent/src/init.rs" >&2; exit 1; }
  cat > "$stage/vm-fsbench.json" <<JSON
{"vcpus": 1, "memory_mib": 512, "kernel": "$kernel", "initramfs": "$cpio",
 "serial": "stderr", "vsock_cid": 3, "extra_cmdline": "probe.fsbench=benchfs probe.fs_ra_kb=$ra_kb",
 "fs": [{"tag": "benchfs", "shared_dir": "$share"}]}
JSON
  fsrecords() { # SIDE LOG: PROBE fsbench lines to BENCH records
    grep -q 'PROBE fsbench FAILED' "$2" && { grep 'PROBE fsbench FAILED' "$2" >&2; return 1; }
    sed -n 's/.*PROBE fsbench \([a-z_]*\) \([0-9.]*\).*/BENCH fs_\1 '"$1"' \2/p' "$2"
  }
  for i in $(seq "${BENCH_FS_RUNS:-1}"); do
    echo "--- fsbench run $i" >&2
    rm -rf "$share" /tmp/vessel-fsbench-host && mkdir -p "$share"
    "$stage/vmm" "$stage/vm-fsbench.json" 2> "$stage/console-fsbench.log" || true
    fsrecords vessel "$stage/console-fsbench.log"
    "$stage/probe" fsbench /tmp/vessel-fsbench-host > "$stage/fsbench-host.log"
    fsrecords host "$stage/fsbench-host.log"
  done
  rm -rf "$share" /tmp/vessel-fsbench-host
fi
