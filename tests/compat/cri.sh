#!/usr/bin/env bash
# Kubernetes pods in Vessel microVMs through containerd 1.6's CRI plugin, driven as the kubelet
# drives it: a small CRI client (tests/compat/cri/scenario.py, runtime.v1 gRPC over containerd's
# socket, stubs generated here from tests/compat/cri/api.proto) runs pods with
# runtime_handler "vessel", a runtime entry of the runc shim with BinaryName = vessel. Runs
# INSIDE the lab (needs a real /dev/kvm): tests/lab/run.sh bash tests/compat/cri.sh
#
# Setup: containerd with root, state and socket on a tmpfs of its own; the CRI plugin with a
# pause image made here from the BusyBox fixture (its command: sleep), runtimes runc (default)
# and vessel, CNI from Debian's containernetworking-plugins (bridge, host-local 10.89.0.0/24,
# loopback); images imported with ctr into the k8s.io namespace.
# Checks (scenario.py):
# 1. CRI answers Version and reports RuntimeReady and NetworkReady; it knows both images;
# 2. RunPodSandbox (handler vessel): the pod is READY with an address from the CNI bridge;
# 3. containers web (busybox httpd on port 80) and client in the pod: the client reaches web on
#    127.0.0.1:80 and its CRI log file (<log_directory>/client/0.log) holds the page;
# 4. ExecSync in web: stdout and exit code (3) come back; web's ps does not list the client's
#    process (each container has its own PID namespace, as the kubelet asks for v1 pods);
# 5. the lab host's curl gets the page from the pod's address;
# 6. one microVM (one process with a vcpu0 thread) runs the whole pod;
# 7. a container that exits by itself: ContainerStatus says EXITED with exit code 5;
# 8. a second pod with one PID namespace for the pod (namespace_options.pid = POD): ps in one
#    container lists another's sleep; two pods, two microVMs;
# 9. StopPodSandbox + RemovePodSandbox of both; then (here) no monitor, no VM thread, no mount
#    under the vessel Root or containerd's state, and no container directory in the vessel Root
#    (<Root>/k8s.io: the shim's --root for vessel adds the containerd namespace).
#
# Environment: VESSEL (default build/bin/vessel), KEEP=1 keeps the scratch dir on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vessel=${VESSEL:-$repo/build/bin/vessel}
image=docker.io/library/vessel-busybox:latest
pause=docker.io/library/vessel-pause:latest
# Debian's interpreter, which has the python3-grpcio and python3-grpc-tools modules.
py=/usr/bin/python3
[ -x "$vessel" ] || { echo "cri: $vessel missing (make artefacts)" >&2; exit 2; }
for c in containerd ctr curl iptables $py; do
  command -v $c >/dev/null || { echo "cri: $c missing (make deps)" >&2; exit 2; }
done
$py -c 'import grpc, grpc_tools' 2>/dev/null ||
  { echo "cri: python3-grpcio or python3-grpc-tools missing (make deps)" >&2; exit 2; }
[ -x /usr/lib/cni/bridge ] || { echo "cri: CNI plugins missing (make deps: containernetworking-plugins)" >&2; exit 2; }

work=$(mktemp -d /tmp/vessel-cri.XXXXXX)
mount -t tmpfs -o mode=0700 vessel-cri "$work"
sock=$work/containerd.sock
vroot=$work/vessel-root   # Root of the vessel runtime entry: the shim passes it to vessel --root
ctrd_pid=""
scenario() {
  $py "$repo/tests/compat/cri/scenario.py" --socket "$sock" --gen "$work/gen" --work "$work" \
    --image "$image" --pause "$pause" --seconds "$SECONDS" "$1"
}
cleanup() {
  local rc=$?
  set +e
  if [ -n "$ctrd_pid" ]; then
    scenario teardown
    kill "$ctrd_pid"; wait "$ctrd_pid" 2>/dev/null
  fi
  ip link del vcri0 2>/dev/null
  # shims and monitors left by a failure die with the lab; unmount $work and anything under it
  if [ "${KEEP:-0}" != 1 ]; then
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rmdir "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT

# What containerd, vessel and the guests said, for a failure report.
diagnose() {
  echo "--- containerd log (tail)"; tail -n 60 "$work/containerd.log"
  for f in $(find "$work/state" -name log.json 2>/dev/null); do echo "--- $f"; tail -n 20 "$f"; done
  for f in $(find "$vroot" -name console.log 2>/dev/null); do echo "--- $f"; tail -n 40 "$f"; done
  for f in $(find "$work/logs" -name '*.log' 2>/dev/null); do echo "--- $f"; tail -n 10 "$f"; done
}
fail() { echo "cri: FAIL: $*" >&2; diagnose >&2; exit 1; }
ok() { echo "cri: ok: $* (${SECONDS}s)"; }

# The CRI client's stubs, from our own subset of runtime.v1.
mkdir -p "$work/gen"
$py -m grpc_tools.protoc -I "$repo/tests/compat/cri" --python_out="$work/gen" --grpc_python_out="$work/gen" \
  "$repo/tests/compat/cri/api.proto" || fail "protoc of tests/compat/cri/api.proto"

# The pod network: a bridge with host-local addresses, as a cluster's simplest CNI config.
mkdir -p "$work/cni" "$work/logs"
cat > "$work/cni/10-vessel-cri.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "vessel-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "vcri0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.89.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$work/cni-ipam"
      }
    },
    {"type": "loopback"}
  ]
}
EOF

