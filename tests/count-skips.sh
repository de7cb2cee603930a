#!/usr/bin/env bash
# Passes `cargo test` output through unchanged and closes it with the number of tests that did
# not run here: each test that returns early without root or KVM prints
# `<test name>: skipped: <why>` (run cargo test with `-- --show-output`, or the line stays in
# libtest's capture). Exit status 0; the caller's pipefail keeps cargo's.
set -uo pipefail
skipped=0
while IFS= read -r line || [ -n "$line" ]; do
  printf '%s\n' "$line"
  case $line in *': skipped: '*) skipped=$((skipped + 1)) ;; esac
done
echo "$skipped skipped (needs KVM/root; run in the lab)"
