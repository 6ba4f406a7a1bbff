#!/usr/bin/env bash
# Installs the Debian packages the tests need (containerd, runc, the CNI plugins, the image
# builder and what the node's network set-up calls; promtool, from Debian's prometheus package,
# for the alert and metrics checks), once, with apt-get. Run as root by
# `make tools`; as another user it only says what is missing, and the tests that need the
# packages skip with that reason.
set -euo pipefail
PACKAGES=(
  containerd runc containernetworking-plugins  # the node's runtime and pod network
  buildah debootstrap                           # the image, built from the Dockerfile without Docker
  iptables iproute2 conntrack                   # the node's bridge, the Service DNAT, teardown
  libc6-dev gcc                                 # the pause binary, compiled static
  prometheus                                    # promtool: check rules, test rules, check metrics
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "make tools: host packages present"; exit 0; }
if [ "$(id -u)" != 0 ]; then
  echo "make tools: not root, so not installing ${missing[*]}; the real-node tests will skip" >&2
  exit 0
fi
echo "make tools: installing ${missing[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts containerd and prometheus as services where systemd runs; the tests run their
# own containerd (own root, state and socket) and use only promtool from prometheus, so the
# packaged services are left as the host has them.
echo "make tools: host packages installed"
