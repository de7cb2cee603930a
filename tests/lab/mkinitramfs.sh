#!/usr/bin/env bash
# Pack an initramfs (newc cpio, uncompressed, reproducible) for a Vessel guest.
#
# Usage: tests/lab/mkinitramfs.sh OUT.cpio /path/in/guest=host-file [...]
# The kernel's built-in initramfs already provides /dev/console; this adds the mount points the
# agent uses and the given files (mode kept). OUT is replaced atomically and left untouched when
# the content is the same.
set -euo pipefail
out=${1:?usage: mkinitramfs.sh OUT.cpio /guest/path=host-file ...}
shift
stage=$(mktemp -d)
trap 'rm -rf "$stage" "$out.tmp"' EXIT
mkdir -p "$stage"/{dev,proc,sys,run,tmp,mnt,etc}
for spec in "$@"; do
  dst=${spec%%=*}; src=${spec#*=}
  [ -f "$src" ] || { echo "mkinitramfs: $src not found (for $dst)" >&2; exit 1; }
  install -D -m "$(stat -c %a "$src")" "$src" "$stage$dst"
done
find "$stage" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet --reproducible -o -H newc -R 0:0) > "$out.tmp"
if cmp -s "$out.tmp" "$out"; then rm -f "$out.tmp"; else mv "$out.tmp" "$out"; fi
