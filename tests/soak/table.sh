#!/usr/bin/env bash
# The fault soak's table (tests/soak/soak.sh prints it after a run; tests/soak/rounds.sh after
# summing several labs' runs).
#
# Usage: tests/soak/table.sh RECORDS LEAKS FAULT...
#   RECORDS  soak records, tab-separated: "F cycle fault" (a cycle and the fault drawn) and
#            "R cycle fault command rc outcome message" (a command and how it ended)
#   LEAKS    "name before after diff flag" lines (flag LEAK when the diff is over its tolerance)
#   FAULT    the faults that could be drawn, in the table's order
# Exit status 0 when no command hung, every failure said why, every container was deletable and
# nothing leaked; 1 otherwise.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RECORDS LEAKS FAULT..." >&2; exit 2; }
all=$1 leaksf=$2; shift 2

printf '%-22s %s\n' fault injected
for f in "$@"; do printf '%-22s %s\n' "$f" "$(awk -F'\t' -v f="$f" '$1=="F" && $3==f' "$all" | wc -l)"; done
echo
printf '%-18s %6s %6s %8s %8s %10s %7s %5s %5s %6s\n' command run ok expected killed unexpected unclear hung gone wedged
awk -F'\t' '$1=="R" {n[$4]++; o[$4","$6]++} END {
  for (c in n) printf "%-18s %6d %6d %8d %8d %10d %7d %5d %5d %6d\n", c, n[c], o[c",ok"], o[c",expected"],
    o[c",killed"], o[c",unexpected"], o[c",unclear"], o[c",hung"], o[c",gone"], o[c",wedged"] }' "$all" | sort
echo
echo "failures and why (count, command, outcome, message):"
awk -F'\t' '$1=="R" && $6!="ok" && $6!="killed" && $6!="gone" {print $4 " [" $6 "] " $7}' "$all" |
  sed 's/soak-w[0-9]*-c[0-9]*/ID/g; s|/vessel-soak\.[^/]*/w[0-9]*/|/SOAK/W/|g; s/time="[^"]*" level=[a-z]* msg=//' |
  sort | uniq -c | sort -rn | head -n 40
echo
echo "leaks (after - baseline, must be 0):"
leaks=0
while read -r name before after d flag; do
  printf '  %-18s %6d -> %6d  (%+d)%s\n' "$name" "$before" "$after" "$d" "${flag:+  $flag}"
  [ -n "$flag" ] && leaks=$((leaks + 1))
done < "$leaksf"
hung=$(awk -F'\t' '$1=="R" && $6=="hung"' "$all" | wc -l)
unclear=$(awk -F'\t' '$1=="R" && $6=="unclear"' "$all" | wc -l)
undeletable=$(awk -F'\t' '$1=="R" && $6=="undeletable"' "$all" | wc -l)
echo
echo "soak: hung $hung, unclear $unclear, undeletable $undeletable, leaks $leaks"
if [ "$hung" -gt 0 ] || [ "$unclear" -gt 0 ] || [ "$undeletable" -gt 0 ] || [ "$leaks" -gt 0 ]; then
  echo "soak: FAILED"
  exit 1
fi
echo "soak: passed"
