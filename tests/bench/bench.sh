#!/usr/bin/env bash
# `make bench`: Vessel's VMM against QEMU microvm on the same guest, printed as a table of ratios.
# Nothing here asserts a speed; the targets column is the one in the VMM issue.
#
# Builds the VMM's debug entry point (examples/vmm.rs), the static test init vessel-guest-probe
# and its initramfs, and the timer tests/bench (vessel-bench); measures VM setup natively, then
# boots the lab ONCE and measures boot to init and host overhead there (measure.sh).
#
# Usage: tests/bench/bench.sh        (needs build/share/vessel/vmlinux: make kernel)
# Environment: BENCH_RUNS (runs per side, default 5), BENCH_FS_RUNS (default 3), BENCH_PARTS
# (which parts: any of "boot setup fs", default all), CARGO_TARGET_DIR, LAB_TIMEOUT.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cd "$repo"
[ -r build/share/vessel/vmlinux ] || { echo "bench: build/share/vessel/vmlinux missing; run 'make kernel'" >&2; exit 1; }
command -v strace >/dev/null || { echo "bench: strace not found (apt-get install strace)" >&2; exit 1; }

RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release \
  --target x86_64-unknown-linux-gnu -p vessel-guest-probe
cargo build -q --release -p vessel-vmm --example vmm
cargo build -q --release --manifest-path tests/bench/Cargo.toml
# The lab mounts its own tmpfs on /tmp and /var/tmp: stage what it runs under the repo's target/.
stage=$repo/target/vessel-bench
mkdir -p "$stage"
install -m 0755 "$target/release/examples/vmm" "$target/release/vessel-bench" "$stage/"
install -m 0755 "$target/x86_64-unknown-linux-gnu/release/vessel-guest-probe" "$stage/probe"
tests/lab/mkinitramfs.sh "$stage/probe.cpio" \
  "/init=$target/x86_64-unknown-linux-gnu/release/vessel-guest-probe"

records=$stage/records
echo "bench: native setup ($(uname -r))" >&2
tests/bench/measure.sh native "$stage" | grep '^BENCH ' > "$records"
echo "bench: lab" >&2
tests/lab/run.sh --timeout "${LAB_TIMEOUT:-1200}" tests/bench/measure.sh lab "$stage" \
  | grep '^BENCH ' >> "$records"

# Median and min per metric and side, vessel/qemu ratio of the medians.
echo
echo "Vessel VMM vs QEMU microvm, same vmlinux + initramfs, 1 vCPU, 128 MiB; $(date -u +%F); median (min) of ${BENCH_RUNS:-5} runs"
sort -k2,2 -k3,3 -k4,4n "$records" | awk '
  { k = $2 SUBSEP $3; n[k]++; v[k, n[k]] = $4 }
  function med(k) { c = n[k]; return c % 2 ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2 }
  function cell(k, s) { return sprintf("%9.1f (%7.1f)", med(k) / s, v[k, 1] / s) }
  function row(m, label, s, tgt, peer) {
    if (peer == "") peer = "qemu"
    if (!((m, "vessel") in n) || !((m, peer) in n)) return
    printf "%-40s %19s %19s %7.2f   %s\n", label, cell(m SUBSEP "vessel", s), cell(m SUBSEP peer, s),
      med(m SUBSEP "vessel") / med(m SUBSEP peer), tgt
  }
  END {
    printf "%-40s %19s %19s %7s   %s\n", "", "vessel", "qemu", "ratio", "target (issue 3)"
    row("boot_ms", "boot to init, ms [lab]", 1, "ratio <= 0.5")
    row("preguest_ms", "  before the guest clock starts", 1, "")
    row("uptime_ms", "  guest kernel (its uptime at init)", 1, "")
    row("overhead_kib", "host overhead at init, MiB [lab]", 1024, "vessel <= 5 MiB")
    row("setup_native_ms", "start to 1st KVM_RUN, ms [native, strace]", 1, "vessel < 10 ms")
    printf "\nvirtio-fs (guest, in Vessel) vs the lab host on the same tmpfs; 256 MiB sequential, 10,000 files\n"
    printf "%-40s %19s %19s %7s   %s\n", "", "vessel", "host", "ratio", "target (issue 5)"
    row("fs_write_mib_s", "sequential write, MiB/s [lab]", 1, "ratio >= 0.5", "host")
    row("fs_read_mib_s", "sequential read, MiB/s [lab]", 1, "ratio >= 0.5", "host")
    row("fs_create_ms", "create 10,000 files, ms [lab]", 1, "ratio <= 4", "host")
    row("fs_stat_ms", "stat 10,000 files, ms [lab]", 1, "ratio <= 4", "host")
    row("fs_delete_ms", "delete 10,000 files, ms [lab]", 1, "ratio <= 4", "host")
  }'
