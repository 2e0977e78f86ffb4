#!/usr/bin/env bash
# Fetches etcd 3.5 (Debian 13 "trixie"'s etcd-server package) into the git-ignored
# .tools/etcd-3.5/etcd and prints its path, for the second etcd line of `make bench`.
#
# Why: the services (scripts/services.sh) run Debian 12's etcd 3.4, whose every Txn
# copies the backend's not yet committed writes (ConcurrentReadTx); etcd 3.5, what
# Kubernetes distributions ship, does not. The bench measures ferry on both.
#
# Where it comes from, checked the way apt checks it: trixie's InRelease verified with
# gpgv against the machine's debian-archive-keyring, the Packages index checked against
# the sha256 InRelease gives, the .deb against the sha256 the index gives. Only the etcd
# binary is extracted (dpkg-deb -x); nothing is installed. A second run with the binary
# in place prints its path at once.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${FERRY_TOOLS_DIR:-$ROOT/.tools}/etcd-3.5"
MIRROR="${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

fail() {
    echo "scripts/etcd35.sh: $*" >&2
    exit 1
}

# Whether $1 is an etcd 3.5 that runs. (Its output is read whole first: `grep -q` on a
# pipe would stop reading early, and under pipefail etcd's SIGPIPE would fail the check.)
is_etcd35() {
    local version
    version=$("$1" --version 2>/dev/null) || return 1
    grep -q '^etcd Version: 3\.5\.' <<<"$version"
}

if [ -x "$DEST/etcd" ] && is_etcd35 "$DEST/etcd"; then
    echo "$DEST/etcd"
    exit 0
fi
for tool in curl gpgv xz dpkg-deb sha256sum; do
    command -v "$tool" >/dev/null || fail "$tool is missing (Debian: gpgv, xz-utils, dpkg, coreutils, curl)"
done
[ -f "$KEYRING" ] || fail "$KEYRING is missing (Debian package debian-archive-keyring)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fetch() {
    curl -fsS --retry 3 -m 600 -o "$2" "$MIRROR/$1" || fail "cannot download $MIRROR/$1"
}

fetch dists/trixie/InRelease "$WORK/InRelease"
gpgv --keyring "$KEYRING" "$WORK/InRelease" 2>/dev/null ||
    fail "the signature of trixie's InRelease does not verify against $KEYRING"
index_sha=$(awk '/^SHA256:/ {in_sha = 1; next} /^[A-Za-z]/ {in_sha = 0}
    in_sha && $3 == "main/binary-amd64/Packages.xz" {print $1}' "$WORK/InRelease")
[ -n "$index_sha" ] || fail "trixie's InRelease lists no main/binary-amd64/Packages.xz"
fetch dists/trixie/main/binary-amd64/Packages.xz "$WORK/Packages.xz"
echo "$index_sha  $WORK/Packages.xz" | sha256sum -c --quiet - ||
    fail "trixie's Packages.xz does not match the sha256 its InRelease gives"

read -r version filename deb_sha < <(xz -dc "$WORK/Packages.xz" | awk '
    /^Package: / {pkg = $2}
    pkg == "etcd-server" && /^Version: / {version = $2}
    pkg == "etcd-server" && /^Filename: / {filename = $2}
    pkg == "etcd-server" && /^SHA256: / {sha = $2}
    /^$/ {if (pkg == "etcd-server" && filename != "") {print version, filename, sha; exit} pkg = ""}')
[ -n "${filename:-}" ] || fail "trixie's Packages index has no etcd-server"
case "$version" in 3.5.*) ;; *) fail "trixie's etcd-server is $version, not 3.5" ;; esac
fetch "$filename" "$WORK/etcd-server.deb"
echo "$deb_sha  $WORK/etcd-server.deb" | sha256sum -c --quiet - ||
    fail "$filename does not match the sha256 trixie's index gives"
dpkg-deb -x "$WORK/etcd-server.deb" "$WORK/x"
mkdir -p "$DEST"
install -m 755 "$WORK/x/usr/bin/etcd" "$DEST/etcd"
is_etcd35 "$DEST/etcd" || fail "the extracted etcd does not run"
echo "installed etcd-server $version (Debian trixie) as $DEST/etcd" >&2
echo "$DEST/etcd"
