#!/usr/bin/env bash
# Builds the pinned upstream tools the tests need (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubelet, kube-proxy, helm, kubeconform) from their Go modules with this
# machine's Go, once,
# into the user's cache directory keyed by the pinned versions, and links them at .tools/bin.
# Nothing here is downloaded as a binary; nothing built is committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
K8S_VERSION=v1.35.4

command -v go >/dev/null || { echo "make tools: Go is not installed; it builds the test control plane" >&2; exit 1; }
# One cache per Kubernetes release; each binary carries a key of what it was built from (its
# module's go.mod/go.sum, the package, the flags and the Go version) and is rebuilt when that
# changes, so a change to one pin rebuilds one tool, not all of them.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/memfrag-agent/tools/$K8S_VERSION
mkdir -p "$cache/bin"
goversion=$(go env GOVERSION)

ldk="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldk="$ldk -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=35 -X $p.gitTreeState=clean"
done

build() {  # build <module dir> <binary name> <package> [ldflags]
  local dir=$1 name=$2 pkg=$3 flags=${4:--s -w}
  local key
  key=$( { cat "$here/$dir/go.mod" "$here/$dir/go.sum"; echo "$pkg $flags $goversion"; } | sha256sum | cut -c1-16)
  if [ -x "$cache/bin/$name" ] && [ "$(cat "$cache/bin/.$name.key" 2>/dev/null)" = "$key" ]; then
    echo "  $name: cached"; return
  fi
  echo "  $name: building $pkg ..."
  local start=$SECONDS
  (cd "$here/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$cache/bin/$name.tmp" "$pkg")
  mv "$cache/bin/$name.tmp" "$cache/bin/$name"
  echo "$key" > "$cache/bin/.$name.key"
  echo "  $name: built in $((SECONDS - start)) s"
}

echo "make tools: building into $cache"
build etcd etcd .
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldk"
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldk"
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldk"
build kube kubectl k8s.io/kubernetes/cmd/kubectl "$ldk"
# The real node's (tests/cluster/node.py): the same release as the plane, in a module of its own
# (their extra dependencies would change the plane tools' keys and rebuild them all).
build node kubelet k8s.io/kubernetes/cmd/kubelet "$ldk"
build node kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$ldk"
# k8sVersionMinor: what a bare `helm template` assumes without a cluster (helm's own Makefile sets it).
build helm helm helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=v3.19.0 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=35"
build kubeconform kubeconform github.com/yannh/kubeconform/cmd/kubeconform

mkdir -p "$repo/.tools"
ln -sfn "$cache/bin" "$repo/.tools/bin"
echo "make tools: ready at .tools/bin -> $cache/bin"
