#!/usr/bin/env bash
# Builds kitesync's OCI image (FROM scratch) in one command, from a clean clone:
#
#     contrib/container/build.sh                  # builds kitesync (profile `container`) and the image
#     contrib/container/build.sh --binary PATH    # an already built kitesync instead
#     contrib/container/build.sh --tag NAME       # the image's name (default localhost/kitesync:<version>)
#
# It stages the binary (stripped), the shared libraries `ldd` names for it (and the loader),
# the CA bundle, the container config and the empty state and temporary directories in a
# directory (STAGE, default target/container-stage), then runs `podman build` on it with the
# Containerfile beside this script. PODMAN names the command (default `podman`; `docker`
# works too, or `podman --storage-driver vfs` where overlay is not available). Prints the
# image's name on stdout, and its size.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary=""
tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
    *) echo "build.sh: unknown argument $1 (see the comment at its top)" >&2; exit 2 ;;
  esac
done
read -r -a podman <<<"${PODMAN:-podman}"
stage="${STAGE:-$repo/target/container-stage}"
ca_bundle="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if [ -z "$binary" ]; then
  # The release profile, smaller (Cargo.toml's [profile.container]).
  (cd "$repo" && cargo build --profile container --locked)
  binary="$repo/target/container/kitesync"
fi
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }
[ -r "$ca_bundle" ] || { echo "build.sh: no CA bundle at $ca_bundle (apt-get install ca-certificates, or set CA_BUNDLE)" >&2; exit 1; }

# What the labels say: the binary's own version, the package's licence and repository.
version="$("$binary" --version | awk '{print $2}')"
package_key() { sed -n "s/^$1 *= *\"\(.*\)\"/\1/p" "$repo/Cargo.toml" | head -n 1; }
licence="$(package_key license)"
source="$(package_key repository)"
[ -n "$source" ] || source="$(git -C "$repo" remote get-url origin 2>/dev/null || true)"
[ -n "$source" ] || echo "build.sh: no repository in Cargo.toml nor git remote: the source label is empty" >&2
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
tag="${tag:-localhost/kitesync:$version}"

rm -rf "$stage"
mkdir -p "$stage/rootfs/usr/bin" "$stage/rootfs/etc/ssl/certs" "$stage/rootfs/etc/kitesync" \
  "$stage/rootfs/tmp" "$stage/rootfs/var/lib" "$stage/volume/kitesync"
chmod 1777 "$stage/rootfs/tmp"
chmod 0700 "$stage/volume/kitesync"
cp "$binary" "$stage/rootfs/usr/bin/kitesync"
strip --strip-all "$stage/rootfs/usr/bin/kitesync" # binutils: what links Rust on Linux
# Each library at the path ldd resolved it to (the loader at the path the binary names);
# cp -L copies the files that the distribution's symlinks point to. A static binary has none.
if ldd "$binary" >/dev/null 2>&1; then
  for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$stage/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/rootfs$lib"
  done
fi
cp -L "$ca_bundle" "$stage/rootfs/etc/ssl/certs/ca-certificates.crt"
cp "$here/kitesync.toml" "$stage/rootfs/etc/kitesync/kitesync.toml"
chmod -R u=rwX,go=rX "$stage/rootfs/usr" "$stage/rootfs/etc" "$stage/rootfs/var"

args=(--build-arg "VERSION=$version" --build-arg "LICENCE=$licence"
  --build-arg "SOURCE=$source" --build-arg "REVISION=$revision")
"${podman[@]}" build --file "$here/Containerfile" --tag "$tag" "${args[@]}" "$stage" >&2
size="$("${podman[@]}" image inspect --format '{{.Size}}' "$tag")"
echo "built $tag: $((size / 1024)) KiB ($size bytes) uncompressed" >&2
echo "$tag"
