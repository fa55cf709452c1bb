/**
 * Loads the embedded resolver's native UDP fast path (native/dns-fast.c, built by scripts/build.mjs
 * into dist/dns-fast.node when a C compiler is present). Missing, unloadable or switched off
 * (TSNET_DNS_NATIVE=0): the resolver answers everything in JS, exactly as without it, and says why.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { TsnetError } from '../core/errors.js';
import type { DnsNativeAddon } from '../dns/server.js';

export type DnsNativeLoad =
  | { readonly addon: DnsNativeAddon; readonly note: string }
  | { readonly addon?: undefined; readonly note: string };

const SWITCH = { '1': true, on: true, true: true, '0': false, off: false, false: false } as const satisfies Record<string, boolean>;

/** Where the addon is looked for: beside the bundle (dist/tsnet.js), else dist/ of a source checkout (cli/*.ts). */
export const DNS_NATIVE_CANDIDATES: readonly string[] = [
  fileURLToPath(new URL('./dns-fast.node', import.meta.url)),
  fileURLToPath(new URL('../dist/dns-fast.node', import.meta.url)),
];

/** `setting`: TSNET_DNS_NATIVE (default on). Never throws for a missing or broken addon; throws INVALID_CONFIG for a bad setting. */
export function loadDnsNative(setting: string | undefined, candidates: readonly string[] = DNS_NATIVE_CANDIDATES): DnsNativeLoad {
  const raw = (setting ?? '1').trim().toLowerCase();
  if (!Object.hasOwn(SWITCH, raw)) {
    throw new TsnetError('INVALID_CONFIG', `TSNET_DNS_NATIVE: expected 1/on/true or 0/off/false, got ${JSON.stringify(setting)}`, { details: { field: 'TSNET_DNS_NATIVE' } });
  }
  if (!SWITCH[raw as keyof typeof SWITCH]) return { note: 'off (TSNET_DNS_NATIVE=0): UDP answered in JS' };
  const require = createRequire(import.meta.url);
  const errors: string[] = [];
  for (const path of candidates) {
    let mod: unknown;
    try {
      mod = require(path);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      errors.push(code === 'MODULE_NOT_FOUND' ? `${path}: not found` : `${path}: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    const m = mod as Record<string, unknown>;
    const missing = ['open', 'stop', 'reply', 'clear', 'stats'].filter((k) => typeof m[k] !== 'function');
    if (missing.length > 0) {
      errors.push(`${path}: not the dns-fast addon (no ${missing.join(', ')})`);
      continue;
    }
    return { addon: mod as DnsNativeAddon, note: `active (${path})` };
  }
  return { note: `unavailable, UDP answered in JS: ${errors.join('; ')}` };
}
