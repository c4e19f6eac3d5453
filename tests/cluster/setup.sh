#!/usr/bin/env bash
# Prepares a machine for the cluster tests: Debian tools they need, then the control-plane
# binaries, etcd and helm (built or reused from the cache; see build.sh). Idempotent; prints the
# time each step took. Assumes Go, Node's npm and Python 3 are installed (they are on this kind of
# machine); run as root on a fresh machine so apt-get can install what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

step() {
  local name="$1" start=$SECONDS
  shift
  echo "== cluster setup: $name"
  "$@"
  echo "== cluster setup: $name took $((SECONDS - start)) s"
}

debian_tools() {
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v setpriv >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

total=$SECONDS
step "Debian tools (openssl, setpriv)" debian_tools
step "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl" "$here/build.sh" k8s
step "etcd" "$here/build.sh" etcd
step "helm" "$here/build.sh" helm
echo "== cluster setup: total $((SECONDS - total)) s"
