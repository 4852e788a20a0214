#!/usr/bin/env bash
# The Kubernetes manifests: renders k8s/base, every overlay, and every
# component on top of each overlay with `kubectl kustomize`, then validates
# every rendered object offline (tests/k8s/validate.mjs: the Kubernetes and
# Prometheus Operator schemas with unknown fields rejected, and what
# Switchyard's deployment relies on), and the Grafana dashboard.
#
# Usage: tests/k8s/validate_test.sh PROJECT_SOURCE_DIR
# Tools come from tests/k8s/install_tools.sh (npm registry, cached outside
# the repository; the first run needs the registry, later runs are offline).
# SWITCHYARD_SKIP_K8S=1 skips (exit 77); set SWITCHYARD_BIN to a built
# switchyard to also have it parse every rendered --config file.
set -euo pipefail

ROOT=$(cd "${1:?usage: validate_test.sh PROJECT_SOURCE_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "${SWITCHYARD_SKIP_K8S:-0}" = 1 ]; then
  echo "k8s manifests: SWITCHYARD_SKIP_K8S=1: skipped"
  exit 77
fi

env_lines=$(bash "$HERE/install_tools.sh" --print-env) || {
  echo "k8s manifests: the tools could not be installed (see above); SWITCHYARD_SKIP_K8S=1 skips this test" >&2
  exit 1
}
eval "$env_lines"
echo "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-k8s.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

failed=0
renders=()
render() {  # render NAME DIR
  if "$KUBECTL" kustomize "$2" >"$WORK/$1.yaml" 2>"$WORK/$1.err"; then
    renders+=("$1=$WORK/$1.yaml")
  else
    echo "FAIL $1: kubectl kustomize $2" >&2
    sed 's/^/  /' "$WORK/$1.err" >&2
    failed=1
  fi
}

render base "$ROOT/k8s/base"
overlays=()
for dir in "$ROOT"/k8s/overlays/*/; do
  name=$(basename "$dir")
  overlays+=("$name")
  render "overlay-$name" "$dir"
done
[ ${#overlays[@]} -gt 0 ] || { echo "FAIL: no overlays under k8s/overlays" >&2; failed=1; }

# Every component on top of every overlay, in a kustomization outside the
# repository that refers to both by relative path (and sets the overlay's
# namespace, as an overlay that lists the components would).
components=()
for dir in "$ROOT"/k8s/components/*/; do
  [ -d "$dir" ] && components+=("$(basename "$dir")")
done
if [ ${#components[@]} -gt 0 ]; then
  for name in "${overlays[@]}"; do
    dir="$WORK/with-components-$name"
    mkdir -p "$dir"
    rel=$(realpath --relative-to="$dir" "$ROOT/k8s")
    {
      echo "apiVersion: kustomize.config.k8s.io/v1beta1"
      echo "kind: Kustomization"
      grep -E '^namespace:' "$ROOT/k8s/overlays/$name/kustomization.yaml" || true
      echo "resources: [$rel/overlays/$name]"
      echo "components:"
      for c in "${components[@]}"; do echo "  - $rel/components/$c"; done
    } >"$dir/kustomization.yaml"
    render "overlay-$name+components" "$dir"
  done
fi

dashboards=("$ROOT"/k8s/grafana/*.json)
dash_args=()
for d in "${dashboards[@]}"; do
  [ -f "$d" ] && dash_args+=(--dashboard "$d")
done
[ ${#dash_args[@]} -gt 0 ] || { echo "FAIL: no dashboard under k8s/grafana" >&2; failed=1; }

node "$HERE/validate.mjs" --modules "$K8S_NODE_MODULES" --root "$ROOT" --self-test \
  "${dash_args[@]}" "${renders[@]}" || failed=1

# With a built binary: serve itself parses every rendered --config file (the
# command-line --log-level=check fails after the config file is read, so
# "--log-level must be" means the file was accepted).
if [ -n "${SWITCHYARD_BIN:-}" ]; then
  for r in "${renders[@]}"; do
    name=${r%%=*}
    node -e '
      const YAML = require(process.argv[1] + "/yaml");
      const fs = require("fs");
      for (const d of YAML.parseAllDocuments(fs.readFileSync(process.argv[2], "utf8"))) {
        const o = d.toJS();
        if (o && o.kind === "ConfigMap") for (const [k, v] of Object.entries(o.data || {}))
          fs.writeFileSync(process.argv[3] + "/" + k, v);
      }' "$K8S_NODE_MODULES" "${r#*=}" "$(mkdir -p "$WORK/conf-$name" && echo "$WORK/conf-$name")"
    for conf in "$WORK/conf-$name"/*.conf; do
      sum=$(sha256sum "$conf" | cut -c1-16)
      [ -e "$WORK/checked-$sum" ] && continue  # the same file in another rendering
      touch "$WORK/checked-$sum"
      out=$("$SWITCHYARD_BIN" serve --config="$conf" --log-level=check 2>&1 || true)
      if ! grep -q -- "--log-level must be" <<<"$out"; then
        echo "FAIL $name: switchyard serve rejects $(basename "$conf"): $out" >&2
        failed=1
      fi
    done
  done
  [ "$failed" = 1 ] || echo "ok   switchyard serve parses every rendered config file"
fi

if [ "$failed" = 0 ]; then
  echo "k8s manifests: ${#renders[@]} renderings valid"
else
  echo "k8s manifests: FAILED" >&2
fi
exit "$failed"
