// Loading the resolver's native fast path: the switch, a missing or foreign file, the real addon.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { TsnetError } from '../core/errors.js';
import { testAddonPath } from '../test/helpers/dns-native.js';
import { loadDnsNative } from './dns-native.js';

const dir = mkdtempSync(join(tmpdir(), 'dns-native-test-'));
const foreign = join(dir, 'foreign.cjs');
writeFileSync(foreign, 'module.exports = { open() {} };\n');
const missing = join(dir, 'missing.node');

t.test('the switch: off, a bad value names the field', async (t) => {
  for (const v of ['0', 'off', 'false', ' OFF ']) {
    const r = loadDnsNative(v, [testAddonPath()]);
    t.equal(r.addon, undefined, `${v}: off`);
    t.match(r.note, /^off \(TSNET_DNS_NATIVE=0\)/);
  }
  let err: unknown;
  try {
    loadDnsNative('maybe', []);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof TsnetError && err.code === 'INVALID_CONFIG' && err.details['field'] === 'TSNET_DNS_NATIVE' && /maybe/.test(err.message), 'INVALID_CONFIG naming TSNET_DNS_NATIVE and the value');
});

t.test('missing or foreign files: JS only, and the note says why', async (t) => {
  const r = loadDnsNative(undefined, [missing, foreign]);
  t.equal(r.addon, undefined);
  t.match(r.note, /^unavailable, UDP answered in JS: /);
  t.match(r.note, `${missing}: not found`);
  t.match(r.note, /foreign\.cjs: not the dns-fast addon \(no stop, reply, clear, stats\)/);
});

t.test('the built addon loads (default on, and with 1/on/true)', async (t) => {
  for (const v of [undefined, '1', 'on', 'true']) {
    const r = loadDnsNative(v, [missing, testAddonPath()]);
    t.type(r.addon?.open, 'function', `${String(v)}: loaded after the missing candidate`);
    t.match(r.note, /^active \(/);
  }
});
