/**
 * The network model through the library API (no process start counted), in an isolated host:
 * network create/delete, endpoint create+join (connect) and leave (disconnect), and a sandbox with
 * its network vs one without (the network part of a container start).
 */
import { nullLogger } from '../core/log.js';
import { createEngine } from '../engine/engine.js';
import { cliFor, okCli } from '../test/helpers/cli.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { sample, stats, type BenchSection } from './report.js';

export async function benchCnm(host: IsolatedHost, opts: { readonly n?: number } = {}): Promise<BenchSection> {
  const n = opts.n ?? 50;
  await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  const engine = await createEngine({ stateDir: host.stateDir, runDir: host.runDir, firewall: 'nftables', log: nullLogger, hostNs: host.ns });
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
    // By id, as an engine calls it (a name is resolved by listing every sandbox: O(containers)).
    const ids: string[] = [];
    for (let i = 0; i < n + 3; i++) ids.push((await c.createSandbox({ name: `s${i}`, mode: { kind: 'none' } })).record.id);
    const netId = (await c.findNetwork('bench')).id;
    const connect = await sample(n, async (i) => c.connect(ids[i + 3] ?? ids[0] ?? '', netId), 0);
    const disconnect = await sample(n, async (i) => c.disconnect(ids[i + 3] ?? '', netId), 0);
    for (const id of ids) await c.deleteSandbox(id);
    // A whole sandbox (namespace + loopback + files [+ endpoint]) with and without a network.
    const none = await sample(Math.min(n, 30), async () => c.createSandbox({ name: `none${k++}`, mode: { kind: 'none' } }));
    const withNet = await sample(Math.min(n, 30), async () => c.createSandbox({ name: `net${k++}`, mode: { kind: 'network', network: 'bench' } }));
    for (const sb of await c.listSandboxes()) await c.deleteSandbox(sb.id);
    await c.deleteNetwork('bench');
    // `tsnet run -d` through the CLI (a process start, the runtime's shim, the network), N=10 each.
    const cli = okCli(cliFor(host));
    await cli('network', 'create', 'benchcli');
    let r = 0;
    const runOn = async (network: string): Promise<number[]> =>
      sample(10, async () => {
        await cli('run', '-d', '--name', `r${r++}`, '--network', network, '--', 'sleep', '600');
      }, 1);
    const runNone = await runOn('none');
    const runNet = await runOn('benchcli');
    for (const id of (await cli('ps', '-aq')).split('\n').filter(Boolean)) await cli('rm', '-f', id);
    await cli('network', 'rm', 'benchcli');
    const sc = stats(connect);
    const sd = stats(disconnect);
    const sn = stats(none);
    const sw = stats(withNet);
    return {
      title: 'CNM through the library API (isolated host, nftables backend)',
      rows: [
        { name: 'network create (bridge + gateway + firewall policy), median of 20', value: stats(netCreate).median, unit: 'ms' },
        { name: 'network delete, median of 20', value: stats(netDelete).median, unit: 'ms' },
        { name: `endpoint create+join (connect a running sandbox, by id), median of ${n}`, value: sc.median, unit: 'ms', goal: '<= 10 ms p50', met: sc.median <= 10 },
        { name: `endpoint create+join, p95 of ${n}`, value: sc.p95, unit: 'ms' },
        { name: `endpoint leave+delete (disconnect), median of ${n}`, value: sd.median, unit: 'ms' },
        { name: 'sandbox with a network, median of 30', value: sw.median, unit: 'ms', baseline: { name: 'the same sandbox with --network none', value: sn.median } },
        { name: 'network part of a container start (difference of the medians)', value: sw.median - sn.median, unit: 'ms' },
        { name: '`tsnet run -d` on a bridge network (CLI process + runtime + network), median of 10', value: stats(runNet).median, unit: 'ms', baseline: { name: '`tsnet run -d --network none`', value: stats(runNone).median } },
        { name: 'network part of `tsnet run` (difference of the medians)', value: stats(runNet).median - stats(runNone).median, unit: 'ms' },
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
