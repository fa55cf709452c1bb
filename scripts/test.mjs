#!/usr/bin/env node
// `npm test`: type check, then every test file through tap. As root, everything (unit,
// privileged integration, end-to-end) runs inside a throwaway network+mount namespace
// (scripts/isolate.mjs), so nothing can touch the machine's real network. As non-root, the unit
// tests run and the privileged ones are listed as skipped, with the reason.
// Ends with one line `N passed, N failed, N skipped` (leaf assertions), the line CI reads.
// Options: file or directory arguments narrow the run (`npm test -- sys/firewall`).
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser } from 'tap-parser';

const root = fileURLToPath(new URL('..', import.meta.url));
process.chdir(root);
const SOURCE_DIRS = ['core', 'sys', 'ipam', 'drivers', 'dns', 'cnm', 'plugins', 'runtime', 'engine', 'lab', 'cluster', 'cli', 'lib', 'test', 'bench'];
const isRoot = process.getuid?.() === 0;
const filters = process.argv.slice(2);

function walk(dir, out) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'node_modules' && e.name !== 'golden' && e.name !== 'fixtures') walk(p, out);
    } else if (e.name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

let files = SOURCE_DIRS.flatMap((d) => walk(d, [])).sort();
if (filters.length > 0) files = files.filter((f) => filters.some((flt) => f === flt || f.startsWith(flt.replace(/\/?$/, '/')) || f.startsWith(flt)));
const priv = files.filter((f) => f.endsWith('.priv.test.ts'));
const unpriv = files.filter((f) => !f.endsWith('.priv.test.ts'));

// 1. Type check (strict): a type error fails the run before any test.
const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '--noEmit', '-p', 'tsconfig.json'], { stdio: 'inherit' });
if (tsc.status !== 0) {
  console.log('typecheck failed');
  console.log('0 passed, 1 failed');
  process.exit(1);
}
console.log('typecheck: ok');
// 2. Build the bundles the end-to-end tests and the runtime's shim run.
const build = spawnSync(process.execPath, [join(root, 'scripts/build.mjs')], { stdio: 'inherit' });
if (build.status !== 0) {
  console.log('build failed');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

let skippedFiles = [];
let toRun = files;
if (!isRoot) {
  toRun = unpriv;
  skippedFiles = priv;
}
if (toRun.length === 0) {
  console.log('no test files matched');
  console.log('0 passed, 0 failed');
  process.exit(filters.length > 0 ? 1 : 0);
}

const tapBin = join(root, 'node_modules/tap/dist/esm/run.mjs');
const tapArgs = [tapBin, '-R', 'tap', '--jobs=2', ...toRun];
const argv = isRoot ? [process.execPath, join(root, 'scripts/isolate.mjs'), '--enter', '--', process.execPath, ...tapArgs] : [process.execPath, ...tapArgs];
console.log(`running ${toRun.length} test files${isRoot ? ' (as root, isolated: unit + privileged)' : ' (not root: unit only)'}`);

const counts = { pass: 0, fail: 0, skip: 0, todo: 0 };
const failures = [];
const fileLines = [];

function attach(parser, path) {
  const childNames = new Set();
  parser.on('child', (c) => {
    childNames.add(c.name);
    attach(c, [...path, c.name]);
  });
  parser.on('assert', (res) => {
    const isSummary = childNames.has(res.name) && !res.skip;
    if (path.length === 0) fileLines.push(`${res.ok ? 'ok    ' : 'FAIL  '} ${res.name}${res.time ? ` (${Math.round(res.time)} ms)` : ''}${res.skip ? ` # SKIP ${res.skip}` : ''}`);
    if (isSummary) {
      const fileFailed = failures.some((f) => f.path[0] === res.name);
      if (path.length === 0 && !res.ok && !fileFailed) {
        counts.fail++;
        failures.push({ path: [...path, res.name], name: 'process', diag: res.diag });
      }
      return;
    }
    if (res.todo) counts.todo++;
    else if (res.skip) counts.skip++;
    else if (res.ok) counts.pass++;
    else {
      counts.fail++;
      failures.push({ path, name: res.name, diag: res.diag });
    }
  });
}

const parser = new Parser();
attach(parser, []);
// DISABLE_V8_COMPILE_CACHE: tap's TypeScript loader (ts-node) keeps a V8 code cache in /tmp that
// two test processes can write at once; a torn cache crashed a test process with SIGILL in V8's
// deserializer (once in six full runs). Without it each test file compiles the loader anew.
const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FORCE_COLOR: '0', DISABLE_V8_COMPILE_CACHE: '1' } });
const rawLog = [];
child.stdout.on('data', (d) => {
  rawLog.push(d);
  parser.write(d);
});
const code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
parser.end();
await new Promise((r) => setImmediate(r));

for (const l of fileLines) console.log(l);
for (const f of failures) {
  console.log(`\nnot ok: ${[...f.path, f.name].join(' > ')}`);
  if (f.diag) {
    const d = { ...f.diag };
    delete d.source;
    console.log(JSON.stringify(d, null, 2).split('\n').slice(0, 40).map((l) => `    ${l}`).join('\n'));
  }
}
if (skippedFiles.length > 0) {
  const nTests = skippedFiles.reduce((n, f) => n + (readFileSync(f, 'utf8').match(/\bt\.test\(/g) ?? []).length, 0);
  console.log(`\nSKIPPED ${skippedFiles.length} privileged test files (${nTests} tests): they need root (real namespaces, bridges, firewall rules); run \`sudo npm test\` to include them:`);
  for (const f of skippedFiles) console.log(`  - ${f}`);
  counts.skip += nTests;
}
if (code !== 0 && counts.fail === 0) {
  console.log(`\ntap exited with code ${code} without a failed assertion; raw output follows`);
  console.log(Buffer.concat(rawLog).toString().split('\n').slice(-60).join('\n'));
  counts.fail++;
}
console.log(`\n${counts.pass} passed, ${counts.fail} failed, ${counts.skip} skipped${counts.todo ? `, ${counts.todo} todo` : ''}`);
process.exit(counts.fail > 0 || code !== 0 ? 1 : 0);
