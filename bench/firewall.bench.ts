/**
 * Firewall benchmark: publishing many port mappings with the nftables backend (tsnet's default)
 * against the iptables backend (the baseline), measured in the same run, each in a fresh
 * namespace of the isolated host:
 *  - apply 1,000 and 10,000 mappings in ONE call, and 10,000 over 100 calls (100 endpoints);
 *  - the time to add ONE more mapping when N = 1, 100 and 10,000 are already published (should
 *    be flat for nftables: elements only, no ruleset rewrite);
 *  - the time to remove one endpoint's 100 mappings with 10,000 published, and to remove all.
 *
 * Run alone: node scripts/isolate.mjs --enter -- npx tsx bench/firewall.run.ts
 */
import type { EndpointId, IfName, IpAddr, NetnsRef, NetworkId, Port, Prefix } from '../core/net.js';
import type { EndpointPorts, Firewall, FirewallDeps, PortMapping } from '../sys/firewall/api.js';
import { createIptablesFirewall } from '../sys/firewall/iptables.js';
import { createNftablesFirewall } from '../sys/firewall/nftables.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { stats, type BenchRow, type BenchSection } from './report.js';

const NETWORK = {
  networkId: 'bench' as NetworkId,
  bridge: 'fwbench0' as IfName,
  subnets: ['10.99.0.0/16' as Prefix],
  masquerade: true,
  internal: false,
  icc: true,
};

const mapping = (hostPort: number, ip: string): PortMapping => ({
  proto: 'tcp',
  hostPort: { start: hostPort as Port, end: hostPort as Port },
  containerIp: ip as IpAddr,
  containerPort: { start: 80 as Port, end: 80 as Port },
});

/** Endpoint `id` publishing `count` single ports from `firstPort`. */
const endpoint = (id: string, firstPort: number, count: number, ip: string): EndpointPorts => ({
  endpointId: id as EndpointId,
  networkId: NETWORK.networkId,
  bridge: NETWORK.bridge,
  mappings: Array.from({ length: count }, (_, i) => mapping(firstPort + i, ip)),
});

const ipOf = (i: number): string => `10.99.${Math.floor(i / 250)}.${(i % 250) + 2}`;

async function ms(f: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

interface Figures {
  oneCall1k: number;
  oneCall10k: number;
  hundredCalls10k: number;
  nth: Record<1 | 100 | 10_000, number>;
  removeOne: number;
  removeAll: number;
  published: number;
}

const SAMPLES = 5;

/** Median time to add one more endpoint with one mapping (removed again, untimed). */
async function addOne(fw: Firewall, tag: string): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const ep = endpoint(`probe-${tag}-${i}`, 60_000 + i, 1, '10.99.200.2');
    samples.push(await ms(() => fw.ensurePorts(ep)));
    await fw.removePorts(ep.endpointId);
  }
  return stats(samples).median;
}

