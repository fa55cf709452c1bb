/**
 * macvlan network options, Docker's keys (`docker network create -d macvlan -o parent=eth0 -o
 * macvlan_mode=bridge`) and tsnet's short ones; unknown keys are errors naming the key.
 */
import * as z from 'zod/mini';
import { TsnetError } from '../../core/errors.js';
import { IFNAME_PATTERN, MACVLAN_MODES, type IfName, type MacvlanMode } from '../../core/net.js';

// zod/mini: the CNI plugin bundle (tsnet-macvlan) includes this file, and full zod costs it ~450 KB.
export const MacvlanConfigSchema = z.strictObject({
  parent: z.string().check(z.regex(IFNAME_PATTERN)),
  mode: z.enum(MACVLAN_MODES),
  mtu: z.optional(z.number().check(z.int(), z.minimum(68), z.maximum(65_535))),
});
export type MacvlanConfig = { readonly parent: IfName; readonly mode: MacvlanMode; readonly mtu?: number };

const KEYS = {
  parent: ['parent', 'master'],
  mode: ['macvlan_mode', 'mode'],
  mtu: ['mtu', 'com.docker.network.driver.mtu'],
} as const satisfies Record<keyof MacvlanConfig, readonly string[]>;

function invalid(key: string, value: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `option ${key}: invalid value ${JSON.stringify(value)}: ${why}`, { details: { field: key, value } });
}

export function parseMacvlanOptions(options: Readonly<Record<string, string>>): MacvlanConfig {
  const known = new Set<string>(Object.values(KEYS).flat());
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new TsnetError('INVALID_CONFIG', `option ${key}: unknown macvlan option (known: ${[...known].join(', ')})`, { details: { field: key } });
  }
  const pick = (name: keyof typeof KEYS): [string, string] | undefined => {
    const key = KEYS[name].find((k) => options[k] !== undefined);
    return key === undefined ? undefined : [key, options[key] ?? ''];
  };
  const parent = pick('parent');
  if (parent === undefined) throw new TsnetError('INVALID_CONFIG', 'option parent: required: the host interface the macvlan network sits on (-o parent=eth0)', { details: { field: 'parent' } });
  if (!IFNAME_PATTERN.test(parent[1])) throw invalid(parent[0], parent[1], 'must be a Linux interface name');
  const mode = pick('mode') ?? ['macvlan_mode', 'bridge'];
  if (!(MACVLAN_MODES as readonly string[]).includes(mode[1])) throw invalid(mode[0], mode[1], `must be one of ${MACVLAN_MODES.join(', ')}`);
  const mtuOpt = pick('mtu');
  let mtu: number | undefined;
  if (mtuOpt !== undefined) {
    const n = /^\d+$/.test(mtuOpt[1]) ? Number(mtuOpt[1]) : NaN;
    if (!Number.isInteger(n) || n < 68 || n > 65_535) throw invalid(mtuOpt[0], mtuOpt[1], 'must be an integer 68-65535');
    mtu = n;
  }
  return { parent: parent[1] as IfName, mode: mode[1] as MacvlanMode, ...(mtu !== undefined ? { mtu } : {}) };
}

export function readMacvlanConfig(raw: unknown): MacvlanConfig {
  const r = MacvlanConfigSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INVALID_CONFIG', `macvlan config: ${z.prettifyError(r.error)}`);
  return r.data as MacvlanConfig;
}
