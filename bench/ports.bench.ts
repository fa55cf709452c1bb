/**
 * Port publishing benchmark (issue #4), in an isolated host, against baselines measured in the
 * same run:
 *  - 1,000 ports as ONE range on one container: publish and remove, nftables (tsnet's default) vs
 *    tsnet's iptables backend vs the reference CNI `portmap` plugin (Debian
 *    containernetworking-plugins, 1,000 entries: it has no ranges); rules added and processes
 *    left running;
 *  - the time to add one more container's mapping with N = 1 and 100 already published, tsnet vs
 *    `portmap` (N = 10,000 for tsnet is in the firewall section);
 *  - `tsnet run -d -p 20000-20999:20000-20999` vs the same run without -p, and `tsnet rm -f`;
 *  - iperf3 throughput through a port published on 127.0.0.1 vs straight to the container.
 */
import { readdir, readlink, stat } from 'node:fs/promises';
import type { EndpointId, IfName, IpAddr, NetnsRef, NetworkId, Port, Prefix } from '../core/net.js';
import type { EndpointPorts, Firewall, FirewallDeps } from '../sys/firewall/api.js';
import { createIptablesFirewall } from '../sys/firewall/iptables.js';
import { createNftablesFirewall } from '../sys/firewall/nftables.js';
import { cliFor, okCli } from '../test/helpers/cli.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { stats, type BenchRow, type BenchSection } from './report.js';

const PORTMAP = '/usr/lib/cni/portmap';
const NETWORK = { networkId: 'pb' as NetworkId, bridge: 'pbench0' as IfName, subnets: ['10.98.0.0/16' as Prefix], masquerade: true, internal: false, icc: true };
const ipOf = (i: number): string => `10.98.${Math.floor(i / 250)}.${(i % 250) + 2}`;
const range = (id: string, start: number, count: number, ip: string): EndpointPorts => ({
  endpointId: id as EndpointId, networkId: NETWORK.networkId, bridge: NETWORK.bridge,
  mappings: [{ proto: 'tcp', hostPort: { start: start as Port, end: (start + count - 1) as Port }, containerIp: ip as IpAddr, containerPort: { start: start as Port, end: (start + count - 1) as Port } }],
});

async function ms(f: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
}

/** Processes whose network namespace is `ns` (the namespace file's inode). */
async function processesIn(ns: NetnsRef): Promise<number> {
  if (ns.kind !== 'path') throw new Error('needs a namespace file');
  const ino = (await stat(ns.path)).ino;
  let n = 0;
  for (const pid of (await readdir('/proc')).filter((d) => /^\d+$/.test(d))) {
    const link = await readlink(`/proc/${pid}/ns/net`).catch(() => '');
    if (link === `net:[${ino}]`) n++;
  }
  return n;
}

async function nftRules(host: IsolatedHost, ns: NetnsRef): Promise<number> {
  const out = (await host.execIn(ns, ['nft', '-a', 'list', 'table', 'inet', 'tsnet'])).stdout;
  return out.split('\n').filter((l) => /# handle \d+$/.test(l) && !/^\s*(chain|table|map|set)\b/.test(l.trim())).length;
}

interface RangeFigures { publish: number; remove: number; rulesAdded: number }

/** Publishes then removes one 1,000-port range, 5 times, in a fresh namespace; medians. */
async function rangeWith(host: IsolatedHost, make: (d: FirewallDeps) => Firewall, countRules: boolean): Promise<RangeFigures> {
  const ns = await host.newNetns('pr');
  const fw = make({ netns: ns });
  await fw.ensureNetwork(NETWORK);
  await fw.ensurePorts(range('warm', 40000, 1, ipOf(0)));
  await fw.removePorts('warm' as EndpointId);
  const pub: number[] = [];
  const rem: number[] = [];
  let rulesAdded = 0;
  for (let i = 0; i < 5; i++) {
    const before = countRules ? await nftRules(host, ns) : 0;
    pub.push(await ms(() => fw.ensurePorts(range(`r${i}`, 20000, 1000, ipOf(1)))));
    if (countRules) rulesAdded = (await nftRules(host, ns)) - before;
    rem.push(await ms(() => fw.removePorts(`r${i}` as EndpointId)));
  }
  await fw.removeAll();
  return { publish: stats(pub).median, remove: stats(rem).median, rulesAdded };
}

/** One `portmap` invocation (libcni style: env + config on stdin) in the host namespace. */
async function portmap(host: IsolatedHost, cmd: 'ADD' | 'DEL', id: string, ip: string, ports: { hostPort: number; containerPort: number }[], netnsPath: string): Promise<void> {
  const conf = {
    cniVersion: '1.0.0', name: 'pbench', type: 'portmap', capabilities: { portMappings: true }, snat: true,
    runtimeConfig: { portMappings: ports.map((p) => ({ ...p, protocol: 'tcp' })) },
    prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: netnsPath }], ips: [{ address: `${ip}/16`, interface: 0 }] },
  };
  await host.exec([PORTMAP], {
    input: JSON.stringify(conf),
    env: { CNI_COMMAND: cmd, CNI_CONTAINERID: id, CNI_NETNS: netnsPath, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
    timeoutMs: 120_000,
  });
}

