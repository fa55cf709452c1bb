/**
 * `tsnet lab` against Mininet, in an isolated host. Mininet's `linear,N` topology (N hosts, N
 * switches, 2N-1 links: h_i -- s_i, s_i -- s_i+1) as a tsnet lab file (hosts are containers,
 * switches `kind: bridge` nodes), brought up and down through the CLI (`tsnet lab up -f`, `tsnet lab
 * down`), against `mn --switch lxbr --controller none --topo linear,N --test none` (which builds
 * and removes the same in one command), for N = 10 and 50; then the up of a lab of 200 containers.
 * Every lab is checked to work before it is timed down: h1 pings hN through the chain of bridges.
 */
import pLimit from 'p-limit';
import { nullLogger } from '../core/log.js';
import { createEngine } from '../engine/engine.js';
import { TSNET_BIN, cliFor, okCli } from '../test/helpers/cli.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchRow, BenchSection } from './report.js';

/** Mininet's linear,N as a lab file: hosts h1..hN (10.0.0.i/8 on eth0), bridges s1..sN. */
export function linearLab(name: string, n: number): string {
  const lines = [`name: ${name}`, 'nodes:'];
  for (let i = 1; i <= n; i++) lines.push(`  h${i}: {}`, `  s${i}: { kind: bridge }`);
  lines.push('links:');
  for (let i = 1; i <= n; i++) {
    lines.push(`  - endpoints: [{ node: h${i}, interface: eth0, ipv4: 10.0.${Math.floor(i / 256)}.${i % 256}/8 }, "s${i}:h${i}"]`);
    if (i < n) lines.push(`  - endpoints: ["s${i}:s${i + 1}", "s${i + 1}:s${i}"]`);
  }
  return `${lines.join('\n')}\n`;
}

const seconds = (t0: number): number => performance.now() - t0;

async function timeMininet(host: IsolatedHost, n: number): Promise<number> {
  const t0 = performance.now();
  await host.exec(['mn', '--switch', 'lxbr', '--controller', 'none', '--topo', `linear,${n}`, '--test', 'none'], { timeoutMs: 300_000 });
  return seconds(t0);
}

export async function benchLab(host: IsolatedHost, opts: { readonly sizes?: readonly number[]; readonly big?: number } = {}): Promise<BenchSection> {
  const sizes = opts.sizes ?? [10, 50];
  const big = opts.big ?? 200;
  // Not the test helper's 60 s bound: a big lab on a loaded machine may take longer, and must be measured.
  const tsnet = (...args: string[]): Promise<unknown> => host.exec([process.execPath, TSNET_BIN, '--state-dir', host.stateDir, '--run-dir', host.runDir, ...args], { timeoutMs: 900_000 });
  const cli = okCli(cliFor(host));
  const dir = join(host.runDir, 'labs');
  await host.exec(['mkdir', '-p', dir]);
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const mnAvailable = await host.exec(['mn', '--version']).then(() => true, () => false);
  if (!mnAvailable) notes.push('mininet is not installed (scripts/setup.sh installs it): no baseline');
  for (const n of sizes) {
    const file = join(dir, `linear${n}.yaml`);
    await writeFile(file, linearLab(`lin${n}`, n));
    const t0 = performance.now();
    await tsnet('lab', 'up', '-f', file, '--parallel', '16');
    const up = seconds(t0);
    // The lab works: the first host reaches the last through every bridge.
    await cli('lab', 'exec', '--name', `lin${n}`, 'h1', '--', 'busybox', 'ping', '-c', '1', '-W', '2', `10.0.${Math.floor(n / 256)}.${n % 256}`);
    const t1 = performance.now();
    await tsnet('lab', 'down', '-f', file, '--parallel', '16');
    const down = seconds(t1);
    const mn = mnAvailable ? await timeMininet(host, n) : undefined;
    const total = up + down;
    rows.push({ name: `linear,${n}: lab up`, value: up, unit: 'ms' });
    rows.push({ name: `linear,${n}: lab down`, value: down, unit: 'ms' });
    rows.push({
      name: `linear,${n}: up+down (${n} containers, ${n} bridges, ${2 * n - 1} links)`, value: total, unit: 'ms',
      ...(mn !== undefined ? { baseline: { name: 'mn --switch lxbr linear (build+remove)', value: mn } } : {}),
      ...(n === 50 && mn !== undefined ? { goal: '<= 0.5x Mininet', met: total <= 0.5 * mn } : {}),
    });
  }
  try {
    const file = join(dir, `big${big}.yaml`);
    await writeFile(file, linearLab(`big${big}`, big));
    const t0 = performance.now();
    await tsnet('lab', 'up', '-f', file, '--parallel', '16');
    const up = seconds(t0);
    await cli('lab', 'exec', '--name', `big${big}`, 'h1', '--', 'busybox', 'ping', '-c', '1', '-W', '2', `10.0.${Math.floor(big / 256)}.${big % 256}`);
    const t1 = performance.now();
    await tsnet('lab', 'down', '-f', file, '--parallel', '16');
    rows.push({ name: `${big}-container lab up (linear,${big}: ${big} bridges, ${2 * big - 1} links)`, value: up, unit: 'ms', goal: '< 20 s', met: up < 20_000 });
    rows.push({ name: `${big}-container lab down`, value: seconds(t1), unit: 'ms' });
  } catch (err) {
    // Reported, not thrown: the rows above stay.
    notes.push(`${big}-container lab: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`);
    rows.push({ name: `${big}-container lab up`, value: Number.NaN, unit: 'ms', goal: '< 20 s', met: false });
    await tsnet('lab', 'down', '--name', `big${big}`).catch(() => undefined);
  }
  notes.push('tsnet through the CLI (a node process per command); Mininet one mn process for build and removal; same isolated host, same run');
  rows.push(...(await whereTheTimeGoes(host, sizes.at(-1) ?? 50)));
  if (big > (sizes.at(-1) ?? 50)) rows.push(...(await whereTheTimeGoes(host, big)));
  return { title: 'lab: Mininet linear,N as a lab file vs Mininet', rows, notes };
}

