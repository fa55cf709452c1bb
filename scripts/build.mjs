#!/usr/bin/env node
// Bundles each entry point into one ESM file under dist/ (fast start: one file to load, no
// TypeScript at run time). `tsc --noEmit` (npm test) does the type checking.
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const entries = {
  tsnet: 'cli/main.ts',
  shim: 'runtime/shim-main.ts',
  // CNI plugin binaries (issue #6): one bundle each, started by container runtimes.
  'tsnet-bridge': 'plugins/cni/bin/tsnet-bridge.ts',
  'tsnet-ipam': 'plugins/cni/bin/tsnet-ipam.ts',
  'tsnet-portmap': 'plugins/cni/bin/tsnet-portmap.ts',
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
for (const e of ['tsnet', 'tsnet-bridge', 'tsnet-ipam', 'tsnet-portmap']) chmodSync(`${root}/dist/${e}.js`, 0o755);
console.log(`build: ${Object.keys(entries).map((e) => `dist/${e}.js`).join(', ')} in ${Date.now() - t0} ms`);
