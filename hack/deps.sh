#!/usr/bin/env bash
# deps.sh installs the Debian packages the lab, the BPF build and the e2e
# tests need. It is idempotent: packages already present are not touched, and
# nothing is installed when all are there. Needs root when something is missing.
set -euo pipefail

# command -> package
declare -A want=(
  [clang]=clang
  [llvm-strip]=llvm
  [bpftool]=bpftool
  [ip]=iproute2
  [nft]=nftables
  [iptables]=iptables
  [bird]=bird2
  [arping]=arping
  [iperf3]=iperf3
  [curl]=curl
  [tcpdump]=tcpdump
  [socat]=socat
  [conntrack]=conntrack
  [runc]=runc
  [nsenter]=util-linux
  [unshare]=util-linux
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
[[ -f /usr/include/bpf/bpf_helpers.h ]] || missing+=(libbpf-dev)
# asm/types.h for BPF C on x86_64 comes from the multiarch kernel headers.
[[ -e /usr/include/asm/types.h || -e /usr/include/x86_64-linux-gnu/asm/types.h ]] || missing+=(linux-libc-dev)

if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
