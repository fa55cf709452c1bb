/**
 * Docker with tsnet as its network and IPAM plugin vs Docker's own bridge driver, same dockerd,
 * same run, in an isolated host: `docker run -d` on each (and on `--network none`, the part that is
 * not networking), and `docker network connect` / `disconnect` of a running container. Every figure
 * includes the docker CLI process and dockerd's own work, identical on both sides.
 */
import { join } from 'node:path';
import { IMAGE, importBusybox, startDockerd } from '../test/helpers/dockerd.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { stats, type BenchSection } from './report.js';

export async function benchDocker(host: IsolatedHost, opts: { readonly n?: number } = {}): Promise<BenchSection> {
  const n = opts.n ?? 10;
  // Docker's bridge driver as it ships: its iptables rules and userland proxy included.
  const d = await startDockerd(host, { dockerBridge: true });
  await importBusybox(d, join(host.stateDir, 'image'));
  await d.ok('network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'tsn');
  await d.ok('network', 'create', '-d', 'bridge', 'dbr');
  await d.ok('network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'tsn2');
  await d.ok('network', 'create', '-d', 'bridge', 'dbr2');
  const time = async (...args: string[]): Promise<number> => {
    const t0 = performance.now();
    await d.ok(...args);
    return performance.now() - t0;
  };
  const runs: Record<'tsn' | 'dbr' | 'none', number[]> = { tsn: [], dbr: [], none: [] };
  const connects: Record<'tsn2' | 'dbr2', number[]> = { tsn2: [], dbr2: [] };
  const disconnects: Record<'tsn2' | 'dbr2', number[]> = { tsn2: [], dbr2: [] };
  let k = 0;
  // Interleaved, one warm-up round untimed, so drift hits both sides alike.
  for (let i = -1; i < n; i++) {
    for (const net of ['tsn', 'dbr', 'none'] as const) {
      const publish = net === 'none' ? [] : ['-p', `${18000 + k}:80`];
      const ms = await time('run', '-d', '--name', `r${k++}`, '--network', net, ...publish, IMAGE, 'sleep', '600');
      if (i >= 0) runs[net].push(ms);
    }
    for (const net of ['tsn2', 'dbr2'] as const) {
      const ctr = `r${k - (net === 'tsn2' ? 3 : 2)}`; // the container just started on tsn / dbr
      const c = await time('network', 'connect', net, ctr);
      const x = await time('network', 'disconnect', net, ctr);
      if (i >= 0) {
        connects[net].push(c);
        disconnects[net].push(x);
      }
    }
  }
  const ids = (await d.ok('ps', '-aq')).split('\n').filter(Boolean);
  await d.ok('rm', '-f', ...ids);
  await d.ok('network', 'rm', 'tsn', 'dbr', 'tsn2', 'dbr2');
  const m = (xs: number[]): number => stats(xs).median;
  return {
    title: `Docker (dockerd ${await d.ok('version', '--format', '{{.Server.Version}}')}): tsnet plugin vs Docker's bridge driver, same dockerd, same run`,
    rows: [
      { name: `docker run -d -p (network tsnet), median of ${n}`, value: m(runs.tsn), unit: 'ms', baseline: { name: 'Docker bridge driver', value: m(runs.dbr) } },
      { name: 'network part of docker run (minus --network none)', value: m(runs.tsn) - m(runs.none), unit: 'ms', baseline: { name: 'Docker bridge driver', value: m(runs.dbr) - m(runs.none) } },
      { name: `docker network connect (running container), median of ${n}`, value: m(connects.tsn2), unit: 'ms', baseline: { name: 'Docker bridge driver', value: m(connects.dbr2) } },
      { name: `docker network disconnect, median of ${n}`, value: m(disconnects.tsn2), unit: 'ms', baseline: { name: 'Docker bridge driver', value: m(disconnects.dbr2) } },
      { name: `docker run -d --network none (no network work), median of ${n}`, value: m(runs.none), unit: 'ms' },
    ],
    notes: [
      'Each figure includes starting the docker CLI and dockerd\'s own work; only the network driver differs.',
      'The Docker bridge side publishes with its iptables rules and a docker-proxy process per port; tsnet with an nftables map element.',
      'For reference (not measured in this run): Docker\'s bridge connect measured 67 ms on the same kind of machine (../shared/reference/peers-howto.md).',
    ],
  };
}
