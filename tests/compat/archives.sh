#!/usr/bin/env bash
# Image archives of a fixture root file system for the containerd and podman scenarios, cached
# next to the rootfs: under the lab's emulated CPU, tarring and hashing the Debian rootfs takes
# minutes, so `make fixtures` builds them on the host and the lab (whose / is the host's) finds
# them. Prints the archive directory, which holds:
#   oci.tar     OCI image archive for `ctr image import` (mkociarchive.sh), image name
#               docker.io/library/vessel-<kind>:<tag> with the default command <cmd>
#   rootfs.tar  plain tarball of the rootfs for `podman import`
# Usage: tests/compat/archives.sh busybox|debian
set -euo pipefail
kind=${1:?usage: archives.sh busybox|debian}
repo=$(cd "$(dirname "$0")/../.." && pwd)
case $kind in
  busybox) name=docker.io/library/vessel-busybox:latest cmd=sh ;;
  debian)  name=docker.io/library/vessel-debian:bookworm cmd=bash ;;
  *) echo "archives: unknown fixture '$kind' (expected busybox or debian)" >&2; exit 2 ;;
esac
rootfs=$("$repo/tests/fixtures/mkrootfs.sh" "$kind")
# Keyed by the rootfs (its directory name carries its recipe hash) and this script's recipe.
key=$(basename "$rootfs")-$(cat "$0" "$repo/tests/compat/mkociarchive.sh" | sha256sum | cut -c1-8)
dir=${VESSEL_CACHE:-/var/cache/vessel}/images/$key
if [ ! -e "$dir/.done" ]; then
  mkdir -p "$dir"
  exec 9>"$dir.lock"
  flock 9
  if [ ! -e "$dir/.done" ]; then
    "$repo/tests/compat/mkociarchive.sh" "$rootfs" "$name" "$dir/oci.tar.tmp" "$cmd"
    tar --numeric-owner --exclude=./.done --exclude='./*.lock' -C "$rootfs" -cf "$dir/rootfs.tar.tmp" .
    mv "$dir/oci.tar.tmp" "$dir/oci.tar"
    mv "$dir/rootfs.tar.tmp" "$dir/rootfs.tar"
    touch "$dir/.done"
  fi
fi
echo "$dir"
