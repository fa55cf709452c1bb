/**
 * The network model through the library API (no process start counted), in an isolated host:
 * network create/delete, endpoint create+join (connect) and leave (disconnect), and a sandbox with
 * its network vs one without (the network part of a container start).
 */
import { join } from 'node:path';
import { nullLogger } from '../core/log.js';
import { createEngine } from '../cli/engine.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { sample, stats, type BenchSection } from './report.js';

export async function benchCnm(host: IsolatedHost, opts: { readonly n?: number } = {}): Promise<BenchSection> {
  const n = opts.n ?? 50;
  await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  const engine = await createEngine({ stateDir: join(host.stateDir, 'bench-cnm'), runDir: host.runDir, firewall: 'nftables', log: nullLogger, hostNs: host.ns });
  const c = engine.controller;
  try {
    await c.ensurePredefined();
    let k = 0;
    const netCreate: number[] = [];
    const netDelete: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await c.createNetwork({ name: `bn${i}` });
      netCreate.push(performance.now() - t0);
      const t1 = performance.now();
      await c.deleteNetwork(`bn${i}`);
      netDelete.push(performance.now() - t1);
    }
    await c.createNetwork({ name: 'bench' });
    // Sandboxes without network first; then connect/disconnect each (endpoint create+join, leave).
    const names: string[] = [];
    for (let i = 0; i < n + 3; i++) {
      const name = `s${i}`;
      await c.createSandbox({ name, mode: { kind: 'none' } });
      names.push(name);
    }
    const connect = await sample(n, async (i) => c.connect(names[i + 3] ?? names[0] ?? '', 'bench'), 0);
    const disconnect = await sample(n, async (i) => c.disconnect(names[i + 3] ?? '', 'bench'), 0);
    for (const name of names) await c.deleteSandbox(name);
    // A whole sandbox (namespace + loopback + files [+ endpoint]) with and without a network.
    const none = await sample(Math.min(n, 30), async () => c.createSandbox({ name: `none${k++}`, mode: { kind: 'none' } }));
    const withNet = await sample(Math.min(n, 30), async () => c.createSandbox({ name: `net${k++}`, mode: { kind: 'network', network: 'bench' } }));
    for (const sb of await c.listSandboxes()) await c.deleteSandbox(sb.id);
    await c.deleteNetwork('bench');
    const sc = stats(connect);
    const sd = stats(disconnect);
    const sn = stats(none);
    const sw = stats(withNet);
    return {
      title: 'CNM through the library API (isolated host, nftables backend)',
      rows: [
        { name: 'network create (bridge + gateway + firewall policy), median of 20', value: stats(netCreate).median, unit: 'ms' },
        { name: 'network delete, median of 20', value: stats(netDelete).median, unit: 'ms' },
        { name: `endpoint create+join (connect a running sandbox), median of ${n}`, value: sc.median, unit: 'ms', goal: '<= 10 ms p50', met: sc.median <= 10 },
        { name: `endpoint create+join, p95 of ${n}`, value: sc.p95, unit: 'ms' },
        { name: `endpoint leave+delete (disconnect), median of ${n}`, value: sd.median, unit: 'ms' },
        { name: 'sandbox with a network, median of 30', value: sw.median, unit: 'ms', baseline: { name: 'the same sandbox with --network none', value: sn.median } },
        { name: 'network part of a container start (difference of the medians)', value: sw.median - sn.median, unit: 'ms' },
      ],
      notes: [
        'For reference only (not measured in this run): docker network connect 67 ms and netavark setup 34 ms were measured on the same kind of 2-core machine (../shared/reference).',
        'Includes the records written to the state directory (a tmpfs here) and starting the container namespace\'s ip process.',
      ],
    };
  } finally {
    await engine.close();
  }
}
