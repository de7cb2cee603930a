#!/usr/bin/env bash
# Self-test of the lab runner (three short lab boots): the exit code comes back, stdout and
# stderr stream separately, the timeout fires, and no QEMU process or temporary directory is
# left behind, also after SIGTERM.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fail=0
t() { echo "lab selftest: $1: $2"; [ "$2" = ok ] || fail=1; }
leftovers() { # QEMU processes or I/O dirs owned by runner pid $1
  pgrep -f "vessel-lab\.$1\." >/dev/null && return 0
  compgen -G "/tmp/vessel-lab.$1.*" >/dev/null
}

out=$("$here/run.sh" bash -c 'echo to-stdout; echo to-stderr >&2; grep -qw svm /proc/cpuinfo && test -c /dev/kvm && exit 7' 2>/tmp/lab-selftest.err)
rc=$?
[ "$rc" = 7 ] && t exit-code ok || t exit-code "FAILED (got $rc, want 7)"
[ "$out" = to-stdout ] && t stdout ok || t stdout "FAILED (got '$out')"
grep -qx to-stderr /tmp/lab-selftest.err && t stderr ok || t stderr "FAILED"
grep -q '^lab: up in' /tmp/lab-selftest.err && t boot-time ok || t boot-time "FAILED (no 'lab: up in' line)"
rm -f /tmp/lab-selftest.err

"$here/run.sh" --timeout 20 sleep 600 2>/dev/null
rc=$?
[ "$rc" = 124 ] && t timeout ok || t timeout "FAILED (got $rc, want 124)"

"$here/run.sh" sleep 600 2>/dev/null &
runner=$!
for _ in $(seq 1 100); do pgrep -f "vessel-lab\.$runner\." >/dev/null && break; sleep 0.1; done
sleep 3
kill -TERM "$runner"
wait "$runner"
rc=$?
sleep 1
if [ "$rc" = 143 ] && ! leftovers "$runner"; then t sigterm-cleanup ok; else t sigterm-cleanup "FAILED (rc $rc, leftovers: $(pgrep -f "vessel-lab\.$runner\." | tr '\n' ' ') $(ls -d /tmp/vessel-lab.$runner.* 2>/dev/null))"; fi
exit $fail
