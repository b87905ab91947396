#!/usr/bin/env bash
# Builds kube-apiserver, kube-proxy and etcd from the pinned tools modules
# into a git-ignored cache (bin/k8s by default) and prints that folder.
# Idempotent: binaries whose pinned version has not changed are reused.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${IRONLB_K8S_BIN:-$root/bin/k8s}
mkdir -p "$out"

kube_version=$(cd "$root/hack/tools/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd_version=$(cd "$root/hack/tools/etcd" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
major=${kube_version#v}; major=${major%%.*}
minor=${kube_version#v*.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"

build() { # name version module-dir package
	local name=$1 version=$2 dir=$3 pkg=$4
	if [[ -x "$out/$name" && "$(cat "$out/$name.version" 2>/dev/null)" == "$version" ]]; then
		return
	fi
	echo "building $name $version (first time only, a few minutes)" >&2
	(cd "$root/hack/tools/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
	mv "$out/$name.tmp" "$out/$name"
	echo "$version" >"$out/$name.version"
}

build kube-apiserver "$kube_version" kubernetes k8s.io/kubernetes/cmd/kube-apiserver
build kube-proxy "$kube_version" kubernetes k8s.io/kubernetes/cmd/kube-proxy
build etcd "$etcd_version" etcd go.etcd.io/etcd/server/v3
echo "$out"
