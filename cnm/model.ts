/**
 * The CNM records: plain, schema-versioned, re-read by id, no back-pointers. They are the one source
 * of truth for what tsnet made in the kernel: a record is written (status "creating") before the
 * kernel is touched and marked "ready" after, so a crash leaves a record that says what to clean.
 */
import { z } from 'zod';
import { IFNAME_PATTERN, isIpAddr, isPrefix, type EndpointId, type IfName, type IpAddr, type MacAddr, type NetworkId, type Prefix, type SandboxId } from '../core/net.js';
import { DRIVER_TYPES } from '../drivers/api.js';
import { NAME_PATTERN } from './names.js';

const zPrefix = z.custom<Prefix>(isPrefix, 'expected a CIDR prefix');
const zIp = z.custom<IpAddr>(isIpAddr, 'expected an IP address');
const zIfName = z.custom<IfName>((v) => typeof v === 'string' && IFNAME_PATTERN.test(v), 'expected an interface name');
const zId = <T>() => z.custom<T>((v) => typeof v === 'string' && /^[a-z0-9][a-z0-9_.-]{0,127}$/.test(v), 'expected an id');
const zMac = z.custom<MacAddr>((v) => typeof v === 'string' && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(v), 'expected a MAC address');

export { checkName, NAME_PATTERN, networkHasDns } from './names.js';
export const zName = z.string().max(128).regex(NAME_PATTERN);

export const SubnetRecordSchema = z.strictObject({
  subnet: zPrefix,
  gateway: zIp,
  ipRange: zPrefix.optional(),
  auxAddresses: z.record(z.string(), zIp).optional(),
});

export const NetworkRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: zId<NetworkId>(),
  name: zName,
  driver: z.enum(DRIVER_TYPES),
  created: z.string(),
  status: z.enum(['creating', 'ready']),
  internal: z.boolean(),
  ipv6: z.boolean(),
  /** Predefined networks (bridge, host, none) cannot be removed. */
  predefined: z.boolean(),
  subnets: z.array(SubnetRecordSchema),
  options: z.record(z.string(), z.string()),
  labels: z.record(z.string(), z.string()),
  /** The driver's persisted config (bridge name, MTU...). */
  config: z.record(z.string(), z.unknown()),
  /** Embedded DNS: absent means on, for every bridge network including the default one. */
  dnsEnabled: z.boolean().optional(),
  /** The way in that made it, when not tsnet's own doors (the Docker plugin's networks). */
  door: z.enum(['docker']).optional(),
  /** The subnets were assigned by the door's own IPAM (Docker's, through the IPAM plugin): no tsnet pool. */
  externalIpam: z.literal(true).optional(),
  /** A network of the cluster (overlay): its record is in the cluster store, this is the host's copy; addresses from cluster IPAM. */
  scope: z.literal('cluster').optional(),
});
export type NetworkRecord = z.infer<typeof NetworkRecordSchema>;

export const PortMappingRecordSchema = z.strictObject({
  proto: z.enum(['tcp', 'udp', 'sctp']),
  hostIp: zIp.optional(),
  hostPort: z.strictObject({ start: z.number().int(), end: z.number().int() }),
  containerIp: zIp,
  containerPort: z.strictObject({ start: z.number().int(), end: z.number().int() }),
});

export const EndpointRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: zId<EndpointId>(),
  networkId: zId<NetworkId>(),
  sandboxId: zId<SandboxId>(),
  created: z.string(),
  status: z.enum(['creating', 'ready']),
  ifName: zIfName,
  hostIf: zIfName.optional(),
  mac: zMac.optional(),
  addresses: z.array(zPrefix),
  aliases: z.array(z.string()),
  defaultRoute: z.boolean(),
  ports: z.array(PortMappingRecordSchema),
  /** An endpoint of a door that owns its sandbox (Docker): the container end is left in the host
   *  namespace as `peerIf` for the door's engine to move; `sandboxId` is then DOOR_SANDBOX. */
  door: z.enum(['docker']).optional(),
  peerIf: zIfName.optional(),
});

/** The sandbox id of endpoints whose sandbox a door owns (no tsnet sandbox record). */
export const DOOR_SANDBOX = 'door' as SandboxId;
export type EndpointRecord = z.infer<typeof EndpointRecordSchema>;

