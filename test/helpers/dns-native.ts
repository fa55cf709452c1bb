/**
 * The dns-fast addon for tests: dist/dns-fast.node as built by scripts/build.mjs, else compiled
 * from native/dns-fast.c into a temporary file (gcc and node's headers are in scripts/setup.sh).
 * Throws if neither works: the native tests are not skipped, they fail.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DnsNativeAddon } from '../../dns/server.js';

export const BUILT_ADDON = fileURLToPath(new URL('../../dist/dns-fast.node', import.meta.url));

export function testAddonPath(): string {
  if (existsSync(BUILT_ADDON)) return BUILT_ADDON;
  const out = join(mkdtempSync(join(tmpdir(), 'dns-fast-')), 'dns-fast.node');
  execFileSync('gcc', ['-O2', '-shared', '-fPIC', '-I/usr/include/node', '-o', out, fileURLToPath(new URL('../../native/dns-fast.c', import.meta.url)), '-lpthread'], { stdio: 'inherit' });
  return out;
}

export function loadTestAddon(): DnsNativeAddon {
  return createRequire(import.meta.url)(testAddonPath()) as DnsNativeAddon;
}
