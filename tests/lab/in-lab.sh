#!/usr/bin/env bash
# Runs inside the lab (see e2e.sh): shell-level checks of the lab itself, then every `lab_*` test
# of every test binary listed in $1 (lines: executable<TAB>package dir). Prints a summary and exits
# non-zero when anything failed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
list=${1:?usage: in-lab.sh LIST}
export VESSEL_KERNEL="$repo/build/share/vessel/vmlinux"
export VESSEL_INITRAMFS="$repo/build/share/vessel/initramfs.cpio"
export VESSEL_PROBE_INITRAMFS="$repo/build/share/vessel-test/probe-initramfs.cpio"
export VESSEL_LAB=1
failed=()

check() { # name command...
  local name=$1; shift
  if "$@"; then echo "lab check $name: ok"; else echo "lab check $name: FAILED"; failed+=("$name"); fi
}
check kvm-device test -c /dev/kvm
check svm-with-npt grep -qw npt /proc/cpuinfo
check vessel-check "$repo/build/bin/vessel" check
# The VMM's debug entry point: a JSON VmConfig booting the probe init to a clean shutdown.
printf '{"vcpus": 2, "memory_mib": 128, "kernel": "%s", "initramfs": "%s", "vsock_cid": 3}' \
  "$VESSEL_KERNEL" "$VESSEL_PROBE_INITRAMFS" > /run/lab/probe-vm.json
check vessel-vmm-config "$repo/build/bin/vessel" vmm --config /run/lab/probe-vm.json
# Real clients through the runc contract: containerd 1.6's runc shim and podman 4.3 with conmon.
check containerd bash "$repo/tests/compat/containerd.sh"
check podman bash "$repo/tests/compat/podman.sh"

while IFS=$'\t' read -r exe dir; do
  [ -x "$exe" ] || continue
  name=$(basename "$exe")
  # Only binaries that define lab_ tests are worth starting under TCG.
  "$exe" --list 2>/dev/null | grep -q '^lab_\|::lab_' || continue
  echo "=== $name (lab_ tests)"
  if ! (cd "$dir" && "$exe" lab_ --test-threads=1); then failed+=("$name"); fi
done < "$list"

if [ ${#failed[@]} -gt 0 ]; then
  echo "lab: FAILED: ${failed[*]}"
  exit 1
fi
echo "lab: all end-to-end checks passed"