export const NetnsModeSchema = z.discriminatedUnion('kind', [
  /** A namespace of its own, `name` under tsnet's netns directory. */
  z.strictObject({ kind: z.literal('own'), name: z.string(), path: z.string() }),
  /** The host's namespace (`--network host`). */
  z.strictObject({ kind: z.literal('host') }),
  /** Another sandbox's namespace (`--network container:NAME`). */
  z.strictObject({ kind: z.literal('container'), sandboxId: zId<SandboxId>(), path: z.string() }),
  /** A namespace another runtime made and owns (a CNI ADD's CNI_NETNS): joined, never made or removed by tsnet. */
  z.strictObject({ kind: z.literal('external'), path: z.string() }),
]);
export type NetnsMode = z.infer<typeof NetnsModeSchema>;

export const SandboxRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: zId<SandboxId>(),
  name: zName,
  hostname: z.string(),
  created: z.string(),
  status: z.enum(['creating', 'ready']),
  netns: NetnsModeSchema,
  extraHosts: z.array(z.strictObject({ ip: zIp, names: z.array(z.string()) })),
  dns: z.array(zIp),
  dnsSearch: z.array(z.string()),
  dnsOptions: z.array(z.string()),
  /** Where /etc/hosts and /etc/resolv.conf for the container are written. */
  hostsPath: z.string(),
  resolvConfPath: z.string(),
  /**
   * Made for a container of tsnet's runtime (the CLI's `run`, same id): without that container's
   * record it is what a crash left. Other sandboxes (the library's) have no container and are never
   * swept.
   */
  container: z.literal(true).optional(),
  /** Made by a CNI ADD with `tsnetNetwork` (plugins/cni/attach.ts): the attachment it serves, for DEL, CHECK and GC. */
  cni: z.strictObject({ network: z.string(), containerId: z.string(), ifName: zIfName }).optional(),
});
export type SandboxRecord = z.infer<typeof SandboxRecordSchema>;

/** Impairments of what leaves one end of a link (sys Impairment, as recorded). */
export const ImpairmentRecordSchema = z.strictObject({
  rate: z.number().int().positive().optional(),
  delayUs: z.number().int().nonnegative().optional(),
  jitterUs: z.number().int().nonnegative().optional(),
  lossPct: z.number().min(0).max(100).optional(),
});
export type ImpairmentRecord = z.infer<typeof ImpairmentRecordSchema>;

/**
 * One end of a point-to-point link: an interface in a sandbox's own namespace, or a port of a
 * switch (a bridge in the host namespace, with an interface name chosen by tsnet).
 */
export const LinkEndRecordSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('sandbox'),
    sandboxId: zId<SandboxId>(),
    ifName: zIfName,
    mac: zMac,
    addresses: z.array(zPrefix),
    impair: ImpairmentRecordSchema.optional(),
  }),
  z.strictObject({
    kind: z.literal('switch'),
    switchId: z.string(),
    ifName: zIfName,
    mac: zMac,
    impair: ImpairmentRecordSchema.optional(),
  }),
]);
export type LinkEndRecord = z.infer<typeof LinkEndRecordSchema>;

/**
 * A veth pair straight between two namespaces (cnm/links.ts). Written ("creating", both ends' names
 * and MACs) before the kernel is touched, so a crash in the middle leaves a record naming what to
 * remove; removed with either sandbox.
 */
export const LinkRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: zId<string>(),
  created: z.string(),
  status: z.enum(['creating', 'ready']),
  mtu: z.number().int().min(68).max(65535).optional(),
  ends: z.tuple([LinkEndRecordSchema, LinkEndRecordSchema]),
  labels: z.record(z.string(), z.string()),
});
export type LinkRecord = z.infer<typeof LinkRecordSchema>;

/** A plain Linux bridge in the host namespace that links attach to (a lab's `kind: bridge` node). */
export const SwitchRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: zId<string>(),
  /** The bridge's interface name. */
  name: zIfName,
  created: z.string(),
  status: z.enum(['creating', 'ready']),
  mtu: z.number().int().min(68).max(65535).optional(),
  labels: z.record(z.string(), z.string()),
});
export type SwitchRecord = z.infer<typeof SwitchRecordSchema>;