async function iperf(host: IsolatedHost, addr: string, port: number): Promise<number> {
  const { stdout } = await host.exec(['iperf3', '-c', addr, '-p', String(port), '-t', '3', '-J'], { timeoutMs: 30_000 });
  const j = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

export async function benchPorts(host: IsolatedHost): Promise<BenchSection> {
  await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  // 1) one 1,000-port range on one container
  const nft = await rangeWith(host, createNftablesFirewall, true);
  const ipt = await rangeWith(host, createIptablesFirewall, false);
  const pmNs = await host.newNetns('pm');
  const pmPath = pmNs.kind === 'path' ? pmNs.path : '';
  const thousand = Array.from({ length: 1000 }, (_, i) => ({ hostPort: 20000 + i, containerPort: 20000 + i }));
  const pmAdd = await ms(() => portmap(host, 'ADD', 'pm-1k', ipOf(1), thousand, pmPath));
  const pmDel = await ms(() => portmap(host, 'DEL', 'pm-1k', ipOf(1), thousand, pmPath));

  // 2) the N-th container's mapping: tsnet (nft) vs portmap, N = 1 and 100
  const fwNs = await host.newNetns('nth');
  const fw = createNftablesFirewall({ netns: fwNs });
  await fw.ensureNetwork(NETWORK);
  const tsnetNth: Record<number, number> = {};
  const pmNth: Record<number, number> = {};
  const probe = async (n: number): Promise<void> => {
    const t: number[] = [];
    const p: number[] = [];
    for (let i = 0; i < 3; i++) {
      t.push(await ms(() => fw.ensurePorts(range(`probe${n}-${i}`, 60000 + i, 1, ipOf(900)))));
      await fw.removePorts(`probe${n}-${i}` as EndpointId);
      p.push(await ms(() => portmap(host, 'ADD', `probe${n}-${i}`, ipOf(900), [{ hostPort: 60000 + i, containerPort: 80 }], pmPath)));
      await portmap(host, 'DEL', `probe${n}-${i}`, ipOf(900), [{ hostPort: 60000 + i, containerPort: 80 }], pmPath);
    }
    tsnetNth[n] = stats(t).median;
    pmNth[n] = stats(p).median;
  };
  await probe(1);
  for (let i = 1; i < 100; i++) {
    await fw.ensurePorts(range(`c${i}`, 30000 + i, 1, ipOf(i)));
    await portmap(host, 'ADD', `c${i}`, ipOf(i), [{ hostPort: 30000 + i, containerPort: 80 }], pmPath);
  }
  await probe(100);
  for (let i = 1; i < 100; i++) await portmap(host, 'DEL', `c${i}`, ipOf(i), [{ hostPort: 30000 + i, containerPort: 80 }], pmPath);
  await fw.removeAll();

  // 3) through the CLI: run with and without a 1,000-port range, rm -f; processes left running
  const cli = okCli(cliFor(host));
  await cli('network', 'create', '--subnet', '10.97.0.0/24', 'pbcli');
  const runPlain: number[] = [];
  const runRange: number[] = [];
  const rmPlain: number[] = [];
  const rmRange: number[] = [];
  // Processes in the host namespace with the container running, settled (the daemon's own helpers
  // come and go): with a 1,000-port range vs without.
  const settled = async (): Promise<number> => {
    await new Promise((r) => setTimeout(r, 500));
    return processesIn(host.ns);
  };
  const procDiff: number[] = [];
  for (let i = 0; i < 5; i++) {
    runPlain.push(await ms(() => cli('run', '-d', '--name', `p${i}`, '--network', 'pbcli', '--', 'sleep', '600')));
    const plain = await settled();
    rmPlain.push(await ms(() => cli('rm', '-f', `p${i}`)));
    runRange.push(await ms(() => cli('run', '-d', '--name', `q${i}`, '--network', 'pbcli', '-p', '20000-20999:20000-20999', '--', 'sleep', '600')));
    procDiff.push((await settled()) - plain);
    rmRange.push(await ms(() => cli('rm', '-f', `q${i}`)));
  }
  const procsAdded = stats(procDiff).median;

  // 4) iperf3: 127.0.0.1 through the published port vs the container address
  await cli('run', '-d', '--name', 'iperf', '--network', 'pbcli', '-p', '127.0.0.1:15201:5201', '--', 'iperf3', '-s', '-p', '5201');
  const ip = (JSON.parse(await cli('inspect', 'iperf')) as { NetworkSettings: { Networks: Record<string, { IPAddress: string }> } }[])[0]?.NetworkSettings.Networks['pbcli']?.IPAddress ?? '';
  let direct = 0;
  for (let i = 0; i < 30 && direct === 0; i++) direct = await iperf(host, ip, 5201).catch(async () => { await new Promise((r) => setTimeout(r, 200)); return 0; });
  const viaLo = await iperf(host, '127.0.0.1', 15201);
  const direct2 = await iperf(host, ip, 5201);
  const viaLo2 = await iperf(host, '127.0.0.1', 15201);
  // 5) the daemon (started by the first run) restores flushed rules by itself: time from the flush
  // until the published port's element is back in the kernel.
  const restore: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await host.exec(['nft', 'flush', 'ruleset']);
    let back = false;
    while (!back && performance.now() - t0 < 10_000) {
      back = (await host.exec(['nft', 'list', 'ruleset'])).stdout.includes('15201');
      if (!back) await new Promise((r) => setTimeout(r, 10));
    }
    restore.push(back ? performance.now() - t0 : NaN);
  }
  await cli('rm', '-f', 'iperf');
  await cli('network', 'rm', 'pbcli');

  const rows: BenchRow[] = [
    { name: 'publish 1,000 ports (one range) on one container', value: nft.publish, unit: 'ms', baseline: { name: 'reference CNI portmap (1,000 entries)', value: pmAdd }, goal: '<= 200 ms', met: nft.publish <= 200 },
    { name: 'remove them', value: nft.remove, unit: 'ms', baseline: { name: 'reference CNI portmap DEL', value: pmDel }, goal: '<= 200 ms', met: nft.remove <= 200 },
    { name: 'publish 1,000 ports (one range), iptables backend', value: ipt.publish, unit: 'ms', baseline: { name: 'reference CNI portmap (1,000 entries)', value: pmAdd } },
    { name: 'remove them, iptables backend', value: ipt.remove, unit: 'ms', baseline: { name: 'reference CNI portmap DEL', value: pmDel } },
    { name: 'nft rules added by a 1,000-port range (it is one map element)', value: nft.rulesAdded, unit: 'count', goal: '0 (O(1) per container)', met: nft.rulesAdded === 0 },
    { name: 'processes added by publishing 1,000 ports (tsnet run -p vs without, median of 5)', value: procsAdded, unit: 'count', goal: '0', met: procsAdded === 0 },
    { name: 'add the 1st container\'s mapping', value: tsnetNth[1] ?? NaN, unit: 'ms', baseline: { name: 'reference CNI portmap ADD', value: pmNth[1] ?? NaN } },
    { name: 'add the 100th container\'s mapping', value: tsnetNth[100] ?? NaN, unit: 'ms', baseline: { name: 'reference CNI portmap ADD', value: pmNth[100] ?? NaN } },
    { name: 'growth from N=1 to N=100 (tsnet nftables)', value: (tsnetNth[100] ?? NaN) / (tsnetNth[1] ?? NaN), unit: 'x', baseline: { name: 'reference CNI portmap', value: (pmNth[100] ?? NaN) / (pmNth[1] ?? NaN) }, goal: '<= 1.5x (flat)', met: (tsnetNth[100] ?? 0) / (tsnetNth[1] ?? 1) <= 1.5 },
    { name: '`tsnet run -d -p 20000-20999:20000-20999`, median of 5', value: stats(runRange).median, unit: 'ms', baseline: { name: 'the same run without -p', value: stats(runPlain).median } },
    { name: '`tsnet rm -f` of it, median of 5', value: stats(rmRange).median, unit: 'ms', baseline: { name: 'rm -f without published ports', value: stats(rmPlain).median } },
    { name: 'rules back after `nft flush ruleset` (the daemon, no command), median of 5', value: stats(restore).median, unit: 'ms', goal: '<= 2000 ms', met: stats(restore).median <= 2000 },
    { name: 'iperf3 through 127.0.0.1:15201 (published), 3 s, best of 2', value: Math.max(viaLo, viaLo2), unit: 'Gbit/s', baseline: { name: 'iperf3 to the container address', value: Math.max(direct, direct2) }, goal: '>= 0.9x direct', met: Math.max(viaLo, viaLo2) >= 0.9 * Math.max(direct, direct2) },
  ];
  return {
    title: 'Port publishing: 1,000-port range, N-th mapping, CLI, throughput (isolated host)',
    rows,
    notes: [
      'medians of 5 range publish/remove cycles, each firewall in a fresh namespace; portmap is the Debian reference plugin 1.1.1 run libcni-style (env + stdin), one process per ADD/DEL',
      'portmap has no port ranges: 1,000 mappings are 1,000 DNAT rules in its per-container chain; tsnet adds one map element',
      'N-th mapping: median of 3 probes, each a new container with one port; N = 10,000 is in the firewall section (portmap at 10,000 containers would take tens of minutes)',
      'Docker 20.10 measured on the same kind of machine (../shared/reference, not in this run): 50.8 s and 2,000 docker-proxy processes to publish 1,000 ports, 106 s to remove them',
    ],
  };
}
