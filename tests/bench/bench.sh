#!/usr/bin/env bash
# `make bench`: Vessel's VMM against QEMU microvm on the same guest, and `vessel exec` against
# `runc exec` on the same bundle, printed as tables of ratios. Nothing here asserts a speed; the
# targets column is the one in the VMM issue.
#
# Builds the VMM's debug entry point (examples/vmm.rs), the static test init vessel-guest-probe
# and its initramfs, and the timer tests/bench (vessel-bench); measures VM setup natively, then
# boots the lab ONCE and measures boot to init and host overhead there (measure.sh), then exec
# round trip and exec stdout throughput against runc (exec.sh, with build/bin/vessel).
#
# Usage: tests/bench/bench.sh        (needs `make artefacts fixtures`: vmlinux, initramfs, vessel)
# Environment: BENCH_RUNS (runs per side, default 5), CARGO_TARGET_DIR, LAB_TIMEOUT.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cd "$repo"
[ -r build/share/vessel/vmlinux ] || { echo "bench: build/share/vessel/vmlinux missing; run 'make kernel'" >&2; exit 1; }
command -v strace >/dev/null || { echo "bench: strace not found (apt-get install strace)" >&2; exit 1; }
command -v runc >/dev/null || { echo "bench: runc not found (apt-get install runc)" >&2; exit 1; }
[ -x build/bin/vessel ] && [ -r build/share/vessel/initramfs.cpio ] \
  || { echo "bench: build/bin/vessel or the initramfs missing; run 'make artefacts'" >&2; exit 1; }

RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release \
  --target x86_64-unknown-linux-gnu -p vessel-guest-probe
cargo build -q --release -p vessel-vmm --example vmm
cargo build -q --release --manifest-path tests/bench/Cargo.toml
# The lab mounts its own tmpfs on /tmp and /var/tmp: stage what it runs under the repo's target/.
stage=$repo/target/vessel-bench
mkdir -p "$stage"
install -m 0755 "$target/release/examples/vmm" "$target/release/vessel-bench" "$stage/"
tests/lab/mkinitramfs.sh "$stage/probe.cpio" \
  "/init=$target/x86_64-unknown-linux-gnu/release/vessel-guest-probe"

records=$stage/records
echo "bench: native setup ($(uname -r))" >&2
tests/bench/measure.sh native "$stage" | grep '^BENCH ' > "$records"
echo "bench: lab" >&2
tests/lab/run.sh --timeout "${LAB_TIMEOUT:-1200}" bash -c \
  'tests/bench/measure.sh lab "$1" && tests/bench/exec.sh "$2"' _ "$stage" "$repo/build/bin/vessel" \
  | grep '^BENCH ' >> "$records"

# Median and min per metric and side, vessel/qemu ratio of the medians.
echo
echo "Vessel VMM vs QEMU microvm, same vmlinux + initramfs, 1 vCPU, 128 MiB; $(date -u +%F); median (min) of ${BENCH_RUNS:-5} runs"
sort -k2,2 -k3,3 -k4,4n "$records" | awk '
  { k = $2 SUBSEP $3; n[k]++; v[k, n[k]] = $4 }
  function med(k) { c = n[k]; return c % 2 ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2 }
  function cell(k, s) { return sprintf("%9.1f (%7.1f)", med(k) / s, v[k, 1] / s) }
  function row(m, label, s, tgt) {
    if (!((m, "vessel") in n) || !((m, "qemu") in n)) return
    printf "%-40s %19s %19s %7.2f   %s\n", label, cell(m SUBSEP "vessel", s), cell(m SUBSEP "qemu", s),
      med(m SUBSEP "vessel") / med(m SUBSEP "qemu"), tgt
  }
  END {
    printf "%-40s %19s %19s %7s   %s\n", "", "vessel", "qemu", "ratio", "target (issue 3)"
    row("boot_ms", "boot to init, ms [lab]", 1, "ratio <= 0.5")
    row("preguest_ms", "  before the guest clock starts", 1, "")
    row("uptime_ms", "  guest kernel (its uptime at init)", 1, "")
    row("overhead_kib", "host overhead at init, MiB [lab]", 1024, "vessel <= 5 MiB")
    row("setup_native_ms", "start to 1st KVM_RUN, ms [native, strace]", 1, "vessel < 10 ms")
  }'

# Exec: vessel vs runc, ratio of the medians (round trip: lower is better; throughput: higher).
echo
echo "vessel exec vs runc exec, same BusyBox bundle [lab]; median (min/max) of ${BENCH_RUNS:-5} runs"
sort -k2,2 -k3,3 -k4,4n "$records" | awk '
  { k = $2 SUBSEP $3; n[k]++; v[k, n[k]] = $4 }
  function med(k) { c = n[k]; return c % 2 ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2 }
  function cell(k) { return sprintf("%9.1f (%.1f-%.1f)", med(k), v[k, 1], v[k, n[k]]) }
  function row(m, label) {
    if (!((m, "vessel") in n) || !((m, "runc") in n)) return
    printf "%-36s %24s %24s %7.2f\n", label, cell(m SUBSEP "vessel"), cell(m SUBSEP "runc"),
      med(m SUBSEP "vessel") / med(m SUBSEP "runc")
  }
  END {
    printf "%-36s %24s %24s %7s\n", "", "vessel", "runc", "ratio"
    row("exec_rtt_ms", "exec <id> true, ms")
    row("exec_mibs", "exec stdout, 100 MiB, MiB/s")
  }'
