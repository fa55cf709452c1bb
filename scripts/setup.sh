#!/usr/bin/env bash
# Installs what tsnet, its tests, benchmarks and demo need on a fresh Debian 12 machine (as root),
# then the npm dependencies. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Peers for interop tests and benchmarks: the reference CNI plugins, podman (CNI backend) with runc,
# dockerd, dnsmasq and dnsperf (DNS baseline), iperf3 (data-plane throughput), mininet with
# bridge-utils (the lab baseline: `mn --switch lxbr` needs brctl; Open vSwitch is not needed). gcc and libc6-dev
# build the CNI plugins' C front end (plugins/cni/bin/client.c) and the DNS resolver's native fast
# path (native/dns-fast.c). golang-go with Debian's go-cni and libcni sources builds, offline, the
# test programs of test/helpers/go/ (a go-cni driver doing what containerd's CRI plugin does, a
# libcni cnitool); containerd runs `ctr run --cni` on tsnet's plugins. tini provides tini-static,
# the init of `tsnet run --init`; python3, make and g++ build node-pty (the pseudo-terminal of
# `run -t`/`exec -t`) at npm ci. firewalld (run by the tests in an isolated host, on a D-Bus bus of
# their own, never as a service) for the coexistence tests. etcd-server and etcd-client are the
# cluster store of the multi-host tests and benchmark (curl reads etcd's request counters there).
PACKAGES=(iproute2 iptables nftables util-linux procps hostname busybox-static tini python3 make g++
  containernetworking-plugins podman runc docker.io containerd dnsmasq-base dnsperf iperf3 gcc libc6-dev
  golang-go golang-github-containerd-go-cni-dev golang-github-appc-cni-dev mininet bridge-utils firewalld
  etcd-server etcd-client curl)

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
