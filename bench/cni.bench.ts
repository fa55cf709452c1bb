/**
 * CNI plugins, driven as libcni drives them (test/helpers/cni.ts: one process per plugin, stdin,
 * env, result cache, DEL in reverse order), in an isolated host:
 *  - tsnet: one plugin, tsnet-bridge (bridge + built-in host-local-compatible IPAM + one published
 *    port through the portMappings capability), twice: through the C front end with `tsnet daemon`
 *    running (the rows with goals), and standalone (no daemon: the front end runs the Node plugin);
 *  - reference chain (Debian containernetworking-plugins 1.1.1): loopback + bridge (host-local
 *    IPAM, ipMasq) + portmap, the same published port.
 * ADD and DEL latency, median and p95 over N attachments, first on an empty bridge, then with
 * 200 containers on it; then 200 concurrent ADDs followed by 200 concurrent DELs (all must
 * succeed with distinct addresses and leave nothing behind).
 */
import { join } from 'node:path';
import { cniSocketPath } from '../engine/cni-service.js';
import { bridgeList, Libcni, links, makeCniPath, nftElements, nsPath, reservations, type Attachment, type Conflist } from '../test/helpers/cni.js';
import { startDaemon } from '../test/helpers/cli.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { stats, type BenchRow, type BenchSection } from './report.js';

interface Flavour {
  readonly label: string;
  readonly list: Conflist;
  /** The runtime driving this flavour (the tsnet flavours differ by the environment of their plugins). */
  readonly cni: Libcni;
}

function flavours(dataDir: string, cni: { readonly daemon: Libcni; readonly standalone: Libcni; readonly ref: Libcni }): { daemon: Flavour; standalone: Flavour; ref: Flavour } {
  const t = bridgeList('1.0.0', dataDir);
  const tsnetList = (name: string, bridge: string, subnet: string): Conflist => ({ ...t, name, plugins: [{ ...t.plugins[0], bridge, ipam: { type: 'tsnet-ipam', ranges: [[{ subnet }]], dataDir } }] });
  const refList: Conflist = {
    cniVersion: '1.0.0',
    name: 'br',
    plugins: [
      { type: 'loopback' },
      { type: 'bridge', bridge: 'br0', isGateway: true, isDefaultGateway: true, ipMasq: true, ipam: { type: 'host-local', ranges: [[{ subnet: '10.61.0.0/16' }]], dataDir } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  return {
    daemon: { label: 'tsnet-bridge (C front end + tsnet daemon)', list: tsnetList('bt', 'bt0', '10.60.0.0/16'), cni: cni.daemon },
    standalone: { label: 'tsnet-bridge standalone (no daemon: Node plugin process)', list: tsnetList('bs', 'bs0', '10.62.0.0/16'), cni: cni.standalone },
    ref: { label: 'reference loopback+bridge+host-local+portmap', list: refList, cni: cni.ref },
  };
}

interface Phase {
  readonly add: number[];
  readonly del: number[];
}

interface Timed {
  readonly f: Flavour;
  readonly atts: Attachment[];
  readonly times: number[];
}

/**
 * ADDs containers from+0 .. from+count-1 for every flavour, INTERLEAVED (container i of each
 * flavour, then i+1...), so that both see the same machine load: this machine is shared, and its
 * load swings within minutes (measured 7 to 80), which made back-to-back phases incomparable.
 */
const PORT_BASE: Readonly<Record<string, number>> = { bt: 20000, bs: 25000 };

async function addMany(host: IsolatedHost, fs: readonly Flavour[], prefix: string, from: number, count: number): Promise<Timed[]> {
  const out: Timed[] = fs.map((f) => ({ f, atts: [], times: [] }));
  for (let i = from; i < from + count; i++) {
    for (const o of out) {
      const ns = await host.newNetns(prefix);
      const a: Attachment = { containerId: `${prefix}${o.f.list.name}${i}`, netns: nsPath(ns), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: (PORT_BASE[o.f.list.name] ?? 40000) + i, containerPort: 80, protocol: 'tcp' }] } };
      const t0 = performance.now();
      await o.f.cni.addList(o.f.list, a);
      o.times.push(performance.now() - t0);
      o.atts.push(a);
    }
  }
  return out;
}

/** DELs, interleaved the same way; returns the times per flavour. */
async function delMany(added: readonly Timed[]): Promise<number[][]> {
  const times = added.map(() => [] as number[]);
  const n = Math.max(...added.map((o) => o.atts.length));
  for (let i = 0; i < n; i++) {
    for (const [k, o] of added.entries()) {
      const a = o.atts[i];
      if (a === undefined) continue;
      const t0 = performance.now();
      await o.f.cni.delList(o.f.list, a);
      times[k]?.push(performance.now() - t0);
    }
  }
  return times;
}

