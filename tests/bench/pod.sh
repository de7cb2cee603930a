#!/usr/bin/env bash
# Measures a two-container pod under Vessel against Debian's runc, driven through the runc CLI as
# containerd's CRI drives it (the sandbox first; the second container's config.json names the
# sandbox's /proc/<pid>/ns/{net,ipc,uts}); prints one record per sample on stdout:
#   BENCH <metric> <vessel|runc> <value>
# Usage: tests/bench/pod.sh   (inside the lab, as lifecycle.sh; bench.sh runs it in its lab boot)
#
#   pod_ready_ms  from launching the sandbox's `create` until the second container's workload
#                 runs (each workload creates a file in its root, polled every 1 ms)
#   pod_pss_kib   host memory of the idle pod: the PSS of every process the runtime leaves running
#                 for it (Vessel: the sandbox's monitor with its VM and the member's monitor; runc:
#                 the two containers' processes), from /proc/<pid>/smaps_rollup, 2 s after it is
#                 ready
#
# BENCH_RUNS runs per side (default 5), alternating; each ends with `delete --force` of both.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${BENCH_RUNS:-5}
vessel=$repo/build/bin/vessel
runc=$(command -v runc || true)
[ -x "$vessel" ] || { echo "pod: $vessel missing; run 'make vessel'" >&2; exit 1; }
[ -n "$runc" ] || { echo "pod: runc not found (apt-get install runc)" >&2; exit 1; }
export VESSEL_KERNEL=${VESSEL_KERNEL:-$repo/build/share/vessel/vmlinux}
export VESSEL_INITRAMFS=${VESSEL_INITRAMFS:-$repo/build/share/vessel/initramfs.cpio}

work=$(mktemp -d "${TMPDIR:-/tmp}/vessel-pod.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$("$repo/tests/fixtures/mkrootfs.sh" busybox)
# bundle NAME: a BusyBox bundle whose workload creates /ready and sleeps.
bundle() {
  mkdir -p "$work/$1"
  cp -a "$rootfs" "$work/$1/rootfs"
  (cd "$work/$1" && "$vessel" spec)
  python3 - "$work/$1/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/sh", "-c", "touch /ready; exec sleep 600"]
c["root"]["readonly"] = False
json.dump(c, open(path, "w"), indent=2)
PY
}
bundle sandbox
bundle member
# join PID: the member joins the sandbox whose PID is PID, as CRI writes it.
join() {
  python3 - "$work/member/config.json" "$1" <<'PY'
import json, sys
path, pid = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c.pop("hostname", None)
c["linux"]["namespaces"] = [{"type": "mount"}, {"type": "pid"}, {"type": "cgroup"}] + [
    {"type": t, "path": f"/proc/{pid}/ns/{n}"} for t, n in (("network", "net"), ("ipc", "ipc"), ("uts", "uts"))]
json.dump(c, open(path, "w"), indent=2)
PY
}
echo "pod: $("$runc" --version | head -1), $("$vessel" --version | head -1), kernel $(uname -r)" >&2

ms_since() { # START: milliseconds from START ($EPOCHREALTIME) to now, one decimal
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.1f", (b - a) * 1000 }'
}
wait_ready() { # SIDE FILE
  local deadline=$((SECONDS + 300))
  until [ -e "$2" ]; do
    [ $SECONDS -lt $deadline ] || { echo "pod: $1 workload never ran" >&2; return 1; }
    sleep 0.001
  done
}
pss_kib() { # PID...: the sum of their PSS in KiB
  local total=0 pid kib
  for pid in "$@"; do
    kib=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
    total=$((total + kib))
  done
  echo "$total"
}

# one SIDE BINARY RUN
one() {
  local side=$1 bin=$2 run=$3 root=$work/root-$1
  local s="pod-$1-$3" m="member-$1-$3"
  rm -f "$work/sandbox/rootfs/ready" "$work/member/rootfs/ready"
  local t0=$EPOCHREALTIME
  "$bin" --root "$root" create --bundle "$work/sandbox" --pid-file "$work/sandbox.pid" "$s" \
    </dev/null >/dev/null 2>"$work/err" || { echo "pod: $side create $s: $(cat "$work/err")" >&2; return 1; }
  "$bin" --root "$root" start "$s" </dev/null >/dev/null 2>"$work/err" \
    || { echo "pod: $side start $s: $(cat "$work/err")" >&2; return 1; }
  wait_ready "$side" "$work/sandbox/rootfs/ready"
  join "$(cat "$work/sandbox.pid")"
  "$bin" --root "$root" create --bundle "$work/member" --pid-file "$work/member.pid" "$m" \
    </dev/null >/dev/null 2>"$work/err" || { echo "pod: $side create $m: $(cat "$work/err")" >&2; return 1; }
  "$bin" --root "$root" start "$m" </dev/null >/dev/null 2>"$work/err" \
    || { echo "pod: $side start $m: $(cat "$work/err")" >&2; return 1; }
  wait_ready "$side" "$work/member/rootfs/ready"
  local ms; ms=$(ms_since "$t0")
  sleep 2
  local kib; kib=$(pss_kib "$(cat "$work/sandbox.pid")" "$(cat "$work/member.pid")")
  echo "$side: pod ready ${ms} ms, PSS ${kib} KiB" >&2
  echo "BENCH pod_ready_ms $side $ms"
  echo "BENCH pod_pss_kib $side $kib"
  "$bin" --root "$root" delete --force "$m" >/dev/null 2>&1
  "$bin" --root "$root" delete --force "$s" >/dev/null 2>&1
}

for ((r = 0; r < runs; r++)); do
  one vessel "$vessel" "$r"
  one runc "$runc" "$r"
done
