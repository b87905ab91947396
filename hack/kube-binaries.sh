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

# With --kubelet, what a node with a real kubelet runs (the kubelet lab,
# issue 13): kubelet, kube-controller-manager and kube-scheduler, containerd
# with its runc shim and ctr, and the CNI plugins (into cni/). About 5
# minutes more the first time on two cores.
if [[ "${1:-}" == "--kubelet" ]]; then
	containerd_version=$(cd "$root/hack/tools/containerd" && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
	cni_version=$(cd "$root/hack/tools/cni" && go list -m -f '{{.Version}}' github.com/containernetworking/plugins)
	for c in kubelet kube-controller-manager kube-scheduler; do
		build "$c" "$kube_version" kubernetes "k8s.io/kubernetes/cmd/$c"
	done
	ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version"
	for c in containerd containerd-shim-runc-v2 ctr; do
		GOFLAGS="-tags=no_btrfs,no_devmapper,no_zfs" build "$c" "$containerd_version" containerd "github.com/containerd/containerd/v2/cmd/$c"
	done
	ldflags="-s -w"
	mkdir -p "$out/cni"
	for c in ipam/host-local main/bridge main/loopback meta/portmap; do
		build "cni/${c#*/}" "$cni_version" cni "github.com/containernetworking/plugins/plugins/$c"
	done
fi
echo "$out"