async function removeNetns(host: IsolatedHost, atts: readonly Attachment[]): Promise<void> {
  for (const a of atts) await host.netns.remove(a.netns.split('/').pop() ?? '');
}

interface Latency {
  readonly empty: Phase;
  readonly crowded: Phase;
  readonly firstAdd: number;
  readonly lastAdd: number;
}

/** N timed ADDs then N timed DELs on an empty bridge, then the same with `crowd` containers present. */
async function latency(host: IsolatedHost, fs: readonly Flavour[], n: number, crowd: number): Promise<Latency[]> {
  // warm-up (page cache, first network setup), not timed
  const warm = await addMany(host, fs, 'w', 0, 2);
  await delMany(warm);
  await removeNetns(host, warm.flatMap((o) => o.atts));
  const first = await addMany(host, fs, 'e', 0, n);
  const firstDel = await delMany(first);
  await removeNetns(host, first.flatMap((o) => o.atts));
  const fill = await addMany(host, fs, 'f', 100, crowd);
  const timed = await addMany(host, fs, 'c', 100 + crowd, n);
  const timedDel = await delMany(timed);
  await delMany(fill);
  await removeNetns(host, [...timed, ...fill].flatMap((o) => o.atts));
  return fs.map((_, k) => ({
    empty: { add: first[k]?.times ?? [], del: firstDel[k] ?? [] },
    crowded: { add: timed[k]?.times ?? [], del: timedDel[k] ?? [] },
    firstAdd: stats((fill[k]?.times ?? []).slice(0, 10)).median,
    lastAdd: stats((fill[k]?.times ?? []).slice(-10)).median,
  }));
}

/** `count` concurrent ADDs, then `count` concurrent DELs; checks success, distinct IPs, nothing left. */
async function concurrent(host: IsolatedHost, f: Flavour, count: number, dataDir: string): Promise<{ addMs: number; delMs: number; ok: boolean; note: string }> {
  const linksBefore = (await links(host)).length;
  const atts: Attachment[] = [];
  for (let i = 0; i < count; i++) {
    const ns = await host.newNetns(`p${f.list.name}`);
    atts.push({ containerId: `p${f.list.name}${i}`, netns: nsPath(ns), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 30000 + i, containerPort: 80, protocol: 'tcp' }] } });
  }
  const t0 = performance.now();
  const results = await Promise.allSettled(atts.map((a) => f.cni.addList(f.list, a)));
  const addMs = performance.now() - t0;
  const okResults = results.filter((r): r is PromiseFulfilledResult<Record<string, unknown>> => r.status === 'fulfilled');
  const failed = results.length - okResults.length;
  const ips = new Set(okResults.map((r) => {
    const ipList = r.value['ips'] as { address: string }[];
    return ipList[0]?.address;
  }));
  const t1 = performance.now();
  const dels = await Promise.allSettled(atts.map((a) => f.cni.delList(f.list, a)));
  const delMs = performance.now() - t1;
  const delFailed = dels.filter((r) => r.status === 'rejected').length;
  const left = (await links(host)).length - linksBefore;
  const leftIps = (await reservations(dataDir, f.list.name)).length;
  await removeNetns(host, atts);
  const firstErr = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const ok = failed === 0 && delFailed === 0 && ips.size === count && left === 0 && leftIps === 0;
  const note = `${f.label}: ${count - failed}/${count} ADDs ok, ${ips.size} distinct addresses, ${count - delFailed}/${count} DELs ok, ${left} links and ${leftIps} reservations left${firstErr ? `; first error: ${String(firstErr.reason).slice(0, 200)}` : ''}`;
  return { addMs, delMs, ok, note };
}

