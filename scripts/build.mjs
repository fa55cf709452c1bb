#!/usr/bin/env node
// Bundles each entry point into one ESM file under dist/ (fast start: one file to load, no
// TypeScript at run time). `tsc --noEmit` (npm test) does the type checking.
import { build } from 'esbuild';
import { chmodSync, copyFileSync, existsSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const entries = {
  tsnet: 'cli/main.ts',
  shim: 'runtime/shim-main.ts',
  lib: 'lib/index.ts', // the library API: package.json exports "." (types: `--types`)
  'lock-proxy': 'sys/store/lock-proxy-main.ts', // locks in the host's netns for a library outside it (sys/store/lock-proxy.ts)
};
const t0 = Date.now();
await build({
  absWorkingDir: root,
  entryPoints: entries,
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  legalComments: 'none',
  // Loaded from node_modules, lazily, never bundled: node-pty is a native addon (the pty of
  // `exec -t`, `run -t`); prom-client only with --metrics-address; Graphviz in WebAssembly (1.2 MB)
  // only by `tsnet lab graph` (inlined, every tsnet start would read and parse it).
  external: ['node-pty', 'prom-client', '@viz-js/viz'],
  banner: { js: "import { createRequire as __tsnetCreateRequire } from 'node:module'; const require = __tsnetCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
chmodSync(`${root}/dist/tsnet.js`, 0o755);

// CNI plugin binaries (issue #6): one minified CommonJS bundle shared by the three plugins, started
// from a V8 startup snapshot (or a code cache); see cli/commands/cni.ts and plugins/cni/bin/loader.cjs.
await build({
  absWorkingDir: root,
  entryPoints: { 'tsnet-cni': 'plugins/cni/main.ts' },
  outdir: 'dist',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  minify: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
});
// The loader goes beside the bundle; `tsnet cni install` (cli/commands/cni.ts) writes the three
// binaries (named .cjs here: dist/ is a "type": "module" package), the V8 startup snapshot and the
// code cache, exactly as it does in /opt/cni/bin.
copyFileSync(`${root}/plugins/cni/bin/loader.cjs`, `${root}/dist/tsnet-cni-loader.cjs`);
copyFileSync(`${root}/plugins/cni/bin/client.c`, `${root}/dist/tsnet-cni-client.c`);
execFileSync(process.execPath, [`${root}/dist/tsnet.js`, 'cni', 'install', '--bin-dir', `${root}/dist`, '--conf-dir', '', '--suffix', '.cjs'], { stdio: ['ignore', 'ignore', 'inherit'] });
// The embedded resolver's native UDP fast path (native/dns-fast.c, node-api, no node-gyp): built
// when a C compiler and Node's headers are here; without it the resolver answers in JS (and says so).
const native = (() => {
  const cc = process.env.CC ?? 'gcc';
  const include = ['/usr/include/node', `${dirname(dirname(process.execPath))}/include/node`].find((d) => existsSync(`${d}/node_api.h`));
  if (include === undefined) return 'dist/dns-fast.node skipped (no node_api.h)';
  // Written beside and renamed over: a running daemon has the old file mapped (rewriting it in place would crash it).
  const tmp = `${root}/dist/.dns-fast.node.${process.pid}`;
  const r = spawnSync(cc, ['-O2', '-Wall', '-shared', '-fPIC', `-I${include}`, '-o', tmp, `${root}/native/dns-fast.c`, '-lpthread'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error !== undefined || r.status !== 0) {
    rmSync(tmp, { force: true });
    rmSync(`${root}/dist/dns-fast.node`, { force: true });
    return `dist/dns-fast.node skipped (${r.error?.message ?? `${cc} exited ${r.status}`})`;
  }
  renameSync(tmp, `${root}/dist/dns-fast.node`);
  return 'dist/dns-fast.node';
})();
// Small C programs of the runtime and the CLI (no node-api): the container supervisor
// (native/supervise.c), the daemon's watchdog (native/watchdog.c) and the `tsnet` front end
// (cli/bin/front.c, package.json's bin). Without a C compiler the runtime uses the Node supervisor
// for every container, a daemon the CLI starts runs unwatched, and dist/tsnet is a link to the Node
// CLI (same behaviour, slower start, more memory).
const programs = [['tsnet-supervise', 'native/supervise.c'], ['tsnet-watchdog', 'native/watchdog.c'], ['tsnet', 'cli/bin/front.c']].map(([name, src]) => {
  const cc = process.env.CC ?? 'gcc';
  const tmp = `${root}/dist/.${name}.${process.pid}`;
  const r = spawnSync(cc, ['-O2', '-Wall', '-o', tmp, `${root}/${src}`], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error !== undefined || r.status !== 0) {
    rmSync(tmp, { force: true });
    rmSync(`${root}/dist/${name}`, { force: true });
    if (name === 'tsnet') symlinkSync('tsnet.js', `${root}/dist/tsnet`);
    return `dist/${name} skipped (${r.error?.message ?? `${cc} exited ${r.status}`})`;
  }
  renameSync(tmp, `${root}/dist/${name}`); // a running process keeps its own copy mapped
  return `dist/${name}`;
});
console.log(`build: ${[...Object.keys(entries).map((e) => `dist/${e}.js`), 'dist/tsnet-cni.cjs', 'dist/tsnet-cni.blob', 'dist/tsnet-{bridge,ipam,portmap}.cjs', native, ...programs].join(', ')} in ${Date.now() - t0} ms`);
// `--types`: the library's declarations (dist/types) for TypeScript consumers of `import ... from
// 'tsnet'`. Slow (a full tsc pass), so only `npm run build` asks for it, not the test runs.
if (process.argv.includes('--types')) {
  const t1 = Date.now();
  const r = spawnSync(process.execPath, [`${root}/node_modules/typescript/bin/tsc`, '-p', `${root}/tsconfig.lib.json`], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
  console.log(`build: dist/types in ${Date.now() - t1} ms`);
}
