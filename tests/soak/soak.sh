#!/usr/bin/env bash
# The fault soak (issue 21, item 9). Runs INSIDE the lab (needs a real /dev/kvm):
#   make soak                        (SOAK_CYCLES=1000 by default)
#   SOAK_CYCLES=100 tests/lab/run.sh --timeout 1800 bash tests/soak/soak.sh
# `make test` runs 50 cycles of it (tests/lab/in-lab.sh).
#
# SOAK_CYCLES cycles of create, start, exec, kill, delete of BusyBox containers, SOAK_PARALLEL at a
# time (one worker each, with its own --root on a tmpfs of its own). Each cycle injects one fault
# drawn at random (SOAK_SEED makes the draw repeatable), or none:
#   monitor-sigkill       SIGKILL of the container's monitor (the state's pid) after start
#   create-sigkill-boot   SIGKILL of `vessel create` at a random point of its first 3 s (the boot)
#   create-sigkill-hooks  SIGKILL of `vessel create` while its createRuntime hook runs
#   agent-killed          the guest agent (PID 1 in the guest) killed from the workload: a root
#                         process in the guest's PID namespace fills its code with int3 through
#                         /proc/1/mem; the agent dies of SIGTRAP at its next instruction and
#                         PID 1's death panics the guest kernel (the guest kernel has no sysrq,
#                         so this is also the soak's guest kernel panic)
#   guest-reset           `reboot -f` from a root workload in the guest's PID namespace: the
#                         guest resets under the agent
#   state-full            the worker's state root file system filled up, then `create`
#   delete-race-start     `delete --force` and `start` of a created container at once
# Every command has a deadline (SOAK_DEADLINE, 120 s for create): one that passes it is a hang.
# After each cycle `delete --force` must leave no trace of the container; after the run no
# process, mount, cgroup, tap, tc filter, state directory or open file may be left beyond the
# baseline taken before it. It prints a table: cycles, each fault's count, commands by outcome,
# the failures and why, the leaks, the wall time.
#
# Exit status 0 when no command hung, every failure said why, every container was deletable and
# nothing leaked. Failures with a clear message are counted, not fatal: under TCG a boot of ten
# VMs at once can miss the agent's deadlines, and saying so is the behaviour asked for.
#
# Environment: VESSEL (default build/bin/vessel), SOAK_CYCLES (1000), SOAK_PARALLEL (10),
# SOAK_SEED (the time), SOAK_DEADLINE (60), SOAK_FAULTS (a subset of the faults above),
# KEEP=1 keeps the scratch dir on exit.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vessel=${VESSEL:-$repo/build/bin/vessel}
cycles=${SOAK_CYCLES:-1000}
parallel=${SOAK_PARALLEL:-10}
seed=${SOAK_SEED:-$(date +%s)}
deadline=${SOAK_DEADLINE:-60}
create_deadline=$((deadline * 2))
all_faults=(none monitor-sigkill create-sigkill-boot create-sigkill-hooks agent-killed guest-reset
  state-full delete-race-start)
# SOAK_FAULTS draws from a subset (names as above, space-separated), for a closer look at one.
read -r -a faults <<<"${SOAK_FAULTS:-${all_faults[*]}}"
for f in "${faults[@]}"; do
  [[ " ${all_faults[*]} " == *" $f "* ]] || { echo "soak: unknown fault '$f' in SOAK_FAULTS (known: ${all_faults[*]})" >&2; exit 2; }
done

for v in cycles parallel seed deadline; do
  case ${!v} in ''|*[!0-9]*) echo "soak: SOAK_${v^^} must be a whole number, got '${!v}'" >&2; exit 2 ;; esac
done
[ "$parallel" -ge 1 ] || { echo "soak: SOAK_PARALLEL must be at least 1" >&2; exit 2; }
[ "$deadline" -ge 1 ] || { echo "soak: SOAK_DEADLINE must be at least 1 (0 would mean no deadline)" >&2; exit 2; }
[ -x "$vessel" ] || { echo "soak: $vessel missing (make artefacts)" >&2; exit 2; }
[ -c /dev/kvm ] || { echo "soak: no /dev/kvm: run it in the lab (make soak)" >&2; exit 2; }
[ -n "${VESSEL_KERNEL:-}" ] || export VESSEL_KERNEL=$repo/build/share/vessel/vmlinux
[ -n "${VESSEL_INITRAMFS:-}" ] || export VESSEL_INITRAMFS=$repo/build/share/vessel/initramfs.cpio

