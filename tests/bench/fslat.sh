#!/usr/bin/env bash
# Where a virtio-fs request's time goes (issue 5): the probe's `fslat` (single FUSE round trips,
# nothing cached: tests/guest-probe/src/fslat.rs) in a guest over virtio-fs, once per variant,
# then natively on the lab host. Runs inside the lab (tests/lab/run.sh); prints the probe's
# `PROBE fslat` lines prefixed with the variant.
#
# Usage: tests/bench/fslat.sh STAGE [VARIANT...]
#   STAGE holds vmm and probe.cpio as bench.sh stages them; VARIANTs (default: all) are
#   base        1 vCPU, the lab's KVM as booted
#   old, a, b   as base, with STAGE/vmm-old, vmm-a or vmm-b (other builds of the VMM, to compare
#               against)
#   idlepoll    guest command line idle=poll (the guest never halts its vCPU)
#   vcpus2      2 vCPUs
#   nohz        guest command line nohz=off (the guest keeps its 250 Hz tick when idle, instead of
#               reprogramming its TSC-deadline timer at every idle entry and exit)
#   hpoll0      the lab's kvm.halt_poll_ns=0 (a halted vCPU sleeps at once)
#   hpoll2ms    the lab's kvm.halt_poll_ns=2000000 (a halted vCPU polls 2 ms for a wake-up)
set -euo pipefail
stage=${1:?usage: fslat.sh STAGE [VARIANT...]}
shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
kernel=$repo/build/share/vessel/vmlinux
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(base idlepoll vcpus2 hpoll0 hpoll2ms base)
share=/tmp/vessel-fslat-share
hp=/sys/module/kvm/parameters/halt_poll_ns
hp0=$(cat "$hp")
echo "lab: $(nproc) CPUs, halt_poll_ns=$hp0, $(uname -r)" >&2
for v in "${variants[@]}"; do
  vcpus=1 extra="" poll=$hp0 vmm=$stage/vmm
  case "$v" in
    base) ;;
    old | a | b) vmm=$stage/vmm-${v} ;;
    idlepoll) extra="idle=poll" ;;
    vcpus2) vcpus=2 ;;
    nohz) extra="nohz=off" ;;
    hpoll0) poll=0 ;;
    hpoll2ms) poll=2000000 ;;
    *) echo "fslat: unknown variant $v" >&2; exit 2 ;;
  esac
  echo "$poll" > "$hp"
  rm -rf "$share" && mkdir -p "$share"
  cat > "$stage/vm-fslat.json" <<JSON
{"vcpus": $vcpus, "memory_mib": 256, "kernel": "$kernel", "initramfs": "$stage/probe.cpio",
 "serial": "stderr", "vsock_cid": 3, "extra_cmdline": "probe.fslat=lat $extra",
 "fs": [{"tag": "lat", "shared_dir": "$share"}]}
JSON
  "$vmm" "$stage/vm-fslat.json" 2> "$stage/console-fslat.log" || true
  grep -q 'PROBE fslat' "$stage/console-fslat.log" || tail -n 20 "$stage/console-fslat.log" >&2
  sed -n "s/.*PROBE fslat /$v: /p" "$stage/console-fslat.log"
done
echo "$hp0" > "$hp"
rm -rf "$share" /tmp/vessel-fslat-host
"$stage/probe" fslat /tmp/vessel-fslat-host | sed -n 's/.*PROBE fslat /lab-host: /p'
