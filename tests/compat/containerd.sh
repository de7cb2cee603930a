#!/usr/bin/env bash
# containerd 1.6 (Debian's package) runs BusyBox containers in Vessel microVMs through its runc
# shim (containerd-shim-runc-v2 with BinaryName = vessel). Runs INSIDE the lab (needs a real
# /dev/kvm): tests/lab/run.sh bash tests/compat/containerd.sh
#
# 1. containerd with root, state and socket on a tmpfs of its own, loading a config.toml that
#    also carries the CRI runtime entry documented in docs/kubernetes.md;
# 2. `ctr image import` of an OCI archive made from the BusyBox fixture (no registry);
# 3. `ctr run --rm --runc-binary vessel`: output and exit code arrive;
# 4. `ctr run -t --rm` under `script` (ctr needs a terminal of its own): the container gets a
#    pty (console socket) of ctr's size, its output and exit code arrive;
# 5. `ctr run -d`, `ctr task exec` (output, exit code), `ctr task ps`, `ctr task kill`,
#    `ctr task delete` (exit status), `ctr container delete`;
# 6. the configured way: containerd accepted the runtime entry (config dump, cri plugin loaded);
# 7. a Debian bookworm image (the debootstrap fixture) prints its os-release and the guest kernel,
#    and coreutils' timeout (a POSIX timer) ends a sleep with 124.
# CRI pods through the same runtime entry: tests/compat/cri.sh.
#
# Environment: VESSEL (default build/bin/vessel), KEEP=1 keeps the scratch dir on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vessel=${VESSEL:-$repo/build/bin/vessel}
image=docker.io/library/vessel-busybox:latest
[ -x "$vessel" ] || { echo "containerd: $vessel missing (make artefacts)" >&2; exit 2; }
command -v containerd >/dev/null && command -v ctr >/dev/null ||
  { echo "containerd: containerd/ctr missing (make deps)" >&2; exit 2; }

work=$(mktemp -d /tmp/vessel-containerd.XXXXXX)
mount -t tmpfs -o mode=0700 vessel-containerd "$work"
sock=$work/containerd.sock
vroot=$work/vessel-root   # Root of the CRI runtime entry (unused by ctr, which passes its own)
ctrd_pid=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$ctrd_pid" ]; then
    ctr -a "$sock" task kill -s KILL ctr-detached >/dev/null 2>&1
    ctr -a "$sock" task delete -f ctr-detached >/dev/null 2>&1
    ctr -a "$sock" container delete ctr-detached >/dev/null 2>&1
    kill "$ctrd_pid"; wait "$ctrd_pid" 2>/dev/null
  fi
  # shims and monitors left by a failure die with the lab; unmount $work and anything under it
  if [ "${KEEP:-0}" != 1 ]; then
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rmdir "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT

# What vessel and the guest said, for a failure report.
diagnose() {
  echo "--- containerd log (tail)"; tail -n 40 "$work/containerd.log"
  for f in $(find "$work/state" -name log.json 2>/dev/null); do echo "--- $f"; tail -n 20 "$f"; done
  for f in $(find /run/containerd/runc -name console.log 2>/dev/null); do echo "--- $f"; tail -n 40 "$f"; done
}
fail() { echo "containerd: FAIL: $*" >&2; diagnose >&2; exit 1; }
ok() { echo "containerd: ok: $* (${SECONDS}s)"; }

cat > "$work/config.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"

[grpc]
  address = "$sock"

# CRI's default handler stays runc; a runtimes table must then also define it.
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
ok "containerd $(containerd --version | awk '{print $3}') up"

# The configured way: the CRI plugin loaded the runtime entry with BinaryName = vessel.
containerd --config "$work/config.toml" config dump > "$work/config.dump" 2>/dev/null
grep -q "BinaryName = \"$vessel\"" "$work/config.dump" || fail "config dump lacks the vessel runtime entry"
ctr -a "$sock" plugins ls | awk '$2 == "cri" {print $NF}' | grep -qx ok ||
  fail "cri plugin not loaded: $(ctr -a "$sock" plugins ls | awk '$2 == "cri"')"
