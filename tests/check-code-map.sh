#!/usr/bin/env bash
# Checks that docs/design.md's "Code map" names every source file of crates/*/src and
# guest-agent/src (and nothing that does not exist). Each "### `<dir>`" heading gives the folder
# the backticked *.rs paths of the table rows below it are relative to.
set -euo pipefail
cd "$(dirname "$0")/.."
mapped=$(awk '
  /^## Code map/ { on = 1; next }
  on && /^## / { exit }
  on && /^### `/ { match($0, /`[^`]*`/); root = substr($0, RSTART + 1, RLENGTH - 2); next }
  on && /^\|/ {
    line = $0
    while (match(line, /`[^`]*\.rs`/)) {
      print root substr(line, RSTART + 1, RLENGTH - 2)
      line = substr(line, RSTART + RLENGTH)
    }
  }' docs/design.md | sort -u)
actual=$(find crates/*/src guest-agent/src -name '*.rs' | sort)
missing=$(comm -13 <(echo "$mapped") <(echo "$actual"))
stale=$(comm -23 <(echo "$mapped") <(echo "$actual"))
[ -z "$missing" ] || { echo "code map: not in docs/design.md:"; echo "$missing"; }
[ -z "$stale" ] || { echo "code map: no such file:"; echo "$stale"; }
[ -z "$missing$stale" ] && echo "code map: all $(echo "$actual" | wc -l) files mapped"