work=$(mktemp -d /tmp/vessel-soak.XXXXXX)
cleanup() {
  local rc=$?
  set +e
  if [ "${KEEP:-0}" != 1 ]; then
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT

# Three bundles over one BusyBox root (read only: containers of a bundle share it).
mkbundle() { # name command
  "$repo/tests/fixtures/mkbundle.sh" busybox "$work/$1" "$2" >/dev/null || { echo "soak: mkbundle $1 failed" >&2; exit 2; }
}
mkbundle plain 'exec sleep 100000'
mkbundle hooks 'exec sleep 100000'
mkbundle root 'exec sleep 100000'
python3 - "$work" <<'PY' || { echo "soak: bundle configs" >&2; exit 2; }
import json, sys
work = sys.argv[1]
def edit(name, f):
    path = f"{work}/{name}/config.json"
    with open(path) as fh:
        spec = json.load(fh)
    spec["root"]["readonly"] = True
    f(spec)
    with open(path, "w") as fh:
        json.dump(spec, fh, indent=2)
def hooks(spec):
    # The hook marks that it runs (the soak waits for the mark), then holds create for 4 s.
    script = ('id=$(grep -o \'"id": *"[^"]*"\' | head -n1 | sed \'s/.*"\\([^"]*\\)"$/\\1/\'); '
              f'touch {work}/hook-ran-$id; sleep 4')
    spec["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}
def root(spec):
    # The guest's PID namespace, every capability, nothing masked: the workload can reach PID 1.
    caps = [f"CAP_{c}" for c in (
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
        "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
        "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP").split()]
    spec["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    spec["process"]["noNewPrivileges"] = False
    lx = spec["linux"]
    lx["namespaces"] = [n for n in lx["namespaces"] if n["type"] != "pid"]
    lx["maskedPaths"] = []
    lx["readonlyPaths"] = []
    lx.pop("seccomp", None)
edit("plain", lambda s: None)
edit("hooks", hooks)
edit("root", root)
PY

# What the host holds, for the leak check: one "name count" line each.
# Kernel threads (children of kthreadd) come and go with the VMs' own: only user processes count.
user_processes() { ps --ppid 2 -p 2 --deselect -o pid=,args= | grep -v ' ps --ppid 2 ' ; }
cgroup_dirs() { find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null; }
open_descriptors() { find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# What the host holds, for the leak check: one "name count" line each; the lists behind the
# counts go to $1.processes and $1.cgroups for the report.
inventory() {
  user_processes > "$1.processes"
  cgroup_dirs > "$1.cgroups"
  {
    echo "processes $(wc -l < "$1.processes")"
    echo "vessel-processes $(awk '{print $2}' "$1.processes" | grep -c '^vessel')"
    echo "mounts $(wc -l < /proc/self/mountinfo)"
    echo "cgroups $(wc -l < "$1.cgroups")"
    echo "taps $(ip -o link show type tun 2>/dev/null | wc -l)"
    local filters=0 dev
    for dev in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'); do
      filters=$((filters + $(tc filter show dev "$dev" ingress 2>/dev/null | wc -l)))
    done
    echo "tc-filters $filters"
    echo "state-dirs $(find "$work"/w*/root -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    echo "open-descriptors $(open_descriptors)"
  } > "$1"
}

for ((w = 0; w < parallel; w++)); do
  mkdir -p "$work/w$w/root"
  # 16 MiB: room for a container's state, console log and share, and quick to fill.
  mount -t tmpfs -o size=16m,mode=0700 "soak-w$w" "$work/w$w/root" || { echo "soak: tmpfs for worker $w" >&2; exit 2; }
done
inventory "$work/baseline"

# One record per command: R cycle fault command rc outcome message (tab-separated).
# Outcomes: ok; expected (failed, the fault allows it, said why); unexpected (failed, said why);
# unclear (failed with nothing on stderr); hung (ran past its deadline); wedged (agent-killed
# only: the agent stopped answering instead of dying, see there).
worker() { # index cycles
  local w=$1 n=$2 root="$work/w$1/root" log="$work/w$1/log" c fault id
  RANDOM=$((seed + w * 7919))
  vs() { timeout -k 5 "$deadline" "$vessel" --root "$root" "$@"; }
  # cmd EXPECT NAME DEADLINE ARGS...: runs `vessel ARGS`, records it; $rc and $out are left
  # set. EXPECT: ok (must succeed), any (may fail, saying why), fail (must fail, saying why).
  cmd() {
    local expect=$1 name=$2 limit=$3; shift 3
    local t0=$SECONDS outcome msg
    local of="$work/w$w/out.$BASHPID"
    err="$work/w$w/err.$BASHPID"
    # To files, not a pipe: a created container's workload keeps the caller's stdio (as
    # runc's does), so a command substitution would wait for the container's end.
    timeout -k 5 "$limit" "$vessel" --root "$root" "$@" </dev/null >"$of" 2>"$err"
    rc=$?
    out=$(cat "$of")
    msg=$(grep -v '^\s*$' "$err" | tail -n 1 | tr '\t' ' ' | cut -c1-600)
    # An exec that ran its process reports the process's status: its own words are its output.
    if [ -z "$msg" ] && [ "$expect" != ok ]; then
      msg=$(grep -v '^\s*$' "$of" | tail -n 1 | tr '\t' ' ' | cut -c1-600)
      [ -n "$msg" ] && msg="(the process's output) $msg"
    fi
    # exec's status is its process's (as runc's): 128+N is a process that died of signal N, as
    # one does when the guest under it is killed, not a failure of exec to say why.
    if [ -z "$msg" ] && [ "$1" = exec ] && [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
      msg="its process ended by signal $((rc - 128))"
    fi
    # `timeout` ends a command that passed its deadline with 124 (or 137 when TERM did not do).
    if [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ $((SECONDS - t0)) -ge "$limit" ]; }; then
      outcome=hung; msg="no answer within ${limit}s"
    elif [ "$rc" -eq 0 ] && [ "$expect" = fail ]; then outcome=unexpected; msg="succeeded where it must fail"
    elif [ "$rc" -eq 0 ]; then outcome=ok
    elif [ -z "$msg" ]; then outcome=unclear
    elif [ "$expect" != ok ]; then outcome=expected
    else outcome=unexpected; fi
    printf 'R\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$fault" "$name" "$rc" "$outcome" "$msg" >> "$log"
    return "$rc"
  }
  after_tenths() { sleep "$(($1 / 10)).$(($1 % 10))"; }
  status_of() { vs state "$1" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }
  # The last lines of the container's guest console, on one line (for a record's message).
  console_tail() { tail -c 4096 "$root/$1/console.log" 2>/dev/null | tr -d '\r\t' | grep -v '^\s*$' | tail -n 4 | tr '\n' '|'; }
  wait_stopped() { # id [outcome]: the container reads stopped (or is gone) within the deadline;
    # otherwise a record with that outcome (hung unless given) and the console's last lines.
    local s end=$((SECONDS + deadline))
    while [ "$SECONDS" -lt "$end" ]; do
      s=$(status_of "$1")
      [ "$s" = stopped ] || [ -z "$s" ] && return 0
      sleep 0.2
    done
    printf 'R\t%s\t%s\tstate\t1\t%s\tstill %s %ss after its VM, monitor or agent was killed; console: %s\n' \
      "$c" "$fault" "${2:-hung}" "$s" "$deadline" "$(console_tail "$1")" >> "$log"
    return 1
  }
  # `create` in the background, SIGKILLed (by its PID) once the trigger command succeeds;
  # records the create: killed, ok (it ended before the trigger), hung, or its own failure.
  create_killed() { # bundle trigger...
    local bundle=$1 t0=$SECONDS pid fired=0 outcome msg end=$((SECONDS + create_deadline)); shift
    "$vessel" --root "$root" create --bundle "$work/$bundle" "$id" </dev/null >/dev/null \
      2>"$work/w$w/err.create" &
    pid=$!
    while [ "$SECONDS" -lt "$end" ]; do
      kill -0 "$pid" 2>/dev/null || break
      if "$@"; then
        kill -KILL "$pid" 2>/dev/null && fired=1
        break
      fi
      sleep 0.1
    done
    if [ "$fired" = 0 ] && kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
      outcome=hung msg="no answer within ${create_deadline}s"
    fi
    wait "$pid" 2>/dev/null; rc=$?
    msg=${msg:-$(grep -v '^\s*$' "$work/w$w/err.create" | tail -n 1 | tr '\t' ' ' | cut -c1-600)}
    if [ -n "${outcome:-}" ]; then :
    elif [ "$fired" = 1 ] && [ "$rc" -eq 137 ]; then outcome=killed msg="create killed after $((SECONDS - t0))s"
    elif [ "$rc" -eq 0 ]; then outcome=ok msg="create had ended before the kill"
    elif [ -z "$msg" ]; then outcome=unclear
    else outcome=unexpected; fi
    printf 'R\t%s\t%s\tcreate\t%s\t%s\t%s\n' "$c" "$fault" "$rc" "$outcome" "$msg" >> "$log"
  }
  for ((c = 0; c < n; c++)); do
    fault=${faults[RANDOM % ${#faults[@]}]}
    id="soak-w$w-c$c"
    t_cycle=$SECONDS
    printf 'F\t%s\t%s\n' "$c" "$fault" >> "$log"
    case $fault in
      none)
        cmd ok create "$create_deadline" create --bundle "$work/plain" "$id" &&
          cmd ok start "$deadline" start "$id" &&
          { cmd ok exec "$deadline" exec "$id" sh -c 'echo exec-ok' && [ "$out" = exec-ok ] ||
              printf 'R\t%s\t%s\texec-output\t1\tunexpected\tprinted %q\n' "$c" "$fault" "$out" >> "$log"; } &&
          cmd ok kill "$deadline" kill "$id" KILL && wait_stopped "$id" &&
          cmd ok delete "$deadline" delete "$id" ;;
      monitor-sigkill)
        cmd ok create "$create_deadline" create --bundle "$work/plain" "$id" &&
          cmd ok start "$deadline" start "$id" && {
            pid=$(vs state "$id" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
            [ -n "$pid" ] && [ "$pid" -gt 0 ] && kill -KILL "$pid"
            wait_stopped "$id"
            cmd fail exec-after "$deadline" exec "$id" true
          } ;;
      create-sigkill-boot)
        create_killed plain after_tenths $((RANDOM % 30)) ;;
      create-sigkill-hooks)
        create_killed hooks test -e "$work/hook-ran-$id" ;;
      agent-killed)
        cmd ok create "$create_deadline" create --bundle "$work/root" "$id" &&
          cmd ok start "$deadline" start "$id" && {
            # Fill PID 1's first executable mapping with int3 (0xcc): whichever byte a thread
            # runs next, even in a page half written, traps, and a forced SIGTRAP kills init.
            # (Zeros did not always: 00 00 is `add %al,(%rax)`, which a thread can slide
            # through into code not yet overwritten and run from the middle of an instruction;
            # one cycle in 37 wedged the agent that way.)
            cmd any exec-kill-agent "$deadline" exec "$id" sh -c \
              'set -- $(grep -m1 " r-xp " /proc/1/maps); a=$((0x${1%-*})); b=$((0x${1#*-}));
               head -c $((b - a)) /dev/zero | tr "\000" "\314" |
                 dd of=/proc/1/mem bs=4096 seek=$((a / 4096)) conv=notrunc 2>&1'
            # An agent whose code was overwritten may wedge instead of dying (seen about once
            # in 35 cycles): its exec's end is then never reported (an exec waits for its
            # process, as runc's does) and the guest runs on. That is the fault's outcome, not a
            # hang of the host side: counted as wedged, with the console's last lines; then
            # `kill KILL` must stop the container within the deadline (the monitor stops a VM
            # whose agent does not take the SIGKILL), as a user's would.
            if tail -n 1 "$log" | grep -q $'\texec-kill-agent\t[0-9]*\thung\t'; then
              TAIL=$(console_tail "$id") awk -F'\t' -v OFS='\t' -v last="$(wc -l < "$log")" \
                'NR == last { $6 = "wedged"; $7 = $7 "; console: " ENVIRON["TAIL"] } { print }' \
                "$log" > "$log.tmp" && mv "$log.tmp" "$log"
            fi
            wait_stopped "$id" wedged ||
              { cmd ok kill-wedged "$deadline" kill "$id" KILL && wait_stopped "$id"; }
          } ;;
      guest-reset)
        cmd ok create "$create_deadline" create --bundle "$work/root" "$id" &&
          cmd ok start "$deadline" start "$id" && {
            cmd any exec-reboot "$deadline" exec "$id" reboot -f
            wait_stopped "$id"
          } ;;
      state-full)
        dd if=/dev/zero of="$root/fill" bs=64k 2>/dev/null
        cmd any create-when-full "$create_deadline" create --bundle "$work/plain" "$id"
        rm -f "$root/fill" ;;
      delete-race-start)
        cmd ok create "$create_deadline" create --bundle "$work/plain" "$id" && {
          cmd any start-racing "$deadline" start "$id" &
          cmd any delete-racing "$deadline" delete --force "$id"
          wait
        } ;;
    esac
    # Whatever happened, the container must be deletable and then gone.
    cmd ok delete-force "$deadline" delete --force "$id" >/dev/null ||
      { grep -q 'does not exist' "$err" && sed -i '$ s/\tunexpected\t/\tgone\t/' "$log"; }
    if vs state "$id" >/dev/null 2>&1; then
      printf 'R\t%s\t%s\tleft\t1\tundeletable\tstill listed after delete --force\n' "$c" "$fault" >> "$log"
    fi
    rm -f "$work/hook-ran-$id"
    # One line per cycle as it ends: its fault, then each command's outcome, with the message
    # of any that failed (so a lab that dies mid-run still leaves every cycle's why behind).
    echo "soak: $id $fault ($((SECONDS - t_cycle)) s):" \
      "$(awk -F'\t' -v c="$c" '$1=="R" && $2==c {printf "%s=%s", $4, $6;
          if ($6 != "ok" && $6 != "killed") printf " [%s]", $7; printf " "}' "$log")"
  done
}