ok "config.toml runtime entry 'vessel' (BinaryName = $vessel) accepted, cri plugin ok"

ctr -a "$sock" image import "$("$repo/tests/compat/archives.sh" busybox)/oci.tar" >/dev/null || fail "ctr image import"
ctr -a "$sock" image ls -q | grep -qx "$image" || fail "image $image not listed after import"
ok "imported $image from an OCI archive"

# Foreground run: output and exit code.
set +e
out=$(timeout -k 10 300 ctr -a "$sock" run --rm --runc-binary "$vessel" "$image" ctr-fg sh -c 'echo hi; exit 3' 2>"$work/fg.err")
rc=$?
set -e
echo "$out" | sed 's/^/  ctr run: /'
[ "$out" = hi ] || fail "ctr run printed '$out' (stderr: $(cat "$work/fg.err"))"
[ "$rc" = 3 ] || fail "ctr run exited $rc, want 3 (stderr: $(cat "$work/fg.err"))"
ok "ctr run --rm printed 'hi' and exited 3"
ctr -a "$sock" container ls -q | grep -qx ctr-fg && fail "ctr run --rm left container ctr-fg"

# A terminal: ctr sends --console-socket, the shim gets the host pty master, ctr resizes the task
# to its own terminal (30x100 here) right after start; the container waits a moment for that.
# script's stdin is not a terminal: at its EOF, script writes the EOF character of a zeroed
# termios, a NUL, which the guest pty echoes as "^@"; it is removed before the checks.
set +e
out=$(timeout -k 10 300 script -qec "stty rows 30 cols 100; ctr -a '$sock' run -t --rm --runc-binary '$vessel' '$image' ctr-tty sh -c 'sleep 2; tty; stty size; exit 4'" /dev/null 2>"$work/tty.err" | tr -d '\r' | sed 's/^\^@//')
rc=$?
set -e
echo "$out" | sed 's/^/  ctr run -t: /'
[ "$(echo "$out" | grep -c '^/dev/pts/0$')" = 1 ] || fail "ctr run -t: no /dev/pts/0 from tty: '$out' ($(cat "$work/tty.err"))"
echo "$out" | grep -qx '30 100' || fail "ctr run -t: stty size is not '30 100': '$out'"
[ "$rc" = 4 ] || fail "ctr run -t exited $rc, want 4 ($(cat "$work/tty.err"))"
ok "ctr run -t: a pty (/dev/pts/0) sized 30x100 by ctr, exit code 4"
ctr -a "$sock" container ls -q | grep -qx ctr-tty && fail "ctr run -t --rm left container ctr-tty"

# Detached run, kill, delete.
timeout -k 10 300 ctr -a "$sock" run -d --log-uri "file://$work/detached.log" --runc-binary "$vessel" \
  "$image" ctr-detached sh -c 'trap "echo got-term; exit 7" TERM; echo started; sleep 1000 & wait' ||
  fail "ctr run -d"
for _ in $(seq 300); do grep -q started "$work/detached.log" 2>/dev/null && break; sleep 0.2; done
grep -q started "$work/detached.log" || fail "detached container printed nothing: $(cat "$work/detached.log" 2>/dev/null)"
status=$(ctr -a "$sock" task ls | awk '$1 == "ctr-detached" {print $3}')
[ "$status" = RUNNING ] || fail "ctr task ls: ctr-detached is '$status', want RUNNING"
ok "ctr run -d: task RUNNING, log says 'started'"
# exec through the shim: `vessel exec --process ... --detach --pid-file`, the shim waits on that PID.
set +e
out=$(timeout -k 10 300 ctr -a "$sock" task exec --exec-id ex1 ctr-detached sh -c 'echo exec-ok $(id -u); exit 4' 2>"$work/exec.err")
rc=$?
set -e
[ "$out" = "exec-ok 0" ] || fail "ctr task exec printed '$out' (stderr: $(cat "$work/exec.err"))"
[ "$rc" = 4 ] || fail "ctr task exec exited $rc, want 4 (stderr: $(cat "$work/exec.err"))"
ok "ctr task exec printed 'exec-ok 0' and exited 4"
# ps: the shim runs `vessel ps --format json`; the task's own PID (the monitor) must be listed.
task_pid=$(ctr -a "$sock" task ls | awk '$1 == "ctr-detached" {print $2}')
ctr -a "$sock" task ps ctr-detached > "$work/ps.out" 2>&1 || fail "ctr task ps: $(cat "$work/ps.out")"
awk 'NR > 1 {print $1}' "$work/ps.out" | grep -qx "$task_pid" ||
  fail "ctr task ps does not list the task's PID $task_pid: $(cat "$work/ps.out")"
