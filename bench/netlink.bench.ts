/**
 * Netlink benchmark: the container sequence a bridge driver runs per endpoint ("veth pair with the
 * peer in a fresh namespace + host side up + master to a bridge + address inside + container side up
 * + default route inside"), N times, through tsnet's netlink (long-lived `ip -batch` processes, one
 * for the host namespace and one for the container's) against the baseline of one `ip` process per
 * operation, measured in the same run. Also a single read (getLink) both ways.
 *
 * Run alone: node scripts/isolate.mjs --enter -- npx tsx bench/netlink.run.ts
 */
import { parseIfName, parseIpAddr, parsePrefix, type IfName, type NetnsRef } from '../core/net.js';
import { inNetns, run } from '../sys/exec.js';
import { createIproute2NetlinkFor } from '../sys/netlink/iproute2.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { sample, stats, type BenchRow, type BenchSection } from './report.js';

const BRIDGE = parseIfName('bnbr0');
const GW = parseIpAddr('10.200.0.1');
const PEER = parseIfName('eth0');
const WARMUP = 3;

export async function benchNetlink(host: IsolatedHost, opts: { readonly n?: number } = {}): Promise<BenchSection> {
  const N = opts.n ?? 50;
  const nl = createIproute2NetlinkFor();
  try {
    const h = nl(host.ns);
    await h.ensureBridge(BRIDGE);
    await h.batch([
      { op: 'ensureAddr', dev: BRIDGE, prefix: parsePrefix('10.200.0.1/16') },
      { op: 'setLink', name: BRIDGE, changes: { up: true } },
    ]);
    // Namespaces are set up outside the timed sections and reused by every variant (deleting the
    // host end of a veth deletes the peer, so each iteration starts from an empty namespace).
    const nss: NetnsRef[] = [];
    for (let i = 0; i < N + WARMUP; i++) nss.push(await host.newNetns(`bn${i}`));
    const slot = (i: number): number => (i < 0 ? N - 1 - i : i);
    const vethOf = (s: number): IfName => parseIfName(`bn${s}`);
    const addrOf = (s: number) => parsePrefix(`10.200.1.${s + 2}/16`);
    const nsOf = (s: number): NetnsRef => nss[s] as NetnsRef;
    const pathOf = (s: number): string => {
      const ns = nsOf(s);
      return ns.kind === 'path' ? ns.path : '';
    };
    const cleanup = async (): Promise<void> => {
      await h.batch(nss.map((_, s) => ({ op: 'removeLink' as const, name: vethOf(s) })));
    };

    // The container side through tsnet: host ops coalesce into one write, container ops into another.
    const tsnetSequence = async (s: number): Promise<void> => {
      const ctr = nl(nsOf(s)); // starts (or reuses) the container namespace's ip process
      const vh = vethOf(s);
      await Promise.all([
        h.addVeth({ name: vh, peer: PEER, peerNetns: nsOf(s) }),
        h.setLink(vh, { master: BRIDGE }),
        h.setLink(vh, { up: true }),
      ]);
      await Promise.all([
        ctr.addAddr(PEER, addrOf(s)),
        ctr.setLink(PEER, { up: true }),
        ctr.addRoute({ dst: parsePrefix('0.0.0.0/0'), via: GW }),
      ]);
    };

    // (a) cold: the container handle is created inside the timed section, as a plugin pays it.
    // Every slot is used once per variant, so nl(ns) creates a fresh handle in each iteration.
    const cold = await sample(N, (i) => tsnetSequence(slot(i)), WARMUP);
    const check = await nl(nsOf(0)).listRoutes({ family: 4 });
    if (!check.some((r) => r.dst === '0.0.0.0/0' && r.via === GW)) throw new Error('bench: the default route is missing');
    await Promise.all(nss.map((ns) => nl.release(ns)));
    await cleanup();

    // (b) warm: the container handle's process is already running (e.g. a daemon that opened it earlier).
    for (const ns of nss) await nl(ns).getLink(parseIfName('lo'));
    const warm = await sample(N, (i) => tsnetSequence(slot(i)), WARMUP);
    await Promise.all(nss.map((ns) => nl.release(ns)));
    await cleanup();

    // (c) baseline: one `ip` process per operation, through sys/exec like any other command.
    const baseline = await sample(N, async (i) => {
      const s = slot(i);
      const vh = vethOf(s);
      const inHost = (...args: string[]) => run(inNetns(host.ns, ['ip', ...args]));
      const inCtr = (...args: string[]) => run(inNetns(nsOf(s), ['ip', ...args]));
      await inHost('link', 'add', vh, 'type', 'veth', 'peer', 'name', PEER, 'netns', pathOf(s));
      await inHost('link', 'set', vh, 'master', BRIDGE);
      await inHost('link', 'set', vh, 'up');
      await inCtr('addr', 'add', addrOf(s), 'dev', PEER);
      await inCtr('link', 'set', PEER, 'up');
      await inCtr('route', 'add', 'default', 'via', GW);
    }, WARMUP);
    await cleanup();

    // One read: getLink through the batch process vs spawning `ip -json -details addr show dev X`.
    const readTsnet = await sample(N, () => h.getLink(BRIDGE), WARMUP);
    const readSpawn = await sample(N, () => run(inNetns(host.ns, ['ip', '-json', '-details', 'addr', 'show', 'dev', BRIDGE])), WARMUP);

    const S = { cold: stats(cold), warm: stats(warm), base: stats(baseline), readT: stats(readTsnet), readS: stats(readSpawn) };
    const BASE = 'one ip process per op';
    const row = (name: string, value: number, base: number, goal?: number): BenchRow => ({
      name,
      value,
      unit: 'ms',
      baseline: { name: BASE, value: base },
      ...(goal !== undefined ? { goal: `>= ${goal}x faster`, met: base / value >= goal } : {}),
    });
    return {
      title: `netlink: container sequence (veth into a fresh namespace, master, up, address, up, default route), N=${N}`,
      rows: [
        row('tsnet, container ip process started in the timed section: median', S.cold.median, S.base.median, 5),
        row('tsnet, container ip process started in the timed section: p95', S.cold.p95, S.base.p95, 5),
        row('tsnet, container ip process already running: median', S.warm.median, S.base.median, 5),
        row('tsnet, container ip process already running: p95', S.warm.p95, S.base.p95, 5),
        { name: 'speed-up (median, cold container handle)', value: S.base.median / S.cold.median, unit: 'x', goal: '>= 5x', met: S.base.median / S.cold.median >= 5 },
        { name: 'speed-up (median, warm container handle)', value: S.base.median / S.warm.median, unit: 'x', goal: '>= 5x', met: S.base.median / S.warm.median >= 5 },
        { name: 'getLink through the batch process: median', value: S.readT.median, unit: 'ms', baseline: { name: 'spawning ip -json addr show dev X', value: S.readS.median } },
      ],
      notes: [
        `baseline (6 processes): median ${S.base.median.toFixed(2)} ms, p95 ${S.base.p95.toFixed(2)} ms`,
        'the host handle is warm in every variant (a daemon keeps it); the cold variant is bounded below by one nsenter+ip start (the container side needs a process inside the namespace), the baseline pays six',
        'the namespace playing "host" is itself a namespace file, so every baseline process also goes through nsenter, like tsnet\'s',
      ],
    };
  } finally {
    await nl.closeAll();
  }
}
