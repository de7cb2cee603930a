#!/usr/bin/env bash
# Make an OCI image archive (oci-layout + index.json + blobs, as a tar) from a root file system,
# with no registry and no image tool: one uncompressed layer, a config and a manifest.
#
# Usage: tests/compat/mkociarchive.sh ROOTFS-DIR IMAGE-NAME OUT.tar [CMD...]
#   IMAGE-NAME  full reference, e.g. docker.io/library/vessel-busybox:latest (stored in the
#               index both as io.containerd.image.name, which `ctr image import` uses, and as
#               org.opencontainers.image.ref.name = the tag)
#   CMD         the image's default command (default: sh)
# Files named .done or ending in .lock at the top of ROOTFS-DIR (fixture cache markers) are left out.
set -euo pipefail
rootfs=${1:?usage: mkociarchive.sh ROOTFS-DIR IMAGE-NAME OUT.tar [CMD...]}
name=${2:?usage: mkociarchive.sh ROOTFS-DIR IMAGE-NAME OUT.tar [CMD...]}
out=${3:?usage: mkociarchive.sh ROOTFS-DIR IMAGE-NAME OUT.tar [CMD...]}
shift 3
[ $# -gt 0 ] || set -- sh
tag=${name##*:}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"

# A blob is stored under its own digest; prints "sha256:<hex> <size>".
put_blob() { # file
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$work/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

tar --numeric-owner --exclude=./.done --exclude='./*.lock' -C "$rootfs" -cf "$work/layer.tar" .
blob=$(put_blob "$work/layer.tar"); layer_digest=${blob% *}; layer_size=${blob#* }

python3 - "$work" "$layer_digest" "$@" <<'PY'
import json, sys
work, layer, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
config = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": cmd,
        "WorkingDir": "/",
    },
    "rootfs": {"type": "layers", "diff_ids": [layer]},  # uncompressed: diff_id = digest
    "history": [{"created_by": "tests/compat/mkociarchive.sh"}],
}
with open(f"{work}/config.json", "w") as f:
    json.dump(config, f, separators=(",", ":"))
PY
blob=$(put_blob "$work/config.json"); config_digest=${blob% *}; config_size=${blob#* }

cat > "$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$layer_digest","size":$layer_size}]}
EOF
blob=$(put_blob "$work/manifest.json"); manifest_digest=${blob% *}; manifest_size=${blob#* }

cat > "$work/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$manifest_digest","size":$manifest_size,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"$tag"}}]}
EOF
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci-layout"

tar -C "$work" -cf "$out" oci-layout index.json blobs