async function measure(host: IsolatedHost, make: (deps: FirewallDeps) => Firewall): Promise<Figures> {
  const fresh = async (): Promise<Firewall> => {
    const ns: NetnsRef = await host.newNetns('fwb');
    const fw = make({ netns: ns });
    await fw.ensureNetwork(NETWORK);
    await fw.ensurePorts(endpoint('warmup', 65_000, 1, '10.99.250.2'));
    await fw.removePorts('warmup' as EndpointId);
    return fw;
  };
  // one call
  let fw = await fresh();
  const oneCall1k = await ms(() => fw.ensurePorts(endpoint('one-1k', 1024, 1000, ipOf(0))));
  // Median of 3, each into a fresh namespace (one sample alone mostly measures JIT warm-up).
  const tenK: number[] = [];
  for (let i = 0; i < 3; i++) {
    fw = await fresh();
    const f = fw;
    tenK.push(await ms(() => f.ensurePorts(endpoint('one-10k', 1024, 10_000, ipOf(0)))));
  }
  const oneCall10k = stats(tenK).median;
  // N-th mapping, and 10,000 over 100 calls
  fw = await fresh();
  const nth1 = await addOne(fw, 'n1');
  let hundredCalls10k = await ms(() => fw.ensurePorts(endpoint('ep-0', 1024, 99, ipOf(0))));
  const nth100 = await addOne(fw, 'n100');
  for (let i = 1; i < 100; i++) {
    const ep = endpoint(`ep-${i}`, 1024 + i * 100 - 1, 100, ipOf(i));
    hundredCalls10k += await ms(() => fw.ensurePorts(ep));
  }
  const published = (await fw.list()).endpoints.length;
  const nth10k = await addOne(fw, 'n10k');
  const removals: number[] = [];
  for (let i = 99; i > 89; i--) {
    removals.push(await ms(() => fw.removePorts(`ep-${i}` as EndpointId)));
    await fw.ensurePorts(endpoint(`ep-${i}`, 1024 + i * 100 - 1, 100, ipOf(i)));
  }
  const removeAll = await ms(() => fw.removeAll());
  return {
    oneCall1k,
    oneCall10k,
    hundredCalls10k,
    nth: { 1: nth1, 100: nth100, 10_000: nth10k },
    removeOne: stats(removals).median,
    removeAll,
    published,
  };
}

export async function benchFirewall(host: IsolatedHost): Promise<BenchSection> {
  const nft = await measure(host, createNftablesFirewall);
  const ipt = await measure(host, createIptablesFirewall);
  const base = (value: number): { name: string; value: number } => ({ name: 'iptables backend', value });
  const growth = nft.nth[10_000] / nft.nth[1];
  const rows: BenchRow[] = [
    { name: 'apply 1,000 mappings in one call', value: nft.oneCall1k, unit: 'ms', baseline: base(ipt.oneCall1k) },
    { name: 'apply 10,000 mappings in one call (median of 3)', value: nft.oneCall10k, unit: 'ms', baseline: base(ipt.oneCall10k), goal: '<= 200 ms', met: nft.oneCall10k <= 200 },
    { name: 'apply 10,000 mappings over 100 calls (100 endpoints)', value: nft.hundredCalls10k, unit: 'ms', baseline: base(ipt.hundredCalls10k) },
    { name: 'add one mapping when 1 is published', value: nft.nth[1], unit: 'ms', baseline: base(ipt.nth[1]) },
    { name: 'add one mapping when 100 are published', value: nft.nth[100], unit: 'ms', baseline: base(ipt.nth[100]) },
    { name: 'add one mapping when 10,000 are published', value: nft.nth[10_000], unit: 'ms', baseline: base(ipt.nth[10_000]) },
    { name: 'add-cost growth from N=1 to N=10,000 (nftables)', value: growth, unit: 'x', baseline: { name: 'iptables backend', value: ipt.nth[10_000] / ipt.nth[1] }, goal: '<= 2x (flat)', met: growth <= 2 },
    { name: 'remove one endpoint (100 mappings) with 10,000 published', value: nft.removeOne, unit: 'ms', baseline: base(ipt.removeOne) },
    { name: 'remove everything with 10,000 published', value: nft.removeAll, unit: 'ms', baseline: base(ipt.removeAll) },
  ];
  return {
    title: 'Firewall: port publishing, nftables (tsnet default) vs iptables backend',
    rows,
    notes: [
      `medians of ${SAMPLES} samples for single adds and of 10 removals; endpoints published at N=10,000: nft ${nft.published}, iptables ${ipt.published}`,
      'nftables: one `nft -f -` per call; mappings are map elements (O(1) lookup per packet); adding never reads the kernel',
      'removal finds an endpoint\'s elements by owner comment in the kernel: nft 1.0.6 must list every element (~25 us each), so removing one endpoint costs O(published)',
      'iptables: every call reads iptables-save (O(rules)) and applies one iptables-restore --noflush per family; packets walk the DNAT chain linearly',
    ],
  };
}
