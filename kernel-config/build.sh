#!/usr/bin/env bash
# Build a Vessel kernel from Debian's linux-source-6.1, cached by source version and config hash.
#
# Usage: kernel-config/build.sh guest|lab
# Prints the path of the cached artefact directory on stdout (vmlinux for guest, bzImage for lab,
# plus the merged .config). A second call with the same inputs rebuilds nothing.
#
# Environment:
#   VESSEL_CACHE   cache root (default /var/cache/vessel)
#   KERNEL_TARBALL source tarball (default /usr/src/linux-source-6.1.tar.xz)
#   KERNEL_JOBS    make -j value (default: number of CPUs + 1)
set -euo pipefail

kind=${1:?usage: build.sh guest|lab}
here=$(cd "$(dirname "$0")" && pwd)
cache=${VESSEL_CACHE:-/var/cache/vessel}
tarball=${KERNEL_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
jobs=${KERNEL_JOBS:-$(($(nproc) + 1))}
# Bump when the recipe below changes in a way that changes the output.
recipe=1

case "$kind" in
  guest) fragments=("$here/guest.fragment"); target=vmlinux; artefact=vmlinux ;;
  lab)   fragments=("$here/guest.fragment" "$here/lab.fragment"); target=bzImage; artefact=arch/x86/boot/bzImage ;;
  *) echo "build.sh: unknown kernel kind '$kind' (expected guest or lab)" >&2; exit 2 ;;
esac

[ -r "$tarball" ] || { echo "build.sh: $tarball not found; run 'make deps' (package linux-source-6.1)" >&2; exit 1; }
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %Y "$tarball")
hash=$( { echo "recipe=$recipe src=$srcver kind=$kind"; cat "${fragments[@]}"; } | sha256sum | cut -c1-16)
key="$kind-$srcver-$hash"
dest="$cache/kernel/$key"

if [ -f "$dest/.done" ]; then
  echo "$dest"
  exit 0
fi

# One build per key at a time: a second caller waits, then finds the finished artefact.
mkdir -p "$cache/src" "$cache/kernel"
exec 8>"$dest.lock"
flock 8
if [ -f "$dest/.done" ]; then
  echo "$dest"
  exit 0
fi

src="$cache/src/linux-source-6.1-$srcver"
exec 9>"$cache/src/.lock"
flock 9
if [ ! -f "$src/.extracted" ]; then
  echo "build.sh: extracting $tarball" >&2
  rm -rf "$src" "$src.tmp"
  mkdir -p "$src.tmp"
  tar -xJf "$tarball" -C "$src.tmp" --strip-components=1
  touch "$src.tmp/.extracted"
  mv "$src.tmp" "$src"
fi
flock -u 9

out="$dest.build"
rm -rf "$out"
mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
echo "build.sh: building $kind kernel $key in $out (-j$jobs)" >&2
make -s -C "$src" O="$out" ARCH=x86_64 tinyconfig >&2
KCONFIG_CONFIG="$out/.config" "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "${fragments[@]}" >/dev/null
make -s -C "$src" O="$out" ARCH=x86_64 olddefconfig >&2

# Every option the fragments ask for must survive Kconfig's dependency resolution. A later
# fragment overrides an earlier one (lab.fragment turns ACPI and PCI back on).
declare -A want from
for f in "${fragments[@]}"; do
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) sym=${line%%=*}; want[$sym]=$line; from[$sym]=$(basename "$f") ;;
      "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; want[$sym]=$line; from[$sym]=$(basename "$f") ;;
    esac
  done < "$f"
done
missing=0
for sym in "${!want[@]}"; do
  # An option asked off may also be absent (hidden because what it depends on is off).
  case "${want[$sym]}" in "# "*) grep -q "^$sym=" "$out/.config" || continue ;; esac
  grep -qxF "${want[$sym]}" "$out/.config" || {
    echo "build.sh: ${from[$sym]} asks for '${want[$sym]}' but Kconfig gave '$(grep -E "^(# )?$sym[= ]" "$out/.config" || echo unset)'" >&2
    missing=1
  }
done
[ "$missing" = 0 ] || exit 1

make -s -C "$src" O="$out" ARCH=x86_64 -j"$jobs" "$target" >&2
mkdir -p "$dest.tmp"
cp "$out/$artefact" "$dest.tmp/$(basename "$artefact")"
cp "$out/.config" "$dest.tmp/config"
touch "$dest.tmp/.done"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest"
