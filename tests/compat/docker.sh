#!/usr/bin/env bash
# Docker 20.10 (Debian's docker.io) runs BusyBox containers in Vessel microVMs with
# `--runtime vessel`, on its default bridge network. Runs INSIDE the lab (needs a real /dev/kvm
# and the lab kernel's bridge/netfilter/tc options):
#   tests/lab/run.sh bash tests/compat/docker.sh
#
# dockerd is started here with its data, exec root and socket on a tmpfs of its own, cgroupfs,
# the vfs storage driver and `--add-runtime vessel=<vessel>`; the image is `docker import` of
# the BusyBox fixture's rootfs tarball (no registry). Checks:
# 1. `docker run --rm`: output and exit code;
# 2. `docker run -d -p 18090:80` (Docker moves the veth into the monitor's new network
#    namespace from its prestart hook, after the VM booted): curl of 127.0.0.1:18090 returns the
#    page; the container's eth0 has the MAC and address `docker inspect` reports;
# 3. `docker exec` (output, exit code), `docker logs`, `docker stop` (exit status), `docker rm`;
# 4. `--network none`: no eth0; `--network host` fails with an error that says why;
#    `--network container:<vessel container>` runs the second container in the first one's VM,
#    where it reaches the first on localhost;
# 5. nothing left: no monitor.
#
# Environment: VESSEL (default build/bin/vessel), KEEP=1 keeps the scratch dir on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vessel=${VESSEL:-$repo/build/bin/vessel}
image=vessel-busybox:latest
docker_bin=/usr/bin/docker
[ -x "$vessel" ] || { echo "docker: $vessel missing (make artefacts)" >&2; exit 2; }
for c in /usr/sbin/dockerd $docker_bin /usr/bin/containerd iptables curl; do
  command -v "$c" >/dev/null || { echo "docker: $c missing (make deps: docker.io)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/vessel-docker.XXXXXX)
mount -t tmpfs -o mode=0700 vessel-docker "$work"
sock=$work/docker.sock
echo '{}' > "$work/daemon.json"
dk() { "$docker_bin" -H "unix://$sock" "$@"; }
dockerd_pid=""
cleanup() {
  local rc=$?
  set +e
  dk rm -f web sidecar >/dev/null 2>&1
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$dockerd_pid" 2>/dev/null
  fi
  pkill -f "containerd --config $work" 2>/dev/null
  if [ "${KEEP:-0}" != 1 ]; then
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rmdir "$work" 2>/dev/null
  fi
  exit "$rc"
}
trap cleanup EXIT

diagnose() {
  echo "--- dockerd log"; tail -n 30 "$work/dockerd.log"
  for f in $(find /run/vessel "$work" -name console.log 2>/dev/null); do echo "--- $f"; tail -n 40 "$f"; done
}
fail() { echo "docker: FAIL: $*" >&2; diagnose >&2; exit 1; }
ok() { echo "docker: ok: $* (${SECONDS}s)"; }

/usr/sbin/dockerd --config-file "$work/daemon.json" --data-root "$work/data" \
  --exec-root "$work/exec" --pidfile "$work/docker.pid" -H "unix://$sock" \
  --storage-driver vfs --exec-opt native.cgroupdriver=cgroupfs \
  --add-runtime "vessel=$vessel" >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 1 150); do dk info >/dev/null 2>&1 && break; sleep 0.2; done
dk info >/dev/null 2>&1 || fail "dockerd did not come up"
dk import --change 'CMD ["sh"]' "$("$repo/tests/compat/archives.sh" busybox)/rootfs.tar" "$image" >/dev/null 2>"$work/import.err" ||
  fail "docker import: $(cat "$work/import.err")"
ok "dockerd $(dk version --format '{{.Server.Version}}') up, $image imported"

# 1. Foreground.
set +e
out=$(timeout -k 10 300 "$docker_bin" -H "unix://$sock" run --runtime vessel --rm "$image" sh -c 'echo hi; exit 3' 2>"$work/fg.err")
rc=$?
set -e
[ "$out" = hi ] && [ "$rc" = 3 ] || fail "docker run printed '$out' and exited $rc, want 'hi' and 3 ($(cat "$work/fg.err"))"
ok "docker run --rm printed 'hi' and exited 3"

