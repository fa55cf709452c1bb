/**
 * The cluster's records in the cluster store (etcd) and where they live. Every host reads and
 * writes them; each value is JSON validated by its schema on read (a value another version wrote
 * that does not parse is skipped and logged, never acted on).
 *
 *   /tsnet/v1/hosts/<host>                  HostRecord, on the host's lease (membership)
 *   /tsnet/v1/networks/<network id>         ClusterNetworkRecord
 *   /tsnet/v1/names/<name>                  network id (names are unique)
 *   /tsnet/v1/vnis/<vni>                    network id (VNIs are unique)
 *   /tsnet/v1/blocks/<network id>/<block>   BlockRecord: a block of addresses leased to one host
 *   /tsnet/v1/endpoints/<network id>/<ip>   EndpointEntry, on its host's lease: the address is taken
 *
 * An endpoint's key is its address: publishing it is the cluster-wide check that no two endpoints
 * hold one address (a create-if-absent transaction), in the same round trip that tells the other
 * hosts about it. Endpoints go with their host's lease; blocks stay until a grace period after
 * their host left, then any host frees them.
 */
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import { isIpAddr, isPrefix, type IpAddr, type NetworkId, type Prefix } from '../core/net.js';

export const ROOT = '/tsnet/v1/';
export const KEYS = {
  hosts: `${ROOT}hosts/`,
  networks: `${ROOT}networks/`,
  names: `${ROOT}names/`,
  vnis: `${ROOT}vnis/`,
  blocks: `${ROOT}blocks/`,
  endpoints: `${ROOT}endpoints/`,
} as const;

export const hostKey = (host: string): string => `${KEYS.hosts}${host}`;
export const networkKey = (id: string): string => `${KEYS.networks}${id}`;
export const nameKey = (name: string): string => `${KEYS.names}${name}`;
export const vniKey = (vni: number): string => `${KEYS.vnis}${vni}`;
export const blockKey = (net: string, block: Prefix): string => `${KEYS.blocks}${net}/${block.replace('/', '_')}`;
export const endpointKey = (net: string, ip: IpAddr): string => `${KEYS.endpoints}${net}/${ip}`;

const zIp = z.custom<IpAddr>(isIpAddr, 'expected an IP address');
const zPrefix = z.custom<Prefix>(isPrefix, 'expected a CIDR prefix');

export const HostRecordSchema = z.strictObject({
  host: z.string().min(1),
  name: z.string(),
  advertise: zIp,
  since: z.string(),
});
export type HostRecord = z.infer<typeof HostRecordSchema>;

export const ClusterNetworkRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: z.custom<NetworkId>((v) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)),
  name: z.string(),
  driver: z.literal('overlay'),
  vni: z.number().int().min(1).max(0xff_ffff),
  subnets: z.array(z.strictObject({ subnet: zPrefix, gateway: zIp, ipRange: zPrefix.optional() })),
  /** Prefix length of the blocks hosts lease from the subnet (or its ip-range). */
  blockLen: z.number().int().min(1).max(32),
  internal: z.boolean(),
  dnsEnabled: z.boolean(),
  options: z.record(z.string(), z.string()),
  labels: z.record(z.string(), z.string()),
  created: z.string(),
  createdBy: z.string(),
});
export type ClusterNetworkRecord = z.infer<typeof ClusterNetworkRecordSchema>;

export const BlockRecordSchema = z.strictObject({ host: z.string().min(1), block: zPrefix });
export type BlockRecord = z.infer<typeof BlockRecordSchema>;

export const EndpointEntrySchema = z.strictObject({
  host: z.string().min(1),
  hostName: z.string(),
  vtep: zIp,
  network: z.string(),
  endpoint: z.string(),
  sandbox: z.string(),
  ip: zIp,
  mac: z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/),
  names: z.array(z.string()),
});
export type EndpointEntry = z.infer<typeof EndpointEntrySchema>;

/** Parses a stored value; INTERNAL naming the key when it does not match. */
export function decode<T>(schema: z.ZodType<T>, key: string, value: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch {
    throw new TsnetError('INTERNAL', `cluster store: ${key}: not JSON`, { details: { key } });
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new TsnetError('INTERNAL', `cluster store: ${key}: ${z.prettifyError(r.error)}`, { details: { key } });
  return r.data;
}

/** The host's cluster configuration (flags/env, persisted in its state directory). */
export const ClusterSettingsSchema = z.strictObject({
  /** Member endpoints "IP:PORT". */
  store: z.array(z.string()).min(1),
  advertise: zIp,
  cafile: z.string().optional(),
  certfile: z.string().optional(),
  keyfile: z.string().optional(),
  /** Membership lease TTL in seconds (default 10). */
  ttl: z.number().int().min(2).max(3600).default(10),
  /** How long after its host left a block is freed, in seconds (default 60). */
  grace: z.number().int().min(0).max(86_400).default(60),
});
export type ClusterSettings = z.output<typeof ClusterSettingsSchema>;
