#!/usr/bin/env bash
# Measures `vessel exec` against `runc exec` on the same BusyBox bundle; prints one record per
# sample on stdout:  BENCH <metric> <vessel|runc> <value>
#   exec_rtt_ms   wall time of `exec <id> true` (foreground), ms
#   exec_mibs     stdout throughput of `exec <id> dd if=/dev/zero bs=1M count=100` into a host
#                 pipe (`wc -c`, which must count all 100 MiB), MiB/s
# Usage: tests/bench/exec.sh VESSEL   (inside the lab: needs a KVM that boots guests, runc, and
#        VESSEL's ../share/vessel artefacts; bench.sh runs it after measure.sh)
# Environment: BENCH_RUNS (samples per side and metric, default 5).
set -euo pipefail
vessel=${1:?usage: exec.sh VESSEL}
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${BENCH_RUNS:-5}
command -v runc >/dev/null || { echo "exec.sh: runc not found (apt-get install runc)" >&2; exit 1; }
rootfs=$("$repo/tests/fixtures/mkrootfs.sh" busybox)
work=$(mktemp -d /run/vessel-exec-bench.XXXXXX)
vroot=$work/vessel-root rroot=$work/runc-root
cleanup() {
  "$vessel" --root "$vroot" delete --force xb >/dev/null 2>&1 || true
  runc --root "$rroot" delete --force xb >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

for side in vessel runc; do
  b=$work/bundle-$side
  mkdir -p "$b"
  cp -a "$rootfs" "$b/rootfs"
  (cd "$b" && "$vessel" spec)
  # A long sleep as init, no terminal; runc's default spec is the same as `vessel spec`'s.
  sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"sh"$/"sleep", "100000"/' "$b/config.json"
done
"$vessel" --root "$vroot" run -d --bundle "$work/bundle-vessel" xb </dev/null >/dev/null 2>&1
runc --root "$rroot" run -d --bundle "$work/bundle-runc" xb </dev/null >/dev/null 2>&1

ms() { echo $(( $(date +%s%N) / 1000000 )); }
for _ in $(seq "$runs"); do
  for side in vessel runc; do
    if [ "$side" = vessel ]; then cmd=("$vessel" --root "$vroot"); else cmd=(runc --root "$rroot"); fi
    t0=$(ms); "${cmd[@]}" exec xb true </dev/null; t1=$(ms)
    echo "BENCH exec_rtt_ms $side $((t1 - t0))"
    t0=$(ms)
    bytes=$("${cmd[@]}" exec xb dd if=/dev/zero bs=1M count=100 </dev/null 2>/dev/null | wc -c)
    t1=$(ms)
    [ "$bytes" -eq $((100 << 20)) ] || { echo "exec.sh: $side exec gave $bytes bytes, not 100 MiB" >&2; exit 1; }
    echo "BENCH exec_mibs $side $(awk -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", 100 * 1000 / (ms > 0 ? ms : 1) }')"
  done
done
