#!/usr/bin/env bash
# Builds the pinned upstream tools the tests need (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, helm, kubeconform) from their Go modules with this machine's Go, once,
# into the user's cache directory keyed by the pinned versions, and links them at .tools/bin.
# Nothing here is downloaded as a binary; nothing built is committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
K8S_VERSION=v1.35.4

command -v go >/dev/null || { echo "make tools: Go is not installed; it builds the test control plane" >&2; exit 1; }
# The key changes whenever a pinned version (go.mod/go.sum) or this script changes.
key=$(cat "$here"/*/go.mod "$here"/*/go.sum "$0" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/memfrag-agent/tools/$K8S_VERSION-$key
mkdir -p "$cache/bin"

ldk="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldk="$ldk -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=35 -X $p.gitTreeState=clean"
done

build() {  # build <module dir> <binary name> <package> [ldflags]
  local dir=$1 name=$2 pkg=$3 flags=${4:--s -w}
  if [ -x "$cache/bin/$name" ]; then echo "  $name: cached"; return; fi
  echo "  $name: building $pkg ..."
  local start=$SECONDS
  (cd "$here/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$cache/bin/$name.tmp" "$pkg")
  mv "$cache/bin/$name.tmp" "$cache/bin/$name"
  echo "  $name: built in $((SECONDS - start)) s"
}

echo "make tools: building into $cache"
build etcd etcd .
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldk"
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldk"
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldk"
build kube kubectl k8s.io/kubernetes/cmd/kubectl "$ldk"
build helm helm helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=v3.19.0"
build kubeconform kubeconform github.com/yannh/kubeconform/cmd/kubeconform

mkdir -p "$repo/.tools"
ln -sfn "$cache/bin" "$repo/.tools/bin"
echo "make tools: ready at .tools/bin -> $cache/bin"
