#!/usr/bin/env bash
# Measures Vessel's container lifecycle against Debian's runc on the same BusyBox bundle; prints one
# record per sample on stdout:   BENCH <metric> <vessel|runc> <value>
# Usage: tests/bench/lifecycle.sh STAGE   (inside the lab: runc needs the lab host's own kernel,
#        Vessel a KVM that boots Linux; bench.sh runs it in the same lab boot as measure.sh)
#
#   create_start_ms  from launching `create` until the workload runs: `create`, then `start`,
#                    then the workload's first action (it creates /ready in its root file system,
#                    which both runtimes share with the host) is seen by a 1 ms poll
#   state_ms         one `state <id>` of that running container (BENCH_STATE_CALLS per run)
#
# Both use a temporary --root, the same bundle (config.json from `vessel spec`, process
# `sh -c 'touch /ready; exec sleep 600'`, root writable) and run alternately, BENCH_RUNS times each
# (default 5); each run ends with `delete --force`. Timestamps are bash's $EPOCHREALTIME, so no
# extra process is timed.
set -euo pipefail
stage=${1:?usage: lifecycle.sh STAGE}
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${BENCH_RUNS:-5}
calls=${BENCH_STATE_CALLS:-20}
vessel=$repo/build/bin/vessel
runc=$(command -v runc || true)
[ -x "$vessel" ] || { echo "lifecycle: $vessel missing; run 'make vessel'" >&2; exit 1; }
[ -n "$runc" ] || { echo "lifecycle: runc not found (apt-get install runc)" >&2; exit 1; }
export VESSEL_KERNEL=${VESSEL_KERNEL:-$repo/build/share/vessel/vmlinux}
export VESSEL_INITRAMFS=${VESSEL_INITRAMFS:-$repo/build/share/vessel/initramfs.cpio}

work=$(mktemp -d "${TMPDIR:-/tmp}/vessel-lifecycle.XXXXXX")
trap 'rm -rf "$work"' EXIT
bundle=$work/bundle
mkdir -p "$bundle"
cp -a "$("$repo/tests/fixtures/mkrootfs.sh" busybox)" "$bundle/rootfs"
(cd "$bundle" && "$vessel" spec)
python3 - "$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/sh", "-c", "touch /ready; exec sleep 600"]
c["root"]["readonly"] = False
json.dump(c, open(path, "w"), indent=2)
PY
echo "lifecycle: $("$runc" --version | head -1), $("$vessel" --version | head -1), kernel $(uname -r)" >&2

ms_since() { # START: milliseconds from START ($EPOCHREALTIME) to now, one decimal
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.1f", (b - a) * 1000 }'
}

# one SIDE BINARY RUN: create+start until the workload runs, then state samples, then delete.
one() {
  local side=$1 bin=$2 run=$3 id="bench-$1-$3" root=$work/root-$1
  rm -f "$bundle/rootfs/ready"
  local t0=$EPOCHREALTIME
  "$bin" --root "$root" create --bundle "$bundle" "$id" </dev/null >/dev/null 2>"$work/err" \
    || { echo "lifecycle: $side create failed: $(cat "$work/err")" >&2; return 1; }
  "$bin" --root "$root" start "$id" </dev/null >/dev/null 2>"$work/err" \
    || { echo "lifecycle: $side start failed: $(cat "$work/err")" >&2; return 1; }
  local deadline=$((SECONDS + 300))
  until [ -e "$bundle/rootfs/ready" ]; do
    [ $SECONDS -lt $deadline ] || { echo "lifecycle: $side workload never ran" >&2; return 1; }
    sleep 0.001
  done
  local ms; ms=$(ms_since "$t0")
  echo "$side: create+start ${ms} ms" >&2
  echo "BENCH create_start_ms $side $ms"
  local i
  for ((i = 0; i < calls; i++)); do
    t0=$EPOCHREALTIME
    "$bin" --root "$root" state "$id" >/dev/null
    echo "BENCH state_ms $side $(ms_since "$t0")"
  done
  "$bin" --root "$root" delete --force "$id" >/dev/null 2>&1
}

for ((r = 0; r < runs; r++)); do
  one vessel "$vessel" "$r"
  one runc "$runc" "$r"
done