# 2. Detached with a published port: the veth arrives through Docker's prestart hook.
dk run --runtime vessel -d --name web -p 18090:80 "$image" sh -c \
  'echo web-started; mkdir -p /www && echo "vessel-docker-web" > /www/index.html && trap "echo got-term; exit 7" TERM; httpd -f -p 80 -h /www & wait' \
  >/dev/null 2>"$work/web.err" || fail "docker run -d -p: $(cat "$work/web.err")"
page=""
for _ in $(seq 1 100); do
  page=$(curl -s --max-time 5 http://127.0.0.1:18090/index.html || true)
  [ -n "$page" ] && break
  sleep 0.3
done
[ "$page" = vessel-docker-web ] || fail "curl 127.0.0.1:18090 returned '$page'"
ok "published port: curl 127.0.0.1:18090 got '$page'"
want="$(dk inspect --format '{{.NetworkSettings.MacAddress}} {{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}}' web)"
got="$(dk exec web sh -c 'ip -o link show eth0; ip -o -4 addr show eth0' |
  awk '/link\/ether/ { for (i = 1; i <= NF; i++) if ($i == "link/ether") mac = $(i + 1) }
       / inet / { for (i = 1; i <= NF; i++) if ($i == "inet") a = $(i + 1) } END { print mac, a }')"
[ "$got" = "$want" ] || fail "container eth0 is '$got', docker inspect says '$want'"
ok "eth0 in the container: $got, as docker inspect says"

# 3. exec, logs, stop, rm.
set +e
out=$(dk exec web sh -c 'echo from-exec; exit 5' 2>&1)
rc=$?
set -e
[ "$out" = from-exec ] && [ "$rc" = 5 ] || fail "docker exec printed '$out' and exited $rc, want from-exec and 5"
dk logs web 2>&1 | grep -qx web-started || fail "docker logs: $(dk logs web 2>&1 | head -5)"
timeout 60 "$docker_bin" -H "unix://$sock" stop -t 20 web >/dev/null || fail "docker stop web"
code=$(dk inspect --format '{{.State.ExitCode}}' web)
[ "$code" = 7 ] || fail "after docker stop, exit code $code, want 7 (the TERM trap)"
dk logs web 2>&1 | grep -qx got-term || fail "docker logs lack got-term: $(dk logs web 2>&1 | tail -3)"
dk rm web >/dev/null
ok "docker exec exit 5, docker logs, docker stop (TERM reached the container, exit 7), docker rm"

# 4. Other network modes.
out=$(dk run --runtime vessel --rm --network none "$image" ip -o link 2>&1) || fail "docker run --network none: $out"
echo "$out" | grep -q ': lo:' || fail "--network none: no lo: $out"
! echo "$out" | grep -q 'eth0' || fail "--network none: an eth0: $out"
ok "--network none: lo and no eth0"
set +e
out=$(dk run --runtime vessel --rm --network host "$image" true 2>&1)
rc=$?
set -e
[ "$rc" != 0 ] && echo "$out" | grep -q "host's network" || fail "--network host: exit $rc, '$out'"
ok "--network host refused: $(echo "$out" | grep -o "a microVM cannot share the host's network stack" | head -1)"
dk run --runtime vessel -d --name web "$image" sh -c \
  'mkdir -p /www && echo sidecar-page > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www' >/dev/null
set +e
out=$(dk run --runtime vessel --rm --name sidecar --network container:web "$image" sh -c \
  'for i in $(seq 50); do printf "GET /index.html HTTP/1.0\r\n\r\n" | nc 127.0.0.1 8080 && break; usleep 200000; done' 2>&1)
rc=$?
set -e
[ "$rc" = 0 ] && [ "$(echo "$out" | tail -n 1)" = sidecar-page ] || fail "--network container:web: exit $rc, '$out'"
vms=$(grep -lx 'vcpu0' /proc/[0-9]*/task/*/comm 2>/dev/null | cut -d/ -f3 | sort -u | wc -l)
[ "$vms" = 1 ] || fail "$vms processes run a microVM after the sidecar, want 1 (web's)"
ok "--network container:<vessel container>: the sidecar ran in web's VM and reached it on localhost"
dk rm -f web >/dev/null

# 5. Nothing left.
[ -z "$(dk ps -a -q)" ] || fail "containers left: $(dk ps -a)"
sleep 1
left=$(pgrep -af 'vessel-monitor|vessel:' || true)
[ -z "$left" ] || fail "monitors left: $left"
ok "nothing left"