t0=$SECONDS
echo "soak: $cycles cycles, $parallel at a time, seed $seed, deadline ${deadline}s (create ${create_deadline}s)"
for ((w = 0; w < parallel; w++)); do
  n=$(( cycles / parallel + (w < cycles % parallel ? 1 : 0) ))
  # The shell's notices of SIGKILLed jobs go to the worker's file, not the table.
  worker "$w" "$n" 2>>"$work/w$w/stderr" &
done
wait
wall=$((SECONDS - t0))

# Counts beyond the baseline in "$work/after" (the open descriptors of all processes move with the
# lab's own activity, the soak's own shells: up to 32 more are noise); prints "name before after diff flag" lines.
compare() {
  local name before after d tolerance flag
  while read -r name before; do
    after=$(awk -v n="$name" '$1==n {print $2}' "$work/after")
    d=$((after - before))
    tolerance=0; [ "$name" = open-descriptors ] && tolerance=32
    flag=""; [ "$d" -gt "$tolerance" ] && flag=LEAK
    echo "$name $before $after $d $flag"
  done < "$work/baseline"
}
# Monitors and VMs end asynchronously after their container is deleted (one whose `create` was
# killed during boot notices at the end of its boot): the counts get 120 s to come back.
end=$((SECONDS + 120))
while :; do
  inventory "$work/after"
  compare > "$work/leaks"
  grep -q LEAK "$work/leaks" || break
  [ "$SECONDS" -lt "$end" ] || break
  sleep 2
done

cat "$work"/w*/log > "$work/all"
echo
echo "soak: $cycles cycles in ${wall}s (seed $seed)"
# For tests/soak/rounds.sh, which sums several labs' runs into one table: the raw records.
if [ "${SOAK_RECORDS:-0}" = 1 ]; then
  sed 's/^/SOAK-RECORD\t/' "$work/all"
  sed 's/^/SOAK-LEAK\t/' "$work/leaks"
  echo "SOAK-WALL	$wall"
fi
"$repo/tests/soak/table.sh" "$work/all" "$work/leaks" "${faults[@]}"
verdict=$?
if [ "$verdict" -ne 0 ]; then
  echo "processes not there before:"
  awk '{$1=""; print}' "$work/baseline.processes" | sort > "$work/p0"
  awk '{$1=""; print}' "$work/after.processes" | sort | comm -13 "$work/p0" - | head -n 20
  echo "cgroups not there before:"
  sort "$work/baseline.cgroups" > "$work/c0"
  sort "$work/after.cgroups" | comm -13 "$work/c0" - | head -n 20
fi
exit "$verdict"
