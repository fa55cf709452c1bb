/**
 * A clone of this repository under /tmp runs its own tests and demo. scripts/isolate.mjs mounts a
 * tmpfs over /tmp and /run, which used to hide such a checkout ("Cannot find module
 * .../node_modules/tap/..."); it now keeps the checkout and the working directory visible. The clone
 * lives in this test's own /tmp (a tmpfs of the isolation this test runs in), its npm runs isolate
 * themselves once more, inside it.
 */
import t from 'tap';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execDetails, run } from '../../sys/exec.js';
import { assertIsolated, skipUnlessRoot } from '../helpers/isolated-host.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

async function npm(dir: string, args: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await run(['npm', '--prefix', dir, ...args], { timeoutMs: 300_000, env: { HOME: process.env['HOME'] ?? '/root', CI: 'true', TSNET_ISOLATE_KEEP: ROOT } });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const d = execDetails(err);
    if (!d) throw err;
    return { code: d.exitCode ?? 1, out: d.stdout + d.stderr };
  }
}

t.test('a clone under /tmp: npm test -- core and npm run demo', { skip: skipUnlessRoot }, async (t) => {
  assertIsolated();
  const dir = await mkdtemp('/tmp/tsnet-clone-');
  try {
    const clone = join(dir, 'tsnet');
    await run(['git', 'clone', '--quiet', '--no-hardlinks', ROOT, clone], { timeoutMs: 120_000 });
    // The dependencies as `npm ci` would lay them out (copied: no registry needed).
    await cp(join(ROOT, 'node_modules'), join(clone, 'node_modules'), { recursive: true, verbatimSymlinks: true });
    const test = await npm(clone, ['test', '--', 'core']);
    t.equal(test.code, 0, `npm test -- core exits 0 from ${clone}`);
    t.match(test.out, /^(\d+) passed, 0 failed/m, 'tests ran and passed');
    t.notMatch(test.out, /Cannot find module/, 'the checkout stayed visible inside the isolation');
    const passed = Number(/^(\d+) passed/m.exec(test.out)?.[1] ?? 0);
    t.ok(passed > 0, `${passed} assertions passed`);
    const demo = await npm(clone, ['run', 'demo']);
    t.equal(demo.code, 0, 'npm run demo exits 0');
    t.match(demo.out, /^demo: ok$/m, 'the demo ran to its end');
    if (test.code !== 0 || demo.code !== 0) t.comment(`${test.out.slice(-3000)}\n${demo.out.slice(-3000)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
