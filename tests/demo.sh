#!/usr/bin/env bash
# `make demo`: run a real Debian bundle in a Vessel microVM with `vessel run`, printing the guest's
# /etc/os-release, the guest kernel's release and the exit code. Runs in the nested lab when this
# host's KVM cannot run guests (vessel check says why).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
vessel="$repo/build/bin/vessel"
bundle="$repo/build/bundles/demo-debian"
"$repo/tests/fixtures/mkbundle.sh" debian "$bundle" \
  'echo "--- /etc/os-release (read inside the microVM)"; cat /etc/os-release; echo "--- uname -r: $(uname -r)"' >/dev/null || exit 1
inner="'$vessel' --root /run/vessel-demo run --bundle '$bundle' vessel-demo-\$\$; rc=\$?; echo \"--- exit code: \$rc\"; exit \$rc"
if "$vessel" check >/dev/null 2>&1; then
  bash -c "$inner"
else
  echo "demo: this host's KVM cannot run guests ($("$vessel" check 2>&1 | sed -n 's/^kvm backend: *//p')); running the demo inside the nested lab" >&2
  "$repo/tests/lab/run.sh" bash -c "$inner"
fi