export async function benchCni(host: IsolatedHost, opts: { readonly n?: number; readonly crowd?: number; readonly parallel?: number } = {}): Promise<BenchSection> {
  const n = opts.n ?? 50;
  const crowd = opts.crowd ?? 200;
  const parallel = opts.parallel ?? 200;
  const cniPath = await makeCniPath(join(host.runDir, 'cni-bin'));
  const dataDir = join(host.stateDir, 'ipam');
  // The daemon whose CNI service the C front end hands requests to (engine/cni-service.ts).
  await startDaemon(host); // stopped at the isolated host's teardown
  const socket = cniSocketPath(host.runDir);
  const libcni = (env: Record<string, string>): Libcni => new Libcni({ ns: host.ns, cniPath, cacheDir: join(host.stateDir, 'cni-cache'), timeoutMs: 600_000, extraEnv: env });
  const { daemon: td, standalone: tsa, ref } = flavours(dataDir, {
    daemon: libcni({ TSNET_CNI_SOCKET: socket }),
    standalone: libcni({ TSNET_CNI_SOCKET: join(host.runDir, 'no-daemon.sock') }),
    ref: libcni({}),
  });
  const [ts, sa, rf] = (await latency(host, [td, tsa, ref], n, crowd)) as [Latency, Latency, Latency];
  const pts = await concurrent(host, td, parallel, dataDir);
  const psa = await concurrent(host, tsa, parallel, dataDir);
  const prf = await concurrent(host, ref, parallel, dataDir);
  const leftElements = await nftElements(host);
  const row = (name: string, mine: number[], theirs: number[], q: 'median' | 'p95', goal?: number): BenchRow => {
    const v = stats(mine)[q];
    const b = stats(theirs)[q];
    return { name, value: v, unit: 'ms', baseline: { name: ref.label, value: b }, ...(goal !== undefined ? { goal: `<= ${goal}x the reference`, met: v <= goal * b } : {}) };
  };
  const rows: BenchRow[] = [
    row(`ADD (bridge + IPAM + 1 published port), median of ${n}, empty bridge`, ts.empty.add, rf.empty.add, 'median', 0.5),
    row(`ADD p95 of ${n}, empty bridge`, ts.empty.add, rf.empty.add, 'p95'),
    row(`standalone (no daemon) ADD median of ${n}, empty bridge`, sa.empty.add, rf.empty.add, 'median'),
    row(`DEL median of ${n}, empty bridge`, ts.empty.del, rf.empty.del, 'median', 0.5),
    row(`DEL p95 of ${n}, empty bridge`, ts.empty.del, rf.empty.del, 'p95'),
    row(`standalone (no daemon) DEL median of ${n}, empty bridge`, sa.empty.del, rf.empty.del, 'median'),
    row(`ADD median of ${n} with ${crowd} containers on the bridge`, ts.crowded.add, rf.crowded.add, 'median', 0.5),
    row(`ADD p95 of ${n} with ${crowd} containers`, ts.crowded.add, rf.crowded.add, 'p95'),
    row(`DEL median of ${n} with ${crowd} containers`, ts.crowded.del, rf.crowded.del, 'median', 0.5),
    row(`DEL p95 of ${n} with ${crowd} containers`, ts.crowded.del, rf.crowded.del, 'p95'),
    row(`standalone (no daemon) ADD median of ${n} with ${crowd} containers`, sa.crowded.add, rf.crowded.add, 'median'),
    {
      name: `flatness: ADD median at ${crowd} containers / on an empty bridge`,
      value: stats(ts.crowded.add).median / stats(ts.empty.add).median,
      unit: 'x',
      baseline: { name: ref.label, value: stats(rf.crowded.add).median / stats(rf.empty.add).median },
      goal: '<= 1.1x',
      met: stats(ts.crowded.add).median / stats(ts.empty.add).median <= 1.1,
    },
    { name: `${parallel} concurrent ADDs, wall time`, value: pts.addMs, unit: 'ms', baseline: { name: ref.label, value: prf.addMs }, goal: '<= 0.5x the reference, all ok', met: pts.ok && pts.addMs <= 0.5 * prf.addMs },
    { name: `${parallel} concurrent DELs, wall time`, value: pts.delMs, unit: 'ms', baseline: { name: ref.label, value: prf.delMs } },
    { name: `standalone (no daemon): ${parallel} concurrent ADDs, wall time`, value: psa.addMs, unit: 'ms', baseline: { name: ref.label, value: prf.addMs } },
    { name: 'tsnet port elements left in nft after everything', value: leftElements, unit: 'count', goal: '0', met: leftElements === 0 },
  ];
  return {
    title: 'CNI plugins driven like libcni (isolated host; tsnet-bridge vs the reference chain)',
    rows,
    notes: [
      pts.note,
      psa.note,
      prf.note,
      `fill phase (untimed in the rows above): tsnet ADD median of the first 10 ${ts.firstAdd.toFixed(1)} ms, of the last 10 ${ts.lastAdd.toFixed(1)} ms; standalone ${sa.firstAdd.toFixed(1)} / ${sa.lastAdd.toFixed(1)} ms; reference ${rf.firstAdd.toFixed(1)} / ${rf.lastAdd.toFixed(1)} ms`,
      'tsnet rows without "standalone": the plugin names are the C front end, which hands the request to the running tsnet daemon (the same plugin code, its helper processes already running). "Standalone": the same binaries with no daemon listening, so the front end runs the Node plugin process.',
      'Each ADD/DEL includes starting the plugin processes (the C front end, and node when standalone; Go binaries for the reference) and the test runner\'s own process start through nsenter.',
      'Latency phases interleave the three flavours container by container (same machine load for all); the concurrent phases run one after the other.',
    ],
  };
}
