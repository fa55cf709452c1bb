/**
 * Overlay network options: the VNI the cluster assigned (`com.docker.network.driver.overlay.vxlanid_list`,
 * Docker's key, or `vni`), `mtu`, `icc`; unknown keys are errors naming the key. The bridge and VXLAN
 * device names derive from the network id (`ov-<12>`, `vx-<12>`: the same on every host).
 */
import * as z from 'zod/mini';
import { TsnetError } from '../../core/errors.js';
import { IFNAME_PATTERN, type IfName, type NetworkId } from '../../core/net.js';

/** VXLAN over IPv4: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. */
export const VXLAN_OVERHEAD = 50;

export const OverlayConfigSchema = z.strictObject({
  bridge: z.string().check(z.regex(IFNAME_PATTERN)),
  vxlan: z.string().check(z.regex(IFNAME_PATTERN)),
  vni: z.number().check(z.int(), z.minimum(1), z.maximum(0xff_ffff)),
  mtu: z.number().check(z.int(), z.minimum(68), z.maximum(65_535)),
  masquerade: z.boolean(),
  icc: z.boolean(),
});
export type OverlayConfig = Omit<z.output<typeof OverlayConfigSchema>, 'bridge' | 'vxlan'> & { readonly bridge: IfName; readonly vxlan: IfName };

const KEYS = {
  vni: ['vni', 'com.docker.network.driver.overlay.vxlanid_list'],
  mtu: ['mtu', 'com.docker.network.driver.mtu'],
  icc: ['icc', 'com.docker.network.bridge.enable_icc'],
} as const satisfies Record<string, readonly string[]>;

function invalid(key: string, value: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `option ${key}: invalid value ${JSON.stringify(value)}: ${why}`, { details: { field: key, value } });
}

export function parseOverlayOptions(id: NetworkId, options: Readonly<Record<string, string>>): OverlayConfig {
  const known = new Set<string>(Object.values(KEYS).flat());
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new TsnetError('INVALID_CONFIG', `option ${key}: unknown overlay option (known: ${[...known].join(', ')})`, { details: { field: key } });
  }
  const pick = (name: keyof typeof KEYS): [string, string] | undefined => {
    const key = KEYS[name].find((k) => options[k] !== undefined);
    return key === undefined ? undefined : [key, options[key] ?? ''];
  };
  const int = (kv: [string, string], min: number, max: number): number => {
    const n = /^\d+$/.test(kv[1]) ? Number(kv[1]) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) throw invalid(kv[0], kv[1], `must be an integer ${min}-${max}`);
    return n;
  };
  const vniOpt = pick('vni');
  if (vniOpt === undefined) throw new TsnetError('INVALID_CONFIG', 'option vni: required (the cluster assigns it)', { details: { field: 'vni' } });
  const mtuOpt = pick('mtu');
  const iccOpt = pick('icc');
  let icc = true;
  if (iccOpt !== undefined) {
    if (!['true', 'false', '1', '0'].includes(iccOpt[1])) throw invalid(iccOpt[0], iccOpt[1], 'expected true or false');
    icc = iccOpt[1] === 'true' || iccOpt[1] === '1';
  }
  return {
    bridge: `ov-${id.slice(0, 12)}` as IfName,
    vxlan: `vx-${id.slice(0, 12)}` as IfName,
    vni: int(vniOpt, 1, 0xff_ffff),
    mtu: mtuOpt === undefined ? 1500 - VXLAN_OVERHEAD : int(mtuOpt, 68, 65_535),
    masquerade: true,
    icc,
  };
}

export function readOverlayConfig(raw: unknown): OverlayConfig {
  const r = OverlayConfigSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INVALID_CONFIG', `overlay config: ${z.prettifyError(r.error)}`);
  return r.data as OverlayConfig;
}
