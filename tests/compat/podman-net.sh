#!/usr/bin/env bash
# podman 4.3's default network (rootful, CNI bridge `cni-podman0`, plugins from Debian's
# containernetworking-plugins, iptables) reaches BusyBox containers in Vessel microVMs. Runs
# INSIDE the lab (needs a real /dev/kvm, the lab kernel's bridge/netfilter/tc options):
#   tests/lab/run.sh bash tests/compat/podman-net.sh
#
# Checks:
# 1. `podman run -d -p 18080:80 IMG httpd`: the lab host's curl of 127.0.0.1:18080 returns the
#    container's page (podman's DNAT to the container's address reaches the guest);
# 2. the container's eth0 has the MAC, MTU and address of the veth podman put in its network
#    namespace (read there with `ip`), and its default route; it reaches the bridge's gateway;
# 3. a second container reaches the first by IP;
# 4. on a network with MTU 1400 (`podman network create --opt mtu=1400`), the container's eth0
#    has MTU 1400 and 50 MiB go each way byte-identical (sha256 compared);
# 5. after `podman rm`, no Vessel monitor, no tap and no state is left;
# 6. through the CLI on a namespace the caller keeps: the guest serves a page on its address; after SIGKILL of the
#    monitor, `delete` takes the tc redirect off and leaves the caller's veth as it was.
# 7. a pod (`podman pod create`, `podman run -d --pod`, `podman run --rm --pod`): one microVM for
#    the whole pod; a member reaches another on localhost; the lab host reaches the pod's
#    address; `podman pod pause`/`unpause` leave the member answering; `podman pod rm -f` leaves
#    no monitor, VM, mount or state.
#
# Environment: VESSEL (default build/bin/vessel), RUNTIME (default $VESSEL; `runc` runs the same
# checks under runc, for reference), KEEP=1 keeps the scratch dir on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vessel=${VESSEL:-$repo/build/bin/vessel}
runtime=${RUNTIME:-$vessel}
image=localhost/vessel-busybox:latest
[ -x "$vessel" ] || { echo "podman-net: $vessel missing (make artefacts)" >&2; exit 2; }
for c in podman conmon iptables curl nsenter python3; do
  command -v $c >/dev/null || { echo "podman-net: $c missing (make deps)" >&2; exit 2; }
done
[ -x /usr/lib/cni/bridge ] || { echo "podman-net: CNI plugins missing (make deps: containernetworking-plugins)" >&2; exit 2; }
[ "$(stat -f -c %T /dev/shm)" = tmpfs ] || { echo "podman-net: /dev/shm is not a tmpfs" >&2; exit 2; }

work=$(mktemp -d /tmp/vessel-podman-net.XXXXXX)
mount -t tmpfs -o mode=0700 vessel-podman-net "$work"
mkdir -p "$work/cni"
podman=(podman --root "$work/storage" --runroot "$work/runroot" --tmpdir "$work/libpod"
  --network-config-dir "$work/cni" --runtime "$runtime" --storage-driver vfs
  --cgroup-manager cgroupfs --events-backend none)
