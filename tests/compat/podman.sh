#!/usr/bin/env bash
# podman 4.3 (Debian's package, with conmon) runs BusyBox containers in Vessel microVMs with
# `--runtime <vessel>`. Runs INSIDE the lab (needs a real /dev/kvm):
#   tests/lab/run.sh bash tests/compat/podman.sh
#
# Storage (vfs) and run root on a tmpfs of their own, cgroupfs, no events, no network; the image
# is `podman import` of a tarball of the BusyBox fixture (no registry). Checks:
# 1. `podman run --rm --net none IMG sh -c 'echo hi; exit 3'`: output and exit code;
# 2. `podman run -it --rm` under `script` (podman needs a terminal of its own): the container
#    gets a pty through conmon's console socket, of podman's size, output and exit code arrive;
# 3. `podman run -d`, `podman logs`, `podman exec` (output, exit code), `podman stop` (SIGTERM
#    reaches the container, exit status recorded), `podman rm`;
# 4. a Debian bookworm image (the debootstrap fixture) prints its os-release and the guest kernel.
#
# Environment: VESSEL (default build/bin/vessel), KEEP=1 keeps the scratch dir on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vessel=${VESSEL:-$repo/build/bin/vessel}
image=localhost/vessel-busybox:latest
[ -x "$vessel" ] || { echo "podman: $vessel missing (make artefacts)" >&2; exit 2; }
command -v podman >/dev/null && command -v conmon >/dev/null ||
  { echo "podman: podman/conmon missing (make deps)" >&2; exit 2; }
# podman keeps its lock file in /dev/shm, which must be a tmpfs (the lab mounts one).
[ "$(stat -f -c %T /dev/shm)" = tmpfs ] || { echo "podman: /dev/shm is not a tmpfs" >&2; exit 2; }

work=$(mktemp -d /tmp/vessel-podman.XXXXXX)
mount -t tmpfs -o mode=0700 vessel-podman "$work"
podman=(podman --root "$work/storage" --runroot "$work/runroot" --tmpdir "$work/libpod"
  --runtime "$vessel" --storage-driver vfs --cgroup-manager cgroupfs --events-backend none)
