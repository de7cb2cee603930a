#!/usr/bin/env bash
# `make bench`: Vessel's VMM against QEMU microvm on the same guest, and the container lifecycle
# and `vessel exec` against runc on the same bundle, printed as tables of ratios. Nothing here asserts a speed; the
# targets column is the one in the VMM issue.
#
# Builds the VMM's debug entry point (examples/vmm.rs), the static test init vessel-guest-probe
# and its initramfs, and the timer tests/bench (vessel-bench); measures VM setup natively, then
# boots the lab ONCE and measures boot to init and host overhead there (measure.sh), then
# create+start and state (lifecycle.sh), a two-container pod (pod.sh), and exec round trip and exec stdout throughput (exec.sh)
# against runc, and the network between the lab host and a container on podman's bridge
# (net.sh) against runc, with build/bin/vessel.
#
# Usage: tests/bench/bench.sh        (needs `make artefacts fixtures`: vmlinux, initramfs, vessel)
# Environment: BENCH_RUNS (runs per side, default 5), BENCH_FS_RUNS (default 1: 10,000 files through virtio-fs take minutes under the lab's emulation), BENCH_PARTS
# (which parts of measure.sh: any of "boot setup fs", default all), CARGO_TARGET_DIR, LAB_TIMEOUT.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cd "$repo"
[ -r build/share/vessel/vmlinux ] || { echo "bench: build/share/vessel/vmlinux missing; run 'make kernel'" >&2; exit 1; }
command -v runc >/dev/null || { echo "bench: runc not found (apt-get install runc)" >&2; exit 1; }
[ -x build/bin/vessel ] && [ -r build/share/vessel/initramfs.cpio ] \
  || { echo "bench: build/bin/vessel or the initramfs missing; run 'make artefacts'" >&2; exit 1; }

RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release \
  --target x86_64-unknown-linux-gnu -p vessel-guest-probe
cargo build -q --release -p vessel-vmm --example vmm
cargo build -q --release --manifest-path tests/bench/Cargo.toml --target-dir "$target"
# The agent's in-guest setup cost comes from the lab test lab_agent_protocol_* (it prints BENCH
# records); its native peer is the static agent in `serve` mode, built by `make artefacts`.
agent_test=$(cargo test -q -p vessel --test lab_agent_fields --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l) if l.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -n 1)
[ -x "$agent_test" ] || { echo "bench: could not build the lab_agent_fields test binary" >&2; exit 1; }
# The lab mounts its own tmpfs on /tmp and /var/tmp: stage what it runs under the repo's target/.
stage=$repo/target/vessel-bench
mkdir -p "$stage"
install -m 0755 "$target/release/examples/vmm" "$target/release/vessel-bench" "$stage/"
install -m 0755 "$target/x86_64-unknown-linux-gnu/release/vessel-guest-probe" "$stage/probe"
# Stripped, as `make initramfs` strips the agent: the guest unpacks every byte of its initramfs.
strip "$stage/probe"
tests/lab/mkinitramfs.sh "$stage/probe.cpio" "/init=$stage/probe"

records=$stage/records
echo "bench: native setup ($(uname -r))" >&2
tests/bench/measure.sh native "$stage" | grep '^BENCH ' > "$records"
echo "bench: lab" >&2
tests/lab/run.sh --timeout "${LAB_TIMEOUT:-1800}" bash -c \
  'tests/bench/measure.sh lab "$1" && tests/bench/lifecycle.sh "$1" && tests/bench/pod.sh &&
   tests/bench/exec.sh "$2" &&
   tests/bench/net.sh &&
   VESSEL_KERNEL=$4/build/share/vessel/vmlinux VESSEL_INITRAMFS=$4/build/share/vessel/initramfs.cpio \
     "$3" --exact lab_agent_protocol_bad_input_bench_and_guest_loss --nocapture --test-threads 1' \
  _ "$stage" "$repo/build/bin/vessel" "$agent_test" "$repo" \
  | grep '^BENCH ' >> "$records"

