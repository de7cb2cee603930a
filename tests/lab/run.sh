#!/usr/bin/env bash
# Run a command inside the nested KVM lab and return its exit code.
#
# Usage: tests/lab/run.sh [--timeout SECS] [--] CMD [ARGS...]
#        (make lab CMD='...' calls: tests/lab/run.sh sh -c "$CMD")
#
# The lab is a QEMU TCG machine (-cpu max exposes AMD SVM with nested paging) booting the lab-host
# kernel from kernel-config/ (KVM_AMD built in), so CMD sees a real /dev/kvm even on hosts whose
# own KVM cannot run guests. The host's / is the lab's root (9p, read-only, under a tmpfs
# overlay: writable, thrown away at the end), so everything built here is at the same path there.
# CMD runs as root in the caller's working directory with the caller's exported environment; its
# stdout and stderr stream back on their own virtio-serial ports. Kernel messages go to a console
# log that is shown only when the lab fails.
#
# Environment:
#   LAB_TIMEOUT   seconds before the lab is killed (default 900); exit code 124 then
#   LAB_MEM_MIB   lab memory in MiB (default 6144)
#   LAB_CPUS      lab vCPUs (default 2)
#   LAB_KERNEL    lab-host bzImage (default: built or taken from the cache by kernel-config/build.sh lab)
#   LAB_VERBOSE   1 prints the lab's console log when the command ends
#   LAB_TCG_THREAD  QEMU's TCG threading, multi (default: one host thread per lab vCPU) or single
#   LAB_KERNEL_PARAMS  extra lab-host kernel parameters (e.g. kvm_amd.vgif=0), for diagnosis
#   LAB_CPU            QEMU's -cpu for the lab (default max,-erms, see below)
#
# Exit codes: CMD's own; 124 timeout; 125 the lab failed before CMD ended; 130/143 interrupted.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
timeout=${LAB_TIMEOUT:-900}
mem=${LAB_MEM_MIB:-6144}
cpus=${LAB_CPUS:-2}

while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--timeout SECS] [--] CMD [ARGS...]" >&2; exit 2; }
case "$timeout" in ''|*[!0-9]*) echo "lab: --timeout must be whole seconds, got '$timeout'" >&2; exit 2 ;; esac

command -v qemu-system-x86_64 >/dev/null || { echo "lab: qemu-system-x86_64 not found; run 'make deps'" >&2; exit 2; }
[ -x /bin/busybox ] || { echo "lab: /bin/busybox not found (the lab's init uses it to power off); run 'make deps'" >&2; exit 2; }
kernel=${LAB_KERNEL:-$("$repo/kernel-config/build.sh" lab)/bzImage}
[ -r "$kernel" ] || { echo "lab: lab-host kernel '$kernel' not readable" >&2; exit 2; }

# Sweep I/O dirs of earlier labs whose runner died without cleaning up (e.g. SIGKILL).
for d in /tmp/vessel-lab.*; do
  [ -d "$d" ] || continue
  owner=${d#/tmp/vessel-lab.}; owner=${owner%%.*}
  kill -0 "$owner" 2>/dev/null || rm -rf "$d"
done

io=$(mktemp -d "/tmp/vessel-lab.$$.XXXXXX")
qemu_pid=""
tails=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  for t in "${tails[@]}"; do kill "$t" 2>/dev/null || true; done
  rm -rf "$io"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "lab: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The command, the caller's exported environment and working directory, for the lab's init.
{
  export -p | grep -Ev '^declare -x (OLDPWD|PWD|SHLVL|_)=' || true
} > "$io/env"
{
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$io/cmd"
: > "$io/out"; : > "$io/err"

start=$(date +%s.%N)
# setpriv --pdeathsig: QEMU dies with this script even when the script is SIGKILLed.
# -erms: TCG emulates `rep movsb` and `rep stosb` one byte per step, and with ERMS the lab kernel
# (and the guests, whose CPUID KVM derives from it) zeroes and copies every page that way, 2 MiB
# per transparent huge page; without it, 8 bytes per step (`rep stosq`, unrolled copies). Boot to
# init was about a quarter faster on both sides of the benchmark (docs/performance.md).
setpriv --pdeathsig KILL -- qemu-system-x86_64 \
  -accel tcg,thread=${LAB_TCG_THREAD:-multi} -cpu "${LAB_CPU:-max,-erms}" -smp "$cpus" -m "$mem" \
  -nodefaults -no-user-config -display none -vga none -no-reboot \
  -kernel "$kernel" \
  -append "console=ttyS0 loglevel=4 quiet panic=-1 ${LAB_KERNEL_PARAMS:-} root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose ro init=$here/init.sh" \
  -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=root,mount_tag=/dev/root \
  -fsdev local,id=io,path="$io",security_model=none,multidevs=remap \
  -device virtio-9p-pci,fsdev=io,mount_tag=labio \
  -device virtio-serial-pci \
  -chardev file,id=out,path="$io/out" -device virtserialport,chardev=out,name=lab.out \
  -chardev file,id=err,path="$io/err" -device virtserialport,chardev=err,name=lab.err \
  -serial file:"$io/console.log" \
  </dev/null >"$io/qemu.log" 2>&1 &
qemu_pid=$!

tail -c +1 -s 0.2 --pid="$qemu_pid" -f "$io/out" & tails+=($!)
tail -c +1 -s 0.2 --pid="$qemu_pid" -f "$io/err" >&2 & tails+=($!)

announced=""
deadline=$(( $(date +%s) + timeout ))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ -z "$announced" ] && [ -s "$io/up" ]; then
    announced=1
    echo "lab: up in $(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}') s (kernel uptime $(cat "$io/up") s), /dev/kvm: $(cat "$io/kvm" 2>/dev/null || echo '?')" >&2
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "lab: timed out after ${timeout} s; killing QEMU" >&2
    exit 124
  fi
  sleep 0.2
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
for t in "${tails[@]}"; do wait "$t" 2>/dev/null || true; done
tails=()

elapsed=$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}')
if [ ! -s "$io/status" ]; then
  echo "lab: the lab ended after ${elapsed} s without reporting CMD's exit status; last console lines:" >&2
  tail -n 30 "$io/console.log" >&2 || true
  tail -n 5 "$io/qemu.log" >&2 || true
  exit 125
fi
rc=$(cat "$io/status")
[ "${LAB_VERBOSE:-0}" = 1 ] && { echo "lab: console log:" >&2; cat "$io/console.log" >&2; }
echo "lab: command exited $rc after ${elapsed} s in all" >&2
exit "$rc"