pm() { "${podman[@]}" "$@"; }
cleanup() {
  local rc=$?
  set +e
  pm rm -f -t 0 pm-detached >/dev/null 2>&1
  if [ "${KEEP:-0}" != 1 ]; then
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rmdir "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT

diagnose() {
  for f in $(find "$work" -name oci-log -o -name ctr.log 2>/dev/null); do echo "--- $f"; tail -n 20 "$f"; done
  for f in $(find /run/vessel /run/runc -name console.log 2>/dev/null); do echo "--- $f"; tail -n 40 "$f"; done
}
fail() { echo "podman: FAIL: $*" >&2; diagnose >&2; exit 1; }
ok() { echo "podman: ok: $* (${SECONDS}s)"; }

pm import "$("$repo/tests/compat/archives.sh" busybox)/rootfs.tar" "$image" >/dev/null 2>"$work/import.err" || fail "podman import: $(cat "$work/import.err")"
pm image exists "$image" || fail "image $image missing after import"
ok "podman $(podman --version | awk '{print $3}'): imported $image from a rootfs tarball"

# Foreground run: output and exit code.
set +e
out=$(timeout -k 10 300 "${podman[@]}" run --rm --net none "$image" sh -c 'echo hi; exit 3' 2>"$work/fg.err")
rc=$?
set -e
echo "$out" | sed 's/^/  podman run: /'
[ "$out" = hi ] || fail "podman run printed '$out' (stderr: $(cat "$work/fg.err"))"
[ "$rc" = 3 ] || fail "podman run exited $rc, want 3 (stderr: $(cat "$work/fg.err"))"
ok "podman run --rm printed 'hi' and exited 3"
[ -z "$(pm ps -a -q)" ] || fail "podman run --rm left a container: $(pm ps -a)"

# A terminal: conmon passes --console-socket and relays the host pty master; podman resizes it
# to its own terminal (30x100 here); the container waits a moment for that.
# script's stdin is not a terminal: at its EOF, script writes the EOF character of a zeroed
# termios, a NUL, which the guest pty echoes as "^@"; it is removed before the checks.
set +e
out=$(timeout -k 10 300 script -qec "stty rows 30 cols 100; ${podman[*]} run -it --rm --net none $image sh -c 'sleep 2; tty; stty size; exit 4'" /dev/null 2>"$work/tty.err" | tr -d '\r' | sed 's/^\^@//')
rc=$?
set -e
echo "$out" | sed 's/^/  podman run -it: /'
echo "$out" | grep -qx '/dev/pts/0' || fail "podman run -it: no /dev/pts/0 from tty: '$out' (exit $rc; stderr: $(cat "$work/tty.err"))"
echo "$out" | grep -qx '30 100' || fail "podman run -it: stty size is not '30 100': '$out'"
[ "$rc" = 4 ] || fail "podman run -it exited $rc, want 4 ($(cat "$work/tty.err"))"
ok "podman run -it: a pty (/dev/pts/0) sized 30x100 by podman, exit code 4"
[ -z "$(pm ps -a -q)" ] || fail "podman run -it --rm left a container: $(pm ps -a)"

# Detached run, logs, stop, rm.
timeout -k 10 300 "${podman[@]}" run -d --name pm-detached --net none "$image" \
  sh -c 'trap "echo got-term; exit 7" TERM; echo started; sleep 1000 & wait' >/dev/null ||
  fail "podman run -d"
for _ in $(seq 300); do pm logs pm-detached 2>/dev/null | grep -q started && break; sleep 0.2; done
pm logs pm-detached | grep -q started || fail "podman logs: no 'started' ($(pm logs pm-detached 2>&1))"
status=$(pm inspect --format '{{.State.Status}}' pm-detached)
[ "$status" = running ] || fail "podman inspect: pm-detached is '$status', want running"
ok "podman run -d: running, podman logs shows 'started'"
set +e
out=$(timeout -k 10 300 "${podman[@]}" exec pm-detached sh -c 'echo exec-ok $(id -u); exit 4' 2>"$work/exec.err")
rc=$?
set -e
[ "$out" = "exec-ok 0" ] || fail "podman exec printed '$out' (stderr: $(cat "$work/exec.err"))"
[ "$rc" = 4 ] || fail "podman exec exited $rc, want 4 (stderr: $(cat "$work/exec.err"))"
ok "podman exec printed 'exec-ok 0' and exited 4"
timeout -k 10 300 "${podman[@]}" stop -t 20 pm-detached >/dev/null || fail "podman stop"
status=$(pm inspect --format '{{.State.Status}} {{.State.ExitCode}}' pm-detached)
[ "$status" = "exited 7" ] || fail "after podman stop, pm-detached is '$status', want 'exited 7'"
pm logs pm-detached | grep -q got-term || fail "the container did not see SIGTERM: $(pm logs pm-detached 2>&1)"
ok "podman stop: SIGTERM reached the container, exited with status 7"
pm logs pm-detached | sed 's/^/  podman logs: /'
pm rm pm-detached >/dev/null || fail "podman rm"
[ -z "$(pm ps -a -q)" ] || fail "podman rm left a container: $(pm ps -a)"
ok "podman rm"

# A real distribution: the Debian bookworm fixture (built on the host by make fixtures).
pm import "$("$repo/tests/compat/archives.sh" debian)/rootfs.tar" localhost/vessel-debian:bookworm \
  >/dev/null 2>"$work/import.err" || fail "podman import (debian): $(cat "$work/import.err")"
set +e
out=$(timeout -k 10 300 "${podman[@]}" run --rm --net none localhost/vessel-debian:bookworm \
  sh -c '. /etc/os-release; echo "$PRETTY_NAME"; uname -r' 2>"$work/debian.err")
rc=$?
set -e
echo "$out" | sed 's/^/  podman run debian: /'
[ "$rc" = 0 ] || fail "podman run (debian) exited $rc (stderr: $(cat "$work/debian.err"))"
echo "$out" | head -1 | grep -q '^Debian GNU/Linux 12' || fail "podman run (debian): no Debian 12 os-release: $out"
echo "$out" | tail -1 | grep -q -- '-vessel-guest$' || fail "podman run (debian): not the guest kernel: $out"
ok "podman run of a Debian bookworm image: $(echo "$out" | head -1), kernel $(echo "$out" | tail -1)"
echo "podman: all checks passed"
