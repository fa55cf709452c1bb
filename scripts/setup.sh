#!/usr/bin/env bash
# Installs what tsnet, its tests, benchmarks and demo need on a fresh Debian 12 machine (as root),
# then the npm dependencies. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Peers for interop tests and benchmarks: the reference CNI plugins, podman (CNI backend) with runc,
# dockerd, dnsmasq and dnsperf (DNS baseline), iperf3 (data-plane throughput). gcc and libc6-dev
# build the CNI plugins' C front end (plugins/cni/bin/client.c) and the DNS resolver's native fast
# path (native/dns-fast.c).
PACKAGES=(iproute2 iptables nftables util-linux procps hostname busybox-static
  containernetworking-plugins podman runc docker.io dnsmasq-base dnsperf iperf3 gcc libc6-dev)

if [ "$(id -u)" != 0 ]; then
  echo "setup: not root: skipping system packages (${PACKAGES[*]}); privileged tests will be skipped" >&2
else
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Never let a package start its service on the real host (dockerd would add docker0 and
    # firewall rules to the machine's own network): deny service starts for the install.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      guard=/usr/sbin/policy-rc.d
    fi
    trap 'if [ -n "$guard" ]; then rm -f "$guard"; fi' EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: tsnet needs Node.js >= 20 (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.tsnet-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
