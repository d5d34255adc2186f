#!/usr/bin/env bash
# Build one component of the local pipeline from Go modules into OUTDIR.
#
#   build.sh etcd|kube-apiserver|prometheus|otelcol OUTDIR
#
# The wrapper modules next to this script pin every version (go.mod + go.sum are committed, so
# a build never edits them: -mod=readonly). OUTDIR is a cache directory outside the repository,
# keyed by version by the caller (tracecheck/localstack.py); nothing built lands in git.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
component=${1:?component}
out=${2:?output directory}
mkdir -p "$out"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly

# The required version of module $1 in ./go.mod, whether in a one-line `require m v` or inside a
# `require ( ... )` block (go mod tidy writes the block form); fails if absent.
modver() {
  local v
  v=$(awk -v m="$1" '($1=="require" && $2==m) {print $3; exit} ($1==m) {print $2; exit}' go.mod)
  [ -n "$v" ] || { echo "build.sh: $1 not required in $(pwd)/go.mod" >&2; exit 2; }
  echo "$v"
}

case "$component" in
etcd)
  cd "$here/etcd"
  go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  ;;
kube-apiserver)
  cd "$here/kube-apiserver"
  ver=$(modver k8s.io/kubernetes)
  minor=$(echo "$ver" | cut -d. -f2)
  ld="-s -w"
  # Without these, /version reports v0.0.0-master+$Format:%H$ (component-base version/base.go);
  # kubectl reads client-go's copy of the same variables.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  go build -trimpath -ldflags "$ld" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  # kubectl comes from the same module graph; it renders kustomizations and applies manifests.
  go build -trimpath -ldflags "$ld" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
  ;;
prometheus)
  cd "$here/prometheus"
  mver=$(modver github.com/prometheus/prometheus)
  # Module v0.3MM.P is Prometheus 3.MM.P (both tags name one commit).
  ver=$(echo "$mver" | sed -E 's/^v0\.3([0-9]{2})\.([0-9]+)$/3.\1.\2/; s/^3\.0([0-9])/3.\1/')
  pv=github.com/prometheus/common/version
  ld="-s -w -X $pv.Version=$ver -X $pv.Revision=$mver -X $pv.Branch=HEAD"
  ld="$ld -X $pv.BuildUser=tracecheck -X $pv.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
  go build -trimpath -ldflags "$ld" -o "$out/prometheus" github.com/prometheus/prometheus/cmd/prometheus
  go build -trimpath -ldflags "$ld" -o "$out/promtool" github.com/prometheus/prometheus/cmd/promtool
  ;;
otelcol)
  manifest="$here/../../collector/ocb-manifest.yaml"
  ocbver=$(awk '/^  version:/ {print $2; exit}' "$manifest")
  tools="$out/tools"
  GOBIN="$tools" go install "go.opentelemetry.io/collector/cmd/builder@v$ocbver"
  work="$out/src"
  rm -rf "$work" && mkdir -p "$work"
  # ocb resolves the manifest's relative output_path against the working directory.
  (cd "$work" && GOFLAGS= "$tools/builder" --config="$manifest")
  name=$(awk '/^  name:/ {print $2; exit}' "$manifest")
  mv "$work/_build/$name" "$out/otelcol"
  rm -rf "$work" "$tools"
  ;;
*)
  echo "build.sh: unknown component '$component' (etcd, kube-apiserver, prometheus, otelcol)" >&2
  exit 2
  ;;
esac