pm() { "${podman[@]}" "$@"; }
ns=""
cleanup() {
  local rc=$?
  set +e
  pm rm -a -f -t 0 >/dev/null 2>&1
  pm network rm -f net1400 >/dev/null 2>&1
  if [ -n "$ns" ]; then
    "$vessel" --root "$work/vroot" delete --force kept >/dev/null 2>&1
    ip netns del "$ns"; ip link del "vk0-$$"
  fi 2>/dev/null
  if [ "${KEEP:-0}" != 1 ]; then
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rmdir "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT

diagnose() {
  for f in $(find "$work" -name oci-log -o -name ctr.log 2>/dev/null); do echo "--- $f"; tail -n 20 "$f"; done
  for f in $(find /run/vessel -name console.log 2>/dev/null); do echo "--- $f"; tail -n 40 "$f"; done
}
fail() { echo "podman-net: FAIL: $*" >&2; diagnose >&2; exit 1; }
ok() { echo "podman-net: ok: $* (${SECONDS}s)"; }
# The container's view and the namespace's view of an interface: "<mac> <mtu> <addr/len>".
link_view() { # ip -o output on stdin
  awk '/link\/ether/ { for (i = 1; i <= NF; i++) { if ($i == "mtu") mtu = $(i + 1); if ($i == "link/ether") mac = $(i + 1) } }
       / inet / { for (i = 1; i <= NF; i++) if ($i == "inet") a = $(i + 1) }
       END { print mac, mtu, a }'
}

pm import "$("$repo/tests/compat/archives.sh" busybox)/rootfs.tar" "$image" >/dev/null 2>"$work/import.err" || fail "podman import: $(cat "$work/import.err")"
ok "imported $image; runtime $(basename "$runtime")"

# 1. A published port.
pm run -d --name web -p 18080:80 "$image" sh -c \
  'mkdir -p /www && echo "vessel-web $(hostname)" > /www/index.html && exec httpd -f -p 80 -h /www' \
  >/dev/null 2>"$work/web.err" || fail "podman run -d -p: $(cat "$work/web.err")"
page=""
for _ in $(seq 1 100); do
  page=$(curl -s --max-time 5 http://127.0.0.1:18080/index.html || true)
  [ -n "$page" ] && break
  sleep 0.3
done
[[ "$page" == vessel-web* ]] || fail "curl 127.0.0.1:18080 returned '$page'"
ok "published port: curl 127.0.0.1:18080 got '$page'"

# 2. The interface as the namespace holds it, and as the container sees it.
netns=$(pm inspect --format '{{.NetworkSettings.SandboxKey}}' web)
[ -n "$netns" ] || fail "no SandboxKey for web"
host_view=$( { nsenter --net="$netns" ip -o link show eth0; nsenter --net="$netns" ip -o -4 addr show eth0; } | link_view)
guest_view=$( { pm exec web ip -o link show eth0; pm exec web ip -o -4 addr show eth0; } | link_view)
echo "  namespace eth0: $host_view"
echo "  container eth0: $guest_view"
[ -n "$host_view" ] && [ "$host_view" = "$guest_view" ] || fail "container eth0 '$guest_view' is not the namespace's '$host_view'"
gw=$(nsenter --net="$netns" ip -4 route show default | awk '{print $3}')
groute=$(pm exec web ip -4 route show default | awk '{print $3}')
[ -n "$gw" ] && [ "$gw" = "$groute" ] || fail "default route via '$groute' in the container, '$gw' in the namespace"
# The gateway is the bridge on the lab host: a listener there answers the container.
echo gateway-page > "$work/gw.html"
python3 -m http.server --bind "$gw" --directory "$work" 18081 >/dev/null 2>&1 &
gwpid=$!
got=""
for _ in $(seq 1 50); do
  got=$(pm exec web sh -c "printf 'GET /gw.html HTTP/1.0\r\n\r\n' | nc $gw 18081" 2>/dev/null | tail -n 1 || true)
  [ "$got" = gateway-page ] && break
  sleep 0.3
done
kill "$gwpid" 2>/dev/null || true
[ "$got" = gateway-page ] || fail "the container got '$got' from the gateway $gw:18081"
ok "eth0 in the container is the namespace's ($guest_view), default via $gw, which it reaches"

# 3. Container to container by IP (BusyBox nc with numeric ports: static wget's NSS lookup
# crashes, lab-notes).
ip=${host_view##* }; ip=${ip%/*}
got=$(pm run --rm --name client "$image" sh -c "printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc $ip 80" 2>"$work/client.err" | tail -n 1 || true)
[[ "$got" == vessel-web* ]] || fail "second container got '$got' from $ip:80 ($(cat "$work/client.err"))"
ok "a second container reached $ip:80 and got '$got'"

# 4. MTU 1400 and 50 MiB each way. The file the container serves lives on the lab host in a
# volume, so its checksum is taken here.
pm network create --opt mtu=1400 --subnet 10.77.0.0/24 net1400 >/dev/null 2>"$work/net.err" || fail "podman network create: $(cat "$work/net.err")"
mkdir -p "$work/www"
head -c 52428800 /dev/urandom > "$work/www/big"
want=$(sha256sum "$work/www/big" | awk '{print $1}')
echo ready > "$work/www/ready"
pm run -d --name mtu --network net1400 -v "$work/www:/www" "$image" httpd -f -p 80 -h /www \
  >/dev/null 2>"$work/mtu.err" || fail "podman run --network net1400: $(cat "$work/mtu.err")"
mtu=$(pm exec mtu cat /sys/class/net/eth0/mtu)
[ "$mtu" = 1400 ] || fail "eth0 MTU in the container is '$mtu', want 1400"
mip=$(pm inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' mtu)
[[ "$mip" == 10.77.0.* ]] || fail "the container on net1400 has address '$mip'"
ready=""
for _ in $(seq 1 200); do
  ready=$(curl -s --max-time 5 "http://$mip/ready" || true)
  [ "$ready" = ready ] && break
  sleep 0.3
done
[ "$ready" = ready ] || fail "httpd in the container on net1400 never answered at $mip:80"
curl -s --max-time 300 -o "$work/down" "http://$mip/big" || fail "download of 50 MiB from $mip:80: curl exit $?"
got=$(sha256sum "$work/down" | awk '{print $1}')
[ "$got" = "$want" ] || fail "50 MiB from the container: sha256 $got ($(stat -c %s "$work/down") bytes), want $want"
rm -f "$work/down"
head -c 52428800 /dev/urandom > "$work/up"
want=$(sha256sum "$work/up" | awk '{print $1}')
# The container hashes what it receives and writes only the sum to the volume: writing 50 MiB
# through it in nc's 4 KiB pieces takes minutes under TCG.
pm exec -d mtu sh -c 'nc -l -p 9000 | sha256sum > /www/up.part && mv /www/up.part /www/up.sum' >/dev/null
sent=0
for _ in $(seq 1 50); do
  if timeout 300 bash -c "cat '$work/up' > /dev/tcp/$mip/9000" 2>/dev/null; then sent=1; break; fi
  sleep 0.3
done
[ "$sent" = 1 ] || fail "upload of 50 MiB to $mip:9000 (nc -l in the container)"
for _ in $(seq 1 300); do
  [ -s "$work/www/up.sum" ] && break
  sleep 0.3
done
got=$(awk '{print $1}' "$work/www/up.sum" 2>/dev/null)
[ "$got" = "$want" ] || fail "50 MiB to the container: its sha256 '$got', want $want"
ok "MTU 1400: eth0 mtu $mtu; 50 MiB each way byte-identical"

# 5. Nothing left.
pm rm -f -t 2 web mtu >/dev/null
pm network rm -f net1400 >/dev/null
[ -z "$(pm ps -a -q)" ] || fail "containers left: $(pm ps -a)"
if [ "$runtime" = "$vessel" ]; then
  left=$(pgrep -af 'vessel-monitor|vessel:' || true)
  [ -z "$left" ] || fail "monitors left: $left"
fi
ok "nothing left after podman rm (no container, no monitor)"

# 6. The same network through the CLI, as a caller that keeps its namespace (CNI, `ip netns`):
# the guest serves a page on the veth's address; after SIGKILL of the monitor, `delete` takes the tc
# redirect off the veth and leaves the namespace and the veth as the caller made them.
if [ "$runtime" = "$vessel" ]; then
  ns=vessel-kept-$$
  ip netns add "$ns"
  ip link add "vk0-$$" type veth peer name "vk1-$$"
  ip link set "vk1-$$" netns "$ns"
  ip -n "$ns" link set "vk1-$$" name eth0
  ip -n "$ns" addr add 10.78.0.2/24 dev eth0
  ip -n "$ns" link set eth0 up
  ip addr add 10.78.0.1/24 dev "vk0-$$"
  ip link set "vk0-$$" up
  "$repo/tests/fixtures/mkbundle.sh" busybox "$work/kept" 'mkdir -p /w && echo kept-page > /w/i && exec httpd -f -p 80 -h /w' >/dev/null
  python3 - "$work/kept/config.json" "/run/netns/$ns" <<'PY'
import json, sys
path, netns = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
spec["linux"]["namespaces"].append({"type": "network", "path": netns})
json.dump(spec, open(path, "w"))
PY
  vs=("$vessel" --root "$work/vroot")
  "${vs[@]}" run -d --bundle "$work/kept" kept >/dev/null 2>"$work/kept.err" </dev/null || fail "vessel run -d in $ns: $(cat "$work/kept.err")"
  page=""
  for _ in $(seq 1 100); do
    page=$(curl -s --max-time 5 http://10.78.0.2/i || true)
    [ "$page" = kept-page ] && break
    sleep 0.3
  done
  [ "$page" = kept-page ] || fail "the guest's httpd does not answer on 10.78.0.2:80 (eth0 of $ns): '$page'"
  before=$(tc -n "$ns" filter show dev eth0 ingress)
  [ -n "$before" ] || fail "no tc redirect on eth0 of $ns while the container runs"
  monitor=$("${vs[@]}" state kept | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  kill -9 "$monitor"
  for _ in $(seq 1 100); do kill -0 "$monitor" 2>/dev/null || break; sleep 0.1; done
  "${vs[@]}" delete --force kept 2>"$work/kept.err" || fail "vessel delete after SIGKILL: $(cat "$work/kept.err")"
  [ -z "$(tc -n "$ns" filter show dev eth0 ingress)" ] || fail "tc filter left on eth0 of $ns: $(tc -n "$ns" filter show dev eth0 ingress)"
  ! tc -n "$ns" qdisc show dev eth0 | grep -q ingress || fail "ingress qdisc left on eth0 of $ns"
  ! ip -n "$ns" -o link | grep -q vessel-tap || fail "tap left in $ns: $(ip -n "$ns" -o link)"
  ip -n "$ns" -o -4 addr show eth0 | grep -q 10.78.0.2/24 || fail "eth0 of $ns lost its address"
  [ ! -e "$work/vroot/kept" ] || fail "state of kept left in $work/vroot"
  ok "kept namespace: the guest answered on 10.78.0.2:80; after SIGKILL of the monitor, delete left eth0 as it was and nothing else"
fi

# 7. A pod. Debian's podman has no catatonit to build its pause image from: the infra container
# is BusyBox's sleep, the command of an image made for it.
pm import --change 'CMD ["/bin/sleep","1000000"]' \
  "$("$repo/tests/compat/archives.sh" busybox)/rootfs.tar" localhost/vessel-pause:latest \
  >/dev/null 2>"$work/import.err" || fail "podman import (pause): $(cat "$work/import.err")"
pm pod create --name pod1 --infra-image localhost/vessel-pause:latest \
  >/dev/null 2>"$work/pod.err" || fail "podman pod create: $(cat "$work/pod.err")"
pm run -d --pod pod1 --name pod-web "$image" sh -c \
  'mkdir -p /www && echo "pod-page" > /www/index.html && exec httpd -f -p 80 -h /www' \
  >/dev/null 2>"$work/podweb.err" || fail "podman run -d --pod: $(cat "$work/podweb.err")"
got=$(pm run --rm --pod pod1 --name pod-client "$image" sh -c \
  'for i in $(seq 50); do printf "GET /index.html HTTP/1.0\r\n\r\n" | nc 127.0.0.1 80 && break; usleep 200000; done' \
  2>"$work/podclient.err" | tail -n 1 || true)
[ "$got" = pod-page ] || fail "a pod member got '$got' from localhost:80 ($(cat "$work/podclient.err"))"
if [ "$runtime" = "$vessel" ]; then
  # vCPU threads are named vcpu<N>: only the infra container's monitor runs a VM.
  vms=$(grep -lx 'vcpu0' /proc/[0-9]*/task/*/comm 2>/dev/null | cut -d/ -f3 | sort -u | wc -l)
  [ "$vms" = 1 ] || fail "$vms processes run a microVM for the pod, want 1"
fi
infra=$(pm pod inspect pod1 --format '{{.InfraContainerID}}')
pip=$(pm inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$infra")
page=""
for _ in $(seq 1 100); do
  page=$(curl -s --max-time 5 "http://$pip/index.html" || true)
  [ "$page" = pod-page ] && break
  sleep 0.3
done
[ "$page" = pod-page ] || fail "the lab host got '$page' from the pod's address $pip:80"
# `podman pod pause` pauses the infra container and each member in an order of its own: pausing
# the infra container must freeze only its processes (runc freezes its cgroup), not the VM the
# members run in. Twice, as the order varies; then the member answers again.
for round in 1 2; do
  pm pod pause pod1 >/dev/null 2>"$work/podpause.err" || fail "podman pod pause (round $round): $(cat "$work/podpause.err")"
  pm pod unpause pod1 >/dev/null 2>"$work/podpause.err" || fail "podman pod unpause (round $round): $(cat "$work/podpause.err")"
done
got=$(pm exec pod-web sh -c 'echo exec-after-unpause' 2>"$work/podexec.err") ||
  fail "podman exec into a member after pod unpause: $(cat "$work/podexec.err")"
[ "$got" = exec-after-unpause ] || fail "podman exec after pod unpause printed '$got'"
page=$(curl -s --max-time 10 "http://$pip/index.html" || true)
[ "$page" = pod-page ] || fail "after pod pause/unpause the lab host got '$page' from $pip:80"
pm pod rm -f -t 2 pod1 >/dev/null 2>"$work/podrm.err" || fail "podman pod rm -f: $(cat "$work/podrm.err")"
[ -z "$(pm ps -a -q)" ] || fail "containers left: $(pm ps -a)"
if [ "$runtime" = "$vessel" ]; then
  left=$(pgrep -af 'vessel-monitor|vessel:' || true)
  [ -z "$left" ] || fail "monitors left after podman pod rm: $left"
  left=$(grep -c ' /run/vessel' /proc/self/mountinfo || true)
  [ "$left" = 0 ] || fail "mounts left under /run/vessel: $(grep ' /run/vessel' /proc/self/mountinfo)"
fi
ok "pod: one microVM; a member reached another on localhost; the lab host reached $pip:80; pod pause/unpause twice, then exec and the page; nothing left after podman pod rm"