# One table per peer: median (min) per metric and side, ratio vessel/peer of the medians.
# table TITLE PEER ROW...; ROW is "metric|label|scale|target".
table() {
  local title=$1 peer=$2; shift 2
  echo
  echo "$title"
  local IFS=$'\n'
  sort -k2,2 -k3,3 -k4,4n "$records" | awk -v peer="$peer" -v rowlist="$*" '
    { k = $2 SUBSEP $3; n[k]++; v[k, n[k]] = $4 }
    function med(k) { c = n[k]; return c % 2 ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2 }
    function cell(k, s) { return sprintf("%9.1f (%7.1f)", med(k) / s, v[k, 1] / s) }
    END {
      nr = split(rowlist, rows, "\n")
      printf "%-42s %19s %19s %7s   %s\n", "", "vessel", peer, "ratio", "target"
      for (i = 1; i <= nr; i++) {
        split(rows[i], r, "|"); m = r[1]
        if (!((m, "vessel") in n) || !((m, peer) in n)) continue
        printf "%-42s %19s %19s %7.2f   %s\n", r[2], cell(m SUBSEP "vessel", r[3]), cell(m SUBSEP peer, r[3]),
          med(m SUBSEP "vessel") / med(m SUBSEP peer), r[4]
      }
    }'
}
runs=${BENCH_RUNS:-5}
table "Vessel VMM vs QEMU microvm, same vmlinux + initramfs, 1 vCPU, 128 MiB; $(date -u +%F); median (min) of $runs runs (issue 3)" qemu \
  "boot_ms|boot to init, ms [lab]|1|ratio <= 0.5" \
  "preguest_ms|  before the guest clock starts|1|" \
  "uptime_ms|  guest kernel (its uptime at init)|1|" \
  "overhead_kib|host overhead at init, MiB [lab]|1024|vessel <= 5 MiB" \
  "setup_native_ms|start to 1st KVM_RUN, ms [native]|1|vessel < 10 ms"
table "virtio-fs in a Vessel guest vs the lab host, same tmpfs; 256 MiB sequential, 10,000 files (issue 5)" host \
  "fs_write_mib_s|sequential write, MiB/s [lab]|1|ratio >= 0.5" \
  "fs_read_mib_s|sequential read, MiB/s [lab]|1|ratio >= 0.5" \
  "fs_create_ms|create 10,000 files, ms [lab]|1|ratio <= 4" \
  "fs_stat_ms|stat 10,000 files, ms [lab]|1|ratio <= 4" \
  "fs_delete_ms|delete 10,000 files, ms [lab]|1|ratio <= 4"
table "vessel vs runc $(runc --version 2>/dev/null | sed -n 's/^runc version //p'), same BusyBox bundle [lab] (issues 6, 7, 19)" runc \
  "create_start_ms|create+start until the workload runs, ms|1|" \
  "state_ms|state of a running container, ms|1|ratio <= 1.5" \
  "exec_rtt_ms|exec <id> true, ms|1|" \
  "exec_mibs|exec stdout, 100 MiB, MiB/s|1|" \
  "pod_ready_ms|pod: sandbox create until its 2nd container runs, ms|1|" \
  "pod_pss_kib|pod: idle 2-container pod, host PSS, MiB|1024|"
table "network: lab host <-> a container on podman's default bridge, vessel vs runc $(runc --version 2>/dev/null | sed -n 's/^runc version //p') [lab] (issue 18)" runc \
  "net_tx_mbit|TCP host -> container, Mbit/s (iperf3)|1|hardware: ratio >= 0.8" \
  "net_rx_mbit|TCP container -> host, Mbit/s (iperf3 -R)|1|hardware: ratio >= 0.8" \
  "net_rr_us|1-byte request/answer over TCP, µs|1|"
table "vessel-agent in a Vessel guest vs the same agent natively (serve mode, Unix sockets) on the lab host; agent's own clock (issue 4)" native \
  "agent_create_exec_us|create request to workload execve, ms [lab]|1000|guest < 5 ms" \
  "agent_exec_us|exec request to execve, ms [lab]|1000|guest < 5 ms" \
  "agent_exec_rtt_us|exec round trip seen by the client, ms [lab]|1000|"
