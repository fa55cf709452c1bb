#!/usr/bin/env node
// Bundles each entry point into one ESM file under dist/ (fast start: one file to load, no
// TypeScript at run time). `tsc --noEmit` (npm test) does the type checking.
import { build } from 'esbuild';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
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
await writeCniBinaries(`${root}/dist`);

/**
 * Writes dist/tsnet-cni.blob, a V8 startup snapshot with the whole bundle already evaluated (the
 * plugin starts like an empty `node`: measured ~50 ms CPU instead of ~95 ms with the code cache),
 * and the three plugin binaries. A binary's shebang names the snapshot by absolute path; when the
 * snapshot cannot be built (or the path cannot go in a shebang), the binaries run the bundle
 * through the V8 code cache instead (plugins/cni/bin/loader.cjs). `tsnet cni install` redoes
 * this in the installation directory.
 */
export async function writeCniBinaries(dirIn) {
  const dir = resolve(dirIn);
  const bundle = readFileSync(`${dir}/tsnet-cni.cjs`, 'utf8').replace(/^\/\/# sourceMappingURL=.*$/m, '');
  const blob = `${dir}/tsnet-cni.blob`;
  const builder = `${dir}/tsnet-cni.snapshot-builder.cjs`;
  writeFileSync(builder, [
    'const module = { exports: {} };',
    `(function (module, exports) {\n${bundle}\n})(module, module.exports);`,
    "const { basename } = require('node:path');",
    'module.exports.preload().then(() => {',
    "  require('node:v8').startupSnapshot.setDeserializeMainFunction(() => {",
    "    void module.exports.runPlugin(basename(process.argv[1] ?? '').replace(/\\.cjs$/, '').replace(/^tsnet-/, ''));",
    '  });',
    '});',
    '',
  ].join('\n'));
  rmSync(blob, { force: true });
  let snapshot = false;
  if (/^[A-Za-z0-9_.\/-]+$/.test(blob) && blob.length < 180) {
    try {
      execFileSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', builder], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env.PATH ?? '' } });
      snapshot = true;
    } catch (err) {
      console.warn(`build: no V8 snapshot for the CNI plugins (${String(err.stderr ?? err.message).trim().split('\n').pop()}); they use the code cache`);
    }
  }
  rmSync(builder, { force: true });
  const loader = readFileSync(`${root}/plugins/cni/bin/loader.cjs`, 'utf8').split('\n').slice(1).join('\n');
  const shebang = snapshot ? `#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node --snapshot-blob ${blob}` : '#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node';
  for (const p of CNI_PLUGINS) {
    writeFileSync(`${dir}/${p}.cjs`, `${shebang}\n${loader}`);
    chmodSync(`${dir}/${p}.cjs`, 0o755);
  }
  rmSync(`${dir}/tsnet-cni.cjs.cache`, { force: true });
  // The first run writes the code cache (used when the snapshot is missing or rejected).
  execFileSync(process.execPath, [`${dir}/tsnet-bridge.cjs`], { env: { CNI_COMMAND: 'VERSION' }, input: '{}', stdio: ['pipe', 'ignore', 'inherit'] });
  if (snapshot) execFileSync(`${dir}/tsnet-bridge.cjs`, [], { env: { CNI_COMMAND: 'VERSION', PATH: process.env.PATH ?? '' }, input: '{}', stdio: ['pipe', 'ignore', 'inherit'] });
  return { snapshot };
}
console.log(`build: ${[...Object.keys(entries).map((e) => `dist/${e}.js`), 'dist/tsnet-cni.cjs', 'dist/tsnet-cni.blob', ...CNI_PLUGINS.map((p) => `dist/${p}.cjs`)].join(', ')} in ${Date.now() - t0} ms`);
