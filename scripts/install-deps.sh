#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages hearth needs to build, run and test. Run as root.
#   build:   pkg-config, libclang-dev + clang (bindgen for the ipset/devicemapper -sys crates),
#            libipset-dev (libipset for in-process ipset), libdevmapper-dev
#   run:     iptables, ipset, iproute2, nftables (nft: hearth's bridge-family table filtering
#            ARP and non-IPv4 frames from guest ports)
#   tests:   dnsutils (dig), dnsperf + dnsmasq-base (DNS benchmark and upstream server in tests),
#            iputils-ping, e2fsprogs (mkfs.ext4 for rootfs images), xfsprogs (a reflink-capable
#            filesystem for the copy backend's reflink test), curl (scripts/fuzz-api.sh),
#            docker-registry + skopeo + umoci + apache2-utils (htpasswd) + busybox-static (OCI
#            registry/archive tests and bench_pull: a local registry and test images),
#            kubernetes-client (kubectl: hearth-operator's manifest checks; skipped when some
#            other package already provides kubectl, as Debian's conflicts with those)
set -euo pipefail
packages=(
  pkg-config clang libclang-dev libipset-dev libdevmapper-dev
  iptables ipset iproute2 nftables
  dnsutils dnsperf dnsmasq-base iputils-ping e2fsprogs xfsprogs curl binutils
  docker-registry skopeo umoci apache2-utils busybox-static
)
command -v kubectl >/dev/null || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
