#!/usr/bin/env node
// Bundles each entry point into one ESM file under dist/ (fast start: one file to load, no
// TypeScript at run time). `tsc --noEmit` (npm test) does the type checking.
import { build } from 'esbuild';
import { chmodSync, copyFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const entries = {
  tsnet: 'cli/main.ts',
  shim: 'runtime/shim-main.ts',
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
  banner: { js: "import { createRequire as __tsnetCreateRequire } from 'node:module'; const require = __tsnetCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
chmodSync(`${root}/dist/tsnet.js`, 0o755);

// CNI plugin binaries (issue #6): one minified CommonJS bundle shared by the three plugins, and a
// small loader per plugin name that runs it through a V8 code cache (see plugins/cni/bin/loader.cjs).
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
export const CNI_PLUGINS = ['tsnet-bridge', 'tsnet-ipam', 'tsnet-portmap'];
for (const p of CNI_PLUGINS) {
  copyFileSync(`${root}/plugins/cni/bin/loader.cjs`, `${root}/dist/${p}.cjs`);
  chmodSync(`${root}/dist/${p}.cjs`, 0o755);
}
rmSync(`${root}/dist/tsnet-cni.cjs.cache`, { force: true });
// The first run writes the code cache.
execFileSync(process.execPath, [`${root}/dist/tsnet-bridge.cjs`], { env: { CNI_COMMAND: 'VERSION' }, input: '{}', stdio: ['pipe', 'ignore', 'inherit'] });
console.log(`build: ${[...Object.keys(entries).map((e) => `dist/${e}.js`), 'dist/tsnet-cni.cjs', ...CNI_PLUGINS.map((p) => `dist/${p}.cjs`)].join(', ')} in ${Date.now() - t0} ms`);
