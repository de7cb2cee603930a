#!/usr/bin/env bash
# Measures the network between the lab host and a container on podman's default bridge, Vessel
# against runc in the same lab boot; prints one record per sample on stdout:
#   BENCH <metric> <vessel|runc> <value>
# Usage: tests/bench/net.sh   (inside the lab; bench.sh runs it)
#
#   net_tx_mbit   TCP throughput host -> container, Mbit/s (iperf3, 5 s, one stream)
#   net_rx_mbit   TCP throughput container -> host, Mbit/s (iperf3 -R)
#   net_rr_us     one 1-byte request and its 1-byte answer over one TCP connection, µs (mean of
#                 BENCH_RR requests, default 1,000; an echo server in the container)
#
# The container is the BusyBox fixture; iperf3 is the lab host's own (Debian's, with its
# libraries), bind-mounted read-only and run through the host's dynamic loader. Each side runs
# BENCH_RUNS times (default 3), alternating.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vessel=${VESSEL:-$repo/build/bin/vessel}
runs=${BENCH_RUNS:-3}
rr=${BENCH_RR:-1000}
image=localhost/vessel-busybox:latest
command -v iperf3 >/dev/null || { echo "net: iperf3 missing (make deps)" >&2; exit 1; }
export VESSEL_KERNEL=${VESSEL_KERNEL:-$repo/build/share/vessel/vmlinux}
export VESSEL_INITRAMFS=${VESSEL_INITRAMFS:-$repo/build/share/vessel/initramfs.cpio}

work=$(mktemp -d /tmp/vessel-net-bench.XXXXXX)
mount -t tmpfs -o mode=0700 vessel-net-bench "$work"
mkdir -p "$work/cni"
pm() { podman --root "$work/storage" --runroot "$work/runroot" --tmpdir "$work/libpod" \
  --network-config-dir "$work/cni" --storage-driver vfs --cgroup-manager cgroupfs \
  --events-backend none "$@"; }
cleanup() {
  set +e
  pm rm -f -t 0 netbench >/dev/null 2>&1
  grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rmdir "$work"
}
trap cleanup EXIT
pm import "$("$repo/tests/compat/archives.sh" busybox)/rootfs.tar" "$image" >/dev/null

lib=/usr/lib/x86_64-linux-gnu
iperf="/host$lib/ld-linux-x86-64.so.2 --library-path /host$lib /host/usr/bin/iperf3"
rr_client() { # ip port count: mean µs per 1-byte round trip
  python3 - "$@" <<'EOF'
import socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((ip, port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(20):
    s.sendall(b"x"); s.recv(1)
t = time.perf_counter()
for _ in range(n):
    s.sendall(b"x")
    if not s.recv(1):
        raise SystemExit("echo server closed")
print(int((time.perf_counter() - t) / n * 1e6))
EOF
}

for i in $(seq 1 "$runs"); do
  for side in vessel runc; do
    rt=$vessel; [ $side = runc ] && rt=$(command -v runc)
    pm --runtime "$rt" run -d --name netbench -v /usr:/host/usr:ro "$image" sh -c \
      "nc -ll -p 9000 -e cat & exec $iperf -s >/dev/null 2>&1" >/dev/null
    ip=$(pm inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' netbench)
    for _ in $(seq 1 100); do iperf3 -c "$ip" -t 1 >/dev/null 2>&1 && break; sleep 0.3; done
    tx=$(iperf3 -c "$ip" -t 5 -J | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))')
    rx=$(iperf3 -c "$ip" -t 5 -R -J | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))')
    us=$(rr_client "$ip" 9000 "$rr")
    echo "BENCH net_tx_mbit $side $tx"
    echo "BENCH net_rx_mbit $side $rx"
    echo "BENCH net_rr_us $side $us"
    pm rm -f -t 0 netbench >/dev/null
  done
done