/**
 * The parts of a linear,N lab's up and down, each as its own batch through the engine in this
 * process (16 at once, as `lab up --parallel 16`): what a node costs the network model
 * (createSandbox) and the runtime (run: its shim process; remove), what links and bridges cost.
 */
async function whereTheTimeGoes(host: IsolatedHost, n: number): Promise<BenchRow[]> {
  const engine = await createEngine({
    stateDir: host.stateDir, runDir: host.runDir, firewall: 'nftables', log: nullLogger, hostNs: host.ns, shim: fileURLToPath(new URL('../dist/shim.js', import.meta.url)),
  });
  const c = engine.controller;
  const limit = pLimit(16);
  const all = async <T>(k: number, fn: (i: number) => Promise<T>): Promise<{ ms: number; out: T[] }> => {
    const t0 = performance.now();
    const out = await Promise.all(Array.from({ length: k }, (_, i) => limit(() => fn(i))));
    return { ms: performance.now() - t0, out };
  };
  try {
    await c.ensurePredefined();
    const serial = performance.now();
    for (let i = 0; i < 5; i++) await c.deleteSandbox((await c.createSandbox({ name: `w${i}`, mode: { kind: 'none' } })).record.id);
    const one = (performance.now() - serial) / 5;
    const sb = await all(n, (i) => c.createSandbox({ name: `p${i}`, mode: { kind: 'none' } }));
    const sw = await all(n, (i) => c.createSwitch({ name: `pb${i}` }));
    const run = await all(n, (i) => engine.runtime.run({ id: sb.out[i]?.record.id ?? '', name: `p${i}`, argv: ['sleep', 'infinity'], netns: sb.out[i]?.netns ?? { kind: 'host' } }, { detach: true }));
    const links = await all(2 * n - 1, (i) => c.createLink({
      ends: i < n ? [{ sandbox: sb.out[i]?.record.id ?? '', ifName: 'eth0', addresses: [`10.0.0.${i + 1}/8`] }, { switch: `pb${i}` }] : [{ switch: `pb${i - n}` }, { switch: `pb${i - n + 1}` }],
    }));
    const unlink = await all(n - 1, (i) => c.deleteLink(links.out[n + i]?.id ?? ''));
    const rm = await all(n, (i) => engine.runtime.remove(`p${i}`, { force: true }));
    const rmSw = await all(n, (i) => c.deleteSwitch(`pb${i}`));
    const row = (name: string, ms: number, k: number): BenchRow => ({ name: `${name.replace('where the time goes', `where the time goes (N=${n})`)}: ${k} in ${Math.round(ms)} ms, per item`, value: ms / k, unit: 'ms' });
    return [
      { name: `where the time goes (N=${n}): one createSandbox+deleteSandbox alone (no network)`, value: one, unit: 'ms' },
      row(`where the time goes: controller.createSandbox (the netns, its ip helper, files; under the "sandboxes" lock)`, sb.ms, n),
      row('where the time goes: runtime.run (the shim process and the container)', run.ms, n),
      row('where the time goes: controller.createSwitch', sw.ms, n),
      row('where the time goes: controller.createLink', links.ms, 2 * n - 1),
      row('where the time goes: controller.deleteLink (bridge to bridge)', unlink.ms, n - 1),
      row('where the time goes: runtime.remove (kill, wait, the shim; then deleteSandbox: the namespace, its links with it)', rm.ms, n),
      row('where the time goes: controller.deleteSwitch', rmSw.ms, n),
    ];
  } finally {
    await engine.close();
  }
}
