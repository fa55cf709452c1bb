/**
 * `import { createController } from 'tsnet'` works for a TypeScript consumer: the package is laid
 * out as it would be installed (package.json with its `exports` map, the bundled dist/lib.js, the
 * declarations from tsconfig.lib.json), a consumer project type-checks against it under strict
 * NodeNext settings (a misuse is a type error; the README's example compiles), and imports it by
 * name at run time.
 */
import t from 'tap';
import { build } from 'esbuild';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execDetails, run } from '../../sys/exec.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

const CONSUMER = `
import { createController, TsnetError, type ClosableController, type NetworkRecord, type TsnetEvents } from 'tsnet';

export async function setup(stateDir: string): Promise<NetworkRecord> {
  const c: ClosableController = await createController({ stateDir, runDir: stateDir, firewall: 'none', log: 'error' });
  const seen: TsnetEvents['endpoint.joined'][] = [];
  const stop = c.on('endpoint.joined', (e) => {
    const addr: string | undefined = e.endpoint.addresses[0];
    if (addr !== undefined) seen.push(e);
  });
  // @ts-expect-error unknown event names are type errors
  c.on('network.exploded', () => undefined);
  // @ts-expect-error a network request needs a name
  await c.createNetwork({ driver: 'bridge' }).catch(() => undefined);
  const n = await c.createNetwork({ name: 'web', subnets: [{ subnet: '10.1.0.0/24' }] });
  stop();
  await c.close();
  return n;
}
export const isTsnetError = (e: unknown): boolean => e instanceof TsnetError && e.code === 'INVALID_CONFIG';
`;

const RUNTIME = `
import { createController, TsnetError } from 'tsnet';
const r = await createController({ firewall: 'bogus' }).then(() => 'resolved', (e) => e instanceof TsnetError ? e.code + ': ' + e.message : 'other: ' + e);
process.stdout.write(JSON.stringify({ type: typeof createController, r }));
`;

t.test('a consumer project imports tsnet by name, typed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsnet-consumer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pkg = join(dir, 'node_modules/tsnet');
  await mkdir(join(pkg, 'dist'), { recursive: true });
  await copyFile(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  await build({ absWorkingDir: ROOT, entryPoints: { lib: 'lib/index.ts' }, outdir: join(pkg, 'dist'), bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'error',
    banner: { js: "import { createRequire as __c } from 'node:module'; const require = __c(import.meta.url);" } });
  await run([process.execPath, TSC, '-p', join(ROOT, 'tsconfig.lib.json'), '--outDir', join(pkg, 'dist/types')], { timeoutMs: 120_000 });
  // What the declarations import (zod types) and the consumer's own @types/node.
  await mkdir(join(dir, 'node_modules/@types'), { recursive: true });
  await symlink(join(ROOT, 'node_modules/zod'), join(dir, 'node_modules/zod'));
  await symlink(join(ROOT, 'node_modules/@types/node'), join(dir, 'node_modules/@types/node'));
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', type: 'module', private: true }));
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, exactOptionalPropertyTypes: true, noEmit: true, types: ['node'], skipLibCheck: true },
    files: ['consumer.ts', 'bad.ts', 'readme-example.ts'],
  }));
  await writeFile(join(dir, 'consumer.ts'), CONSUMER);
  // The README's example, as printed there.
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const example = /## Using tsnet as a library[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  t.ok(example, 'the README has a library example');
  await writeFile(join(dir, 'readme-example.ts'), example ?? '');
  await writeFile(join(dir, 'bad.ts'), "import { createController } from 'tsnet';\nawait createController({ firewall: 'pf' });\n");
  // One tsc pass over both files: consumer.ts must be clean, bad.ts must have exactly its one error.
  const out = await run([process.execPath, TSC, '-p', join(dir, 'tsconfig.json')], { timeoutMs: 120_000 }).then(() => '', (err: unknown) => execDetails(err)?.stdout ?? String(err));
  const errors = out.split('\n').filter((l) => /error TS\d+/.test(l));
  t.same(errors.filter((l) => /readme-example\.ts\(/.test(l)), [], 'the README example type-checks');
  t.same(errors.filter((l) => /consumer\.ts\(/.test(l)), [], 'the consumer type-checks against the package (its @ts-expect-error lines are errors, so the types are not any)');
  t.equal(errors.length, 1, `one error in all: ${errors.join(' | ')}`);
  t.match(errors[0] ?? '', /bad\.ts\(2,\d+\): error TS2322: Type '"pf"' is not assignable/, 'a wrong option value is a type error');

  await writeFile(join(dir, 'run.mjs'), RUNTIME);
  const rt = await run([process.execPath, join(dir, 'run.mjs')], { timeoutMs: 30_000 });
  t.same(JSON.parse(rt.stdout), { type: 'function', r: 'INVALID_CONFIG: firewall: expected nftables, iptables, none, got "bogus"' }, 'imported by name at run time');
});
