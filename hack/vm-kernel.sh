#!/usr/bin/env bash
# vm-kernel.sh fetches what e2e/vm boots: Debian's kernel (its package is
# downloaded and unpacked, never installed), its vrf and veth modules, and
# qemu and a static busybox (installed). The machine's own kernel has no
# VRF support (CONFIG_NET_VRF) and no modules, so VRF tests run in a VM.
# Idempotent: what is there is kept. Needs root to install packages.
set -euo pipefail
out=${1:-_output/vm}
mkdir -p "$out"
out=$(cd "$out" && pwd)

missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "vm-kernel: missing ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "vm-kernel: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ -f $out/vmlinuz && -f $out/vrf.ko && -f $out/veth.ko ]]; then
  exit 0
fi
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $pkg ]] || { echo "vm-kernel: no kernel package behind linux-image-amd64" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null)
dpkg-deb -x "$tmp"/*.deb "$tmp/x"
cp "$tmp"/x/boot/vmlinuz-* "$out/vmlinuz"
for m in vrf veth; do
  f=$(find "$tmp/x/lib/modules" -name "$m.ko*" | head -1)
  case $f in
    *.xz) xz -dc "$f" >"$out/$m.ko" ;;
    *.zst) zstd -dcq "$f" >"$out/$m.ko" ;;
    *) cp "$f" "$out/$m.ko" ;;
  esac
done
echo "vm-kernel: $pkg in $out" >&2
