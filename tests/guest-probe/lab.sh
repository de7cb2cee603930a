#!/usr/bin/env bash
# Build vessel-guest-probe (static), pack it as /init of a test initramfs, build the VMM's lab
# tests, and run them inside the nested KVM lab.
#
# Usage: tests/guest-probe/lab.sh [TEST-FILTER]
# Environment: CARGO_TARGET_DIR (default target/), LAB_TIMEOUT (see tests/lab/run.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cd "$repo"
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release \
  --target x86_64-unknown-linux-gnu -p vessel-guest-probe
probe="$target/x86_64-unknown-linux-gnu/release/vessel-guest-probe"
# The lab mounts its own tmpfs on /tmp and /var/tmp: stage what it runs under the repo's target/.
stage="$repo/target/vessel-lab"
mkdir -p "$stage"
cpio="$stage/probe-initramfs.cpio"
tests/lab/mkinitramfs.sh "$cpio" "/init=$probe"
for t in lab_boot lab_fs; do
  bin=$(cargo test -q --release -p vessel-vmm --test $t --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
  [ -x "$bin" ] || { echo "lab.sh: cannot find the $t test binary" >&2; exit 1; }
  cp "$bin" "$stage/$t"
done
bin="$stage/lab_boot"
# The debug entry point too: run_config_file on a JSON VmConfig, exit 0 on a clean shutdown.
cargo build -q --release -p vessel-vmm --example vmm
cp "$target/release/examples/vmm" "$stage/vmm"
kernel=$(ls /var/cache/vessel/kernel/guest-*/vmlinux | tail -1)
cat > "$stage/probe-vm.json" <<JSON
{"vcpus": 2, "memory_mib": 128, "kernel": "$kernel", "initramfs": "$cpio",
 "serial": "stderr", "vsock_cid": 3}
JSON
export VESSEL_PROBE_INITRAMFS="$cpio" VESSEL_KERNEL="${VESSEL_KERNEL:-$kernel}"
exec tests/lab/run.sh -- sh -c '"$1" --test-threads=1 --nocapture $3 && "$(dirname "$1")/lab_fs" \
  --test-threads=1 --nocapture $3 && "$2" "$(dirname "$2")/probe-vm.json"' \
  lab "$bin" "$stage/vmm" "${1:-}"
