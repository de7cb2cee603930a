#!/usr/bin/env bash
# `make soak`: the fault soak (tests/soak/soak.sh) for SOAK_CYCLES cycles, in rounds of
# SOAK_ROUND cycles, each in a lab of its own, summed into one table.
#
# Why rounds: a run of 1,000 cycles needs more than an hour of the lab, and the lab host's own
# kernel (TCG emulating nested SVM) has been seen to die in long runs ("Fatal exception in
# interrupt", docs/testing.md "The lab"), taking the run and its table with it. A round is a
# whole soak: its own baseline and its own leak check at the end, so nothing can hide between
# rounds. A round whose lab died (run.sh's 125: the lab ended without CMD's status) is run again
# with the same seed, at most SOAK_RETRIES (2) times, and the table says so; any other failure
# of a round (a hang, an unclear failure, a leak) fails `make soak` after all rounds ran.
#
# Environment: SOAK_CYCLES (1000), SOAK_ROUND (250), SOAK_SEED (the time; round r uses seed+r),
# SOAK_TIMEOUT (seconds for one round's lab, 5400), SOAK_RETRIES (2), SOAK_LOGS (a directory
# for each round's output, default target/soak), and everything tests/soak/soak.sh reads.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cycles=${SOAK_CYCLES:-1000}
round=${SOAK_ROUND:-250}
seed=${SOAK_SEED:-$(date +%s)}
timeout=${SOAK_TIMEOUT:-5400}
retries=${SOAK_RETRIES:-2}
logs=${SOAK_LOGS:-$repo/target/soak}
for v in cycles round seed timeout retries; do
  case ${!v} in ''|*[!0-9]*) echo "soak: SOAK_${v^^} must be a whole number, got '${!v}'" >&2; exit 2 ;; esac
done
[ "$round" -ge 1 ] || { echo "soak: SOAK_ROUND must be at least 1" >&2; exit 2; }
mkdir -p "$logs" || exit 2
rm -f "$logs"/round-*.log "$logs"/all "$logs"/leaks

t0=$SECONDS
failed=0 r=0 done_cycles=0 lab_deaths=0
: > "$logs/all"; : > "$logs/leaks.all"
while [ "$done_cycles" -lt "$cycles" ]; do
  r=$((r + 1))
  n=$(( cycles - done_cycles < round ? cycles - done_cycles : round ))
  for ((try = 0; ; try++)); do
    log="$logs/round-$r.$try.log"
    echo "soak: round $r: $n cycles, seed $((seed + r)) (output: $log)"
    SOAK_CYCLES=$n SOAK_SEED=$((seed + r)) SOAK_RECORDS=1 \
      "$repo/tests/lab/run.sh" --timeout "$timeout" bash "$repo/tests/soak/soak.sh" > "$log" 2>&1
    rc=$?
    grep -v '^SOAK-' "$log" | grep -E '^soak: [0-9]+ cycles in|^soak: (hung|passed|FAILED)' | sed 's/^/  /'
    if [ "$rc" -eq 125 ] && [ "$try" -lt "$retries" ]; then
      lab_deaths=$((lab_deaths + 1))
      echo "soak: round $r: the lab died before the soak ended (run.sh 125; last lines below); running the round again"
      tail -n 5 "$log" | sed 's/^/  | /'
      continue
    fi
    break
  done
  if ! grep -q '^SOAK-WALL' "$log"; then
    # A lab that timed out or died once too often: no records of this round; the table below
    # sums the rounds that ended.
    echo "soak: round $r ended without its records (exit $rc); its output: $log" >&2
    tail -n 20 "$log" >&2
    failed=1 r=$((r - 1))
    break
  fi
  [ "$rc" -eq 0 ] || { failed=1; echo "soak: round $r failed (exit $rc): see $log"; }
  # The records, with the round in the cycle's number so that cycles stay distinct.
  awk -F'\t' -v OFS='\t' -v r="$r" '$1=="SOAK-RECORD" {$3 = r "." $3; $1 = ""; sub(/^\t/, ""); print}' "$log" >> "$logs/all"
  awk -F'\t' -v r="$r" '$1=="SOAK-LEAK" {print r, $2}' "$log" >> "$logs/leaks.all"
  done_cycles=$((done_cycles + n))
done
wall=$((SECONDS - t0))

# Per resource, the round that ended furthest above its own baseline.
awk '{ split($0, a, " "); name=a[2]; d=a[5];
       if (!(name in best) || d > bestd[name]) { best[name]=$0; bestd[name]=d } ; order[name]=NR }
     END { for (n in best) { split(best[n], a, " "); print order[n], n, a[3], a[4], a[5], a[6] } }' \
  "$logs/leaks.all" | sort -n | cut -d' ' -f2- > "$logs/leaks"

echo
echo "soak: $done_cycles of $cycles cycles in $r rounds of up to $round, ${wall}s in all" \
  "(seeds $((seed + 1))..$((seed + r))); lab deaths rerun: $lab_deaths"
read -r -a faults <<<"${SOAK_FAULTS:-none monitor-sigkill create-sigkill-boot create-sigkill-hooks agent-killed guest-reset state-full delete-race-start}"
echo "(leaks: each resource's largest rise over its own round's baseline)"
"$repo/tests/soak/table.sh" "$logs/all" "$logs/leaks" "${faults[@]}" || failed=1
[ "$failed" = 0 ] || echo "soak rounds: FAILED (a round failed its checks or ended without records: see above)"
exit "$failed"