cat > "$work/config.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"

[grpc]
  address = "$sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  # the pods' network namespaces are pinned under $work/state, not /var/run/netns
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vessel]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vessel.options]
      BinaryName = "$vessel"
      Root = "$vroot"
      SystemdCgroup = false
EOF

containerd --config "$work/config.toml" > "$work/containerd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 100); do
  ctr -a "$sock" version >/dev/null 2>&1 && break
  kill -0 "$ctrd_pid" 2>/dev/null || fail "containerd exited"
  sleep 0.2
done
ctr -a "$sock" version >/dev/null || fail "containerd did not answer on $sock"
ctr -a "$sock" plugins ls | awk '$2 == "cri" {print $NF}' | grep -qx ok ||
  fail "cri plugin not loaded: $(ctr -a "$sock" plugins ls | awk '$2 == "cri"')"
ok "containerd $(containerd --version | awk '{print $3}') up, cri plugin ok"

# The images, where CRI looks for them: the k8s.io namespace. The pause image is the BusyBox
# fixture whose command sleeps (Debian has no pause image to build from).
ctr -a "$sock" -n k8s.io image import "$("$repo/tests/compat/archives.sh" busybox)/oci.tar" >/dev/null ||
  fail "ctr image import (busybox)"
"$repo/tests/compat/mkociarchive.sh" "$("$repo/tests/fixtures/mkrootfs.sh" busybox)" "$pause" \
  "$work/pause.tar" /bin/sleep 1000000000
ctr -a "$sock" -n k8s.io image import "$work/pause.tar" >/dev/null || fail "ctr image import (pause)"
rm -f "$work/pause.tar"
ok "imported $image and $pause into namespace k8s.io"

find /sys/fs/cgroup -mindepth 1 -type d | sort > "$work/cgroups.before"
scenario run || fail "the CRI scenario (above)"

# Nothing of Vessel's is left behind.
left=$(pgrep -af 'vessel-monitor|vessel:' || true)
[ -z "$left" ] || fail "monitors left after RemovePodSandbox: $left"
left=$(grep -lx vcpu0 /proc/[0-9]*/task/*/comm 2>/dev/null || true)
[ -z "$left" ] || fail "VM threads left after RemovePodSandbox: $left"
left=$(grep -E " ($vroot|$work/state)[/ ]" /proc/self/mountinfo || true)
[ -z "$left" ] || fail "mounts left under $vroot or $work/state: $left"
# The shim runs vessel with --root <Root>/<containerd namespace>: container directories are one
# level down, and the namespace directory (the shim's, as with runc) stays.
left=$(find "$vroot" -mindepth 2 -maxdepth 2 2>/dev/null || true)
[ -z "$left" ] || fail "left in the vessel Root $vroot: $left"
# containerd's cgroupsPath is /k8s.io/<id>: the parent stays, as runc leaves it.
left=$(find /sys/fs/cgroup -mindepth 1 -type d | sort | comm -13 "$work/cgroups.before" - |
  grep -vx /sys/fs/cgroup/k8s.io || true)
[ -z "$left" ] || fail "cgroups left after RemovePodSandbox: $left"
left=$(ip -o link show | grep vessel-tap || true)
[ -z "$left" ] || fail "taps left in the lab host's namespace: $left"
ok "nothing left: no monitor, no VM thread, no cgroup, no tap, no mount under the vessel Root or containerd's state, no container directory in $vroot/k8s.io"
echo "cri: all checks passed"
