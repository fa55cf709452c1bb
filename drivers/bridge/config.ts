/**
 * Bridge network options. Accepts tsnet's short keys and Docker's keys (`-o` values are strings,
 * as with `docker network create -o`). Unknown keys are errors naming the key.
 */
// zod/mini: the CNI plugin bundle (tsnet-bridge) includes this file, and full zod costs it ~450 KB.
import * as z from 'zod/mini';
import { TsnetError } from '../../core/errors.js';
import { IFNAME_PATTERN, type IfName, type NetworkId } from '../../core/net.js';

const ALIASES = {
  bridge: ['bridge', 'com.docker.network.bridge.name'],
  mtu: ['mtu', 'com.docker.network.driver.mtu'],
  masquerade: ['masquerade', 'com.docker.network.bridge.enable_ip_masquerade'],
  icc: ['icc', 'com.docker.network.bridge.enable_icc'],
} as const satisfies Record<string, readonly string[]>;

export const BridgeConfigSchema = z.strictObject({
  bridge: z.string().check(z.regex(IFNAME_PATTERN)),
  mtu: z.optional(z.number().check(z.int(), z.minimum(68), z.maximum(65_535))),
  masquerade: z.boolean(),
  icc: z.boolean(),
  /** The gateway addresses on the bridge (CNI's isGateway; CNM networks always). */
  gateway: z._default(z.boolean(), true),
  /** Hairpin mode on the bridge ports: a container reaches its own published ports. */
  hairpin: z._default(z.boolean(), true),
  /** The bridge existed and was not tsnet's: it is used, never deleted; these gateway addresses were added to it. */
  adopted: z.optional(z.strictObject({ addedAddrs: z.array(z.string()) })),
});
export type BridgeConfig = Omit<z.output<typeof BridgeConfigSchema>, 'bridge'> & { readonly bridge: IfName };

const TRUE = ['1', 't', 'T', 'TRUE', 'true', 'True'];
const FALSE = ['0', 'f', 'F', 'FALSE', 'false', 'False'];

function invalid(key: string, value: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `option ${key}: invalid value ${JSON.stringify(value)}: ${why}`, { details: { field: key, value } });
}

function parseBool(key: string, raw: string): boolean {
  if (TRUE.includes(raw)) return true;
  if (FALSE.includes(raw)) return false;
  throw invalid(key, raw, 'expected true or false');
}

/** The bridge name Docker would use for a user network: `br-` + the first 12 characters of the id. */
export function defaultBridgeName(id: NetworkId): IfName {
  return `br-${id.slice(0, 12)}` as IfName;
}

export function parseBridgeOptions(id: NetworkId, options: Readonly<Record<string, string>>): BridgeConfig {
  const known = new Set<string>(Object.values(ALIASES).flat());
  for (const key of Object.keys(options)) {
    if (!known.has(key)) {
      throw new TsnetError('INVALID_CONFIG', `option ${key}: unknown bridge option (known: ${[...known].join(', ')})`, { details: { field: key } });
    }
  }
  const pick = (name: keyof typeof ALIASES): [string, string] | undefined => {
    const given = ALIASES[name].filter((k) => options[k] !== undefined);
    if (given.length > 1) {
      const values = new Set(given.map((k) => options[k]));
      if (values.size > 1) throw invalid(given.join(' and '), given.map((k) => options[k]), 'conflicting values for the same option');
    }
    const key = given[0];
    return key === undefined ? undefined : [key, options[key] ?? ''];
  };
  const bridgeOpt = pick('bridge');
  let bridge = defaultBridgeName(id);
  if (bridgeOpt) {
    const [key, raw] = bridgeOpt;
    if (!IFNAME_PATTERN.test(raw) || raw === '.' || raw === '..') throw invalid(key, raw, 'must be a Linux interface name (1-15 characters, no "/", ":" or whitespace)');
    bridge = raw as IfName;
  }
  const mtuOpt = pick('mtu');
  let mtu: number | undefined;
  if (mtuOpt) {
    const [key, raw] = mtuOpt;
    const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < 68 || n > 65_535) throw invalid(key, raw, 'must be an integer 68-65535');
    mtu = n;
  }
  const masqOpt = pick('masquerade');
  const iccOpt = pick('icc');
  return {
    bridge,
    ...(mtu !== undefined ? { mtu } : {}),
    masquerade: masqOpt ? parseBool(masqOpt[0], masqOpt[1]) : true,
    icc: iccOpt ? parseBool(iccOpt[0], iccOpt[1]) : true,
    gateway: true,
    hairpin: true,
  };
}

/**
 * Reads back a config (persisted: records on disk may be old or edited; or built by a door, the CNI
 * plugin). Trusted shapes skip the schema: a config this driver built has exactly these fields.
 */
export function readBridgeConfig(raw: unknown): BridgeConfig {
  if (isBuilt(raw)) return raw;
  const r = BridgeConfigSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INVALID_CONFIG', `bridge config: ${z.prettifyError(r.error)}`);
  return r.data as BridgeConfig;
}

const BUILT = new WeakSet<object>();
const isBuilt = (raw: unknown): raw is BridgeConfig => typeof raw === 'object' && raw !== null && BUILT.has(raw);

/** A config from typed input (the CNI plugin's configuration), checked like options are. */
export function makeBridgeConfig(c: { readonly bridge: IfName; readonly mtu?: number | undefined; readonly masquerade: boolean; readonly icc: boolean; readonly gateway: boolean; readonly hairpin: boolean }): BridgeConfig {
  if (c.mtu !== undefined && (!Number.isInteger(c.mtu) || c.mtu < 68 || c.mtu > 65_535)) throw invalid('mtu', c.mtu, 'must be an integer 68-65535');
  const cfg: BridgeConfig = { bridge: c.bridge, ...(c.mtu !== undefined ? { mtu: c.mtu } : {}), masquerade: c.masquerade, icc: c.icc, gateway: c.gateway, hairpin: c.hairpin };
  BUILT.add(cfg);
  return cfg;
}
