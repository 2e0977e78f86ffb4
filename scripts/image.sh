#!/usr/bin/env bash
# The container image the Helm chart runs, built with Debian's buildah from scratch.
#
#   bash scripts/image.sh build   # stage a rootfs, buildah build -> $IMAGE
#   bash scripts/image.sh test    # mount the built image and run its binaries (chroot)
#
# build expects the release binaries (`make image` builds them first). test mounts the
# image's root filesystem (buildah from + buildah mount) and runs, as the image's user
# 65532 in a chroot, every binary's --version and the coordinator's and worker's --help,
# so a shared library missing from the image fails here; it also checks that every
# command the chart renders exists in the image. Running a container is not possible on
# the build machines (cgroups), mounting is. Both need root (buildah with the vfs
# storage driver), and install buildah with apt when it is missing.
#
# Environment: IMAGE (default localhost/ferry:<version of the workspace>), BUILDAH_ROOT
# and BUILDAH_RUNROOT (buildah's --root and --runroot; default buildah's own),
# FERRY_IMAGE_BINARIES_DIR (default $CARGO_TARGET_DIR/release or target/release).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
IMAGE="${IMAGE:-localhost/ferry:$VERSION}"
RELEASE_DIR="${FERRY_IMAGE_BINARIES_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
BINARIES=(ferry-coordinator ferry-worker ferryctl)
USER_ID=65532

fail() {
    echo "scripts/image.sh: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "buildah with the vfs driver needs root here: run it as root (sudo make image)"

buildah_cmd() {
    local options=(--storage-driver vfs)
    [ -n "${BUILDAH_ROOT:-}" ] && options+=(--root "$BUILDAH_ROOT")
    [ -n "${BUILDAH_RUNROOT:-}" ] && options+=(--runroot "$BUILDAH_RUNROOT")
    buildah "${options[@]}" "$@"
}

ensure_buildah() {
    command -v buildah >/dev/null 2>&1 && return 0
    echo "installing buildah (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null ||
        fail "could not install buildah with apt-get: install it (apt-get install buildah) and run this again"
    command -v buildah >/dev/null 2>&1 || fail "buildah is still missing after apt-get install buildah"
}

# Copies a file to the same path under the rootfs, following symbolic links.
stage_file() {
    local source="$1" rootfs="$2"
    mkdir -p "$rootfs$(dirname "$source")"
    cp -L "$source" "$rootfs$source"
}

build() {
    ensure_buildah
    for binary in "${BINARIES[@]}"; do
        [ -x "$RELEASE_DIR/$binary" ] ||
            fail "$RELEASE_DIR/$binary is missing: build the release binaries first (make image does: cargo build --release --bins)"
    done
    # The build context, staged in a temporary folder and removed afterwards.
    CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/ferry-image.XXXXXX")"
    trap 'rm -rf "$CONTEXT"' EXIT
    local rootfs="$CONTEXT/rootfs"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    local libraries=()
    for binary in "${BINARIES[@]}"; do
        install -m 0755 "$RELEASE_DIR/$binary" "$rootfs/usr/local/bin/$binary"
        # `ldd` lines: "libc.so.6 => /lib/.../libc.so.6 (0x...)" and the loader
        # "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
        local missing
        missing="$(ldd "$RELEASE_DIR/$binary" | grep 'not found' || true)"
        [ -z "$missing" ] || fail "$binary needs libraries this machine lacks: $missing"
        while read -r library; do
            libraries+=("$library")
        done < <(ldd "$RELEASE_DIR/$binary" | awk '/=> \// { print $3 } /^\s*\/[^ ]+ \(/ { print $1 }')
    done
    for library in $(printf '%s\n' "${libraries[@]}" | sort -u); do
        stage_file "$library" "$rootfs"
    done
    [ -f /etc/ssl/certs/ca-certificates.crt ] ||
        fail "/etc/ssl/certs/ca-certificates.crt is missing: apt-get install ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nferry:x:%s:%s:ferry:/tmp:/sbin/nologin\n' \
        "$USER_ID" "$USER_ID" >"$rootfs/etc/passwd"
    printf 'root:x:0:\nferry:x:%s:\n' "$USER_ID" >"$rootfs/etc/group"
    # glibc's resolver: Kubernetes mounts /etc/hosts and /etc/resolv.conf.
    printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
    cp Containerfile "$CONTEXT/Containerfile"
    buildah_cmd build --quiet --isolation chroot --layers=false --pull=never \
        --file "$CONTEXT/Containerfile" --tag "$IMAGE" "$CONTEXT" >/dev/null
    echo "built $IMAGE ($(du -sh "$rootfs" | cut -f1) of files: ${BINARIES[*]}, $(printf '%s\n' "${libraries[@]}" | sort -u | wc -l) libraries, CA certificates, user ferry $USER_ID)"
}

test_image() {
    ensure_buildah
    buildah_cmd inspect --type image "$IMAGE" >/dev/null 2>&1 ||
        fail "no image $IMAGE: build it first (make image)"
    local mountpoint
    CONTAINER="$(buildah_cmd from --pull-never "$IMAGE")"
    trap 'buildah_cmd umount "$CONTAINER" >/dev/null 2>&1 || true; buildah_cmd rm "$CONTAINER" >/dev/null 2>&1 || true' EXIT
    mountpoint="$(buildah_cmd mount "$CONTAINER")"
    run() { # as the image's user, in the image's root filesystem only
        chroot --userspec="$USER_ID:$USER_ID" "$mountpoint" "$@" ||
            fail "in $IMAGE, '$*' failed (a shared library missing from the image?)"
    }
    for binary in "${BINARIES[@]}"; do
        echo "$IMAGE: $(run "/usr/local/bin/$binary" --version)"
    done
    run /usr/local/bin/ferry-coordinator --help | grep -q -- '--config' ||
        fail "ferry-coordinator --help in $IMAGE does not mention --config"
    run /usr/local/bin/ferry-worker --help | grep -q -- '--config' ||
        fail "ferry-worker --help in $IMAGE does not mention --config"
    grep -q "^ferry:x:$USER_ID:$USER_ID:" "$mountpoint/etc/passwd" ||
        fail "$IMAGE has no user ferry ($USER_ID) in /etc/passwd"
    [ -s "$mountpoint/etc/ssl/certs/ca-certificates.crt" ] || fail "$IMAGE has no CA certificates"
    local user
    user="$(buildah_cmd inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")"
    [ "$user" = "$USER_ID:$USER_ID" ] || fail "$IMAGE runs as '$user', not $USER_ID:$USER_ID"
    # Every command the chart renders is in the image.
    local helm_bin="$ROOT/.tools/bin/helm"
    [ -x "$helm_bin" ] || bash "$ROOT/scripts/tools.sh"
    local commands
    commands="$("$helm_bin" template ferry "$ROOT/helm/ferry" | awk '/^ *command: \["\/usr\/local\/bin\// { gsub(/[]["]/, "", $2); print $2 }' | sort -u)"
    [ -n "$commands" ] || fail "found no /usr/local/bin command in the chart's rendering"
    for command in $commands; do
        [ -x "$mountpoint$command" ] || fail "the chart runs $command, which $IMAGE lacks"
    done
    echo "$IMAGE: every binary runs in the image; the chart's commands ($(echo $commands | tr '\n' ' ')) are there"
}

case "${1:-}" in
    build) build ;;
    test) test_image ;;
    *) fail "usage: scripts/image.sh build|test" ;;
esac
