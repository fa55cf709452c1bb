#!/usr/bin/env node
// `npm run bench`: builds, then runs bench/main.ts inside a throwaway network+mount namespace.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
if (process.getuid?.() !== 0) {
  console.error('bench: needs root (it creates namespaces, bridges and firewall rules inside a throwaway namespace)');
  process.exit(77);
}
const build = spawnSync(process.execPath, [`${root}/scripts/build.mjs`], { stdio: 'inherit' });
if (build.status !== 0) process.exit(1);
const r = spawnSync(process.execPath, [`${root}/scripts/isolate.mjs`, '--enter', '--', process.execPath, '--import', 'tsx', `${root}/bench/main.ts`, ...process.argv.slice(2)], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