ok "ctr task ps lists the task's PID $task_pid"
ctr -a "$sock" task kill ctr-detached || fail "ctr task kill"
for _ in $(seq 300); do
  status=$(ctr -a "$sock" task ls | awk '$1 == "ctr-detached" {print $3}')
  [ "$status" = STOPPED ] && break
  sleep 0.2
done
[ "$status" = STOPPED ] || fail "after ctr task kill, ctr-detached is '$status', want STOPPED"
grep -q got-term "$work/detached.log" || fail "the container did not see SIGTERM: $(cat "$work/detached.log")"
ok "ctr task kill: SIGTERM reached the container, task STOPPED"
# ctr 1.6 reports the status on stderr and exits 0.
ctr -a "$sock" task delete ctr-detached 2>"$work/delete.err" || fail "ctr task delete: $(cat "$work/delete.err")"
grep -q 'exit with non-zero exit code 7' "$work/delete.err" ||
  fail "ctr task delete did not report exit code 7: $(cat "$work/delete.err")"
ctr -a "$sock" task ls -q | grep -qx ctr-detached && fail "task still listed after ctr task delete"
ctr -a "$sock" container delete ctr-detached || fail "ctr container delete"
ok "ctr task delete: ctr reports \"task ctr-detached exit with non-zero exit code 7\"; container deleted"
sed 's/^/  detached log: /' "$work/detached.log"

# A real distribution: the Debian bookworm fixture (debootstrap, built on the host by make
# fixtures) as an image; its os-release and the guest kernel from inside the microVM.
ctr -a "$sock" image import "$("$repo/tests/compat/archives.sh" debian)/oci.tar" >/dev/null ||
  fail "ctr image import (debian)"
set +e
out=$(timeout -k 10 300 ctr -a "$sock" run --rm --runc-binary "$vessel" docker.io/library/vessel-debian:bookworm \
  ctr-debian sh -c '. /etc/os-release; echo "$PRETTY_NAME"; timeout 1 sleep 30; echo "timeout=$?"; uname -r' \
  2>"$work/debian.err")
rc=$?
set -e
echo "$out" | sed 's/^/  ctr run debian: /'
[ "$rc" = 0 ] || fail "ctr run (debian) exited $rc (stderr: $(cat "$work/debian.err"))"
echo "$out" | head -1 | grep -q '^Debian GNU/Linux 12' || fail "ctr run (debian): no Debian 12 os-release: $out"
echo "$out" | tail -1 | grep -q -- '-vessel-guest$' || fail "ctr run (debian): not the guest kernel: $out"
# coreutils' timeout arms a POSIX timer (timer_create): 124 once it fired, not ENOSYS's 125.
echo "$out" | grep -qx 'timeout=124' || fail "ctr run (debian): timeout 1 sleep 30 did not end with 124: $out"
ok "ctr run of a Debian bookworm image: $(echo "$out" | head -1), kernel $(echo "$out" | tail -1)"

# Nothing of Vessel's is left behind: no state dir, no monitor.
left=$(ls /run/containerd/runc/default 2>/dev/null || true)
[ -z "$left" ] || fail "vessel state left under /run/containerd/runc/default: $left"
real=$(readlink -f "$vessel")
for p in /proc/[0-9]*; do
  if [ "$(readlink "$p/exe" 2>/dev/null)" = "$real" ]; then
    fail "a vessel process is left: $(tr '\0' ' ' < "$p/cmdline")"
  fi
done
ok "no vessel state or process left behind"
echo "containerd: all checks passed"
