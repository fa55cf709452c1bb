/**
 * `npm run bench`: every benchmark, each in its own isolated host, printed with ratios against the
 * baselines measured in the same run. Run through scripts/bench.mjs (which isolates the process).
 * Arguments narrow the run: `npm run bench -- netlink firewall`.
 */
import { assertIsolated, withIsolatedHost, type IsolatedHost } from '../test/helpers/isolated-host.js';
import { benchCni } from './cni.bench.js';
import { benchCnm } from './cnm.bench.js';
import { benchDns } from './dns.bench.js';
import { benchDocker } from './docker.bench.js';
import { benchFirewall } from './firewall.bench.js';
import { benchLab } from './lab.bench.js';
import { benchLifecycle } from './lifecycle.bench.js';
import { benchMultihost } from './multihost.bench.js';
import { benchNetlink } from './netlink.bench.js';
import { benchPorts } from './ports.bench.js';
import { formatSection, type BenchSection } from './report.js';
import { benchStore } from './store.bench.js';

assertIsolated();

/**
 * withIsolatedHost, but a section measured in full is reported even if the host's teardown then
 * fails (said in its notes): a 10-minute run is not lost to a cleanup error.
 */
async function isolated(bench: (host: IsolatedHost) => Promise<BenchSection>): Promise<BenchSection> {
  let got: BenchSection | undefined;
  try {
    await withIsolatedHost(async (host) => {
      got = await bench(host);
    });
  } catch (err) {
    if (got === undefined) throw err;
    return { ...got, notes: [...(got.notes ?? []), `the isolated host's teardown failed afterwards: ${err instanceof Error ? err.message : String(err)}`] };
  }
  if (got === undefined) throw new Error('the benchmark returned nothing');
  return got;
}
const all: Record<string, () => Promise<BenchSection>> = {
  netlink: () => isolated((host) => benchNetlink(host, { n: 50 })),
  firewall: () => isolated((host) => benchFirewall(host)),
  store: () => benchStore(),
  cnm: () => isolated((host) => benchCnm(host, { n: 50 })),
  ports: () => isolated((host) => benchPorts(host)),
  dns: () => isolated((host) => benchDns(host, { seconds: Number(process.env['TSNET_BENCH_DNS_SECONDS'] ?? 10), fuzz: Number(process.env['TSNET_BENCH_DNS_FUZZ'] ?? 1_000_000) })),
  docker: () => isolated((host) => benchDocker(host, { n: 10 })),
  cni: () => isolated((host) => benchCni(host, { n: 50, crowd: 200, parallel: 200 })),
  lab: () => isolated((host) => benchLab(host, {
    sizes: (process.env['TSNET_BENCH_LAB_SIZES'] ?? '10,50').split(',').map(Number),
    big: Number(process.env['TSNET_BENCH_LAB_BIG'] ?? 200),
  })),
  lifecycle: () => isolated((host) => benchLifecycle(host, {
    total: Number(process.env['TSNET_BENCH_LIFECYCLE_TOTAL'] ?? 1000),
    window: Number(process.env['TSNET_BENCH_LIFECYCLE_WINDOW'] ?? 10),
  })),
  multihost: () => isolated((host) => benchMultihost(host, { n: 10 })),
};
const wanted = process.argv.slice(2).filter((a) => a !== '--');
const names = wanted.length > 0 ? wanted : Object.keys(all);
const started = Date.now();
let failed = 0;
for (const name of names) {
  const fn = all[name];
  if (!fn) {
    process.stderr.write(`unknown benchmark ${name} (known: ${Object.keys(all).join(', ')})\n`);
    process.exitCode = 2;
    continue;
  }
  const t0 = Date.now();
  try {
    const section = await fn();
    process.stdout.write(`\n${formatSection(section)}\n  (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
  } catch (err) {
    failed++;
    process.stdout.write(`\n## ${name}: FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  }
}
process.stdout.write(`\nbench: ${names.length - failed}/${names.length} sections in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
if (failed > 0) process.exitCode = 1;
