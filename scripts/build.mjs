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
  lib: 'lib/index.ts', // the library API: package.json exports "." (types: `--types`)
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
console.log(`build: ${Object.keys(entries).map((e) => `dist/${e}.js`).join(', ')} in ${Date.now() - t0} ms`);
// `--types`: the library's declarations (dist/types) for TypeScript consumers of `import ... from
// 'tsnet'`. Slow (a full tsc pass), so only `npm run build` asks for it, not the test runs.
if (process.argv.includes('--types')) {
  const t1 = Date.now();
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(process.execPath, [`${root}/node_modules/typescript/bin/tsc`, '-p', `${root}/tsconfig.lib.json`], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
  console.log(`build: dist/types in ${Date.now() - t1} ms`);
}
