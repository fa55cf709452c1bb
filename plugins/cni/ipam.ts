/**
 * host-local-compatible IPAM: the `ipam` configuration (`ranges` or the legacy single-range form,
 * `rangeStart`, `rangeEnd`, `gateway`, `routes`, `dataDir`), requested addresses (`ips`
 * capability, `args.cni.ips`, CNI_ARGS `IP=`), and allocation/release over the host-local disk
 * layout (sys/store/host-local.ts). Used in-process by tsnet-bridge and by the tsnet-ipam binary.
 *
 * Allocation follows host-local: per range set, start after `last_reserved_ip.<set index>` (if it
 * lies in the set), walk the set's ranges round robin, skip each range's gateway, and reserve the
 * first address whose file can be created exclusively. The cost does not depend on the number of
 * reservations (one file creation when the pool is not fragmented). Release uses the addresses of
 * prevResult when there is one (reading those files only), and walks the directory otherwise.
 * Only GC takes the directory's lock (see ipamAdd for why ADD and DEL do not).
 */
import { TsnetError } from '../../core/errors.js';
import { addrFamily, parseIpAddr, parsePrefix, parseSubnet, prefixLen, type IpAddr, type Prefix } from '../../core/net.js';
import { allocateAttachment, checkAttachment, exhaustedSet, gcAttachments, inSets, releaseAttachment } from '../../ipam/host-local.js';
import type { RangeSet as AllocSet } from '../../ipam/range-set.js';
import { addrToBigInt, bigIntToAddr, prefixRange } from '../../ipam/ranges.js';
import type { HostLocalStore } from '../../sys/store/api.js';
import { CNI_ERR, CniError } from './errors.js';
import { goField, goPath, isJsonObject as isObj } from './go-json.js';
import { parseDns, parseRoutes, type Dns, type IpConfig, type Result, type Route } from './spec.js';
import type { Attachment } from './skel.js';

export interface IpRange {
  readonly subnet: Prefix;
  readonly start: bigint;
  readonly end: bigint;
  readonly gateway: IpAddr;
}
export type RangeSet = readonly IpRange[];

export interface IpamConfig {
  readonly type: string | undefined;
  readonly ranges: readonly RangeSet[];
  readonly routes: readonly Route[];
  readonly dataDir: string | undefined;
  readonly dns: Dns | undefined;
}


function invalid(field: string, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${why}`, { details: { field } });
}

function optString(o: Record<string, unknown>, key: string, field: string): string | undefined {
  const v = goField(o, key);
  if (v === undefined || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(`${field}.${key}`, 'must be a string');
  return v;
}

function parseRange(raw: unknown, field: string): IpRange {
  if (!isObj(raw)) throw invalid(field, 'must be an object');
  const subnetRaw = optString(raw, 'subnet', field);
  if (subnetRaw === undefined) throw invalid(`${field}.subnet`, 'missing');
  const subnet = parseSubnet(subnetRaw, `${field}.subnet`);
  const all = prefixRange(subnet);
  const fam = addrFamily(subnet);
  if (prefixLen(subnet) > (fam === 4 ? 30 : 126)) throw invalid(`${field}.subnet`, `${subnet} is too small to allocate from`);
  const inSubnet = (key: string): bigint | undefined => {
    const s = optString(raw, key, field);
    if (s === undefined) return undefined;
    const a = parseIpAddr(s, `${field}.${key}`);
    const n = addrToBigInt(a);
    if (addrFamily(a) !== fam || n < all.first || n > all.last) throw invalid(`${field}.${key}`, `${a} is not in ${subnet}`);
    return n;
  };
  const start = inSubnet('rangeStart') ?? all.first + 1n;
  const end = inSubnet('rangeEnd') ?? (fam === 4 ? all.last - 1n : all.last);
  if (start > end) throw invalid(`${field}.rangeStart`, `${bigIntToAddr(start, fam)} is after rangeEnd ${bigIntToAddr(end, fam)}`);
  const gw = inSubnet('gateway') ?? all.first + 1n;
  return { subnet, start, end, gateway: bigIntToAddr(gw, fam) };
}

const overlap = (a: IpRange, b: IpRange): boolean => addrFamily(a.subnet) === addrFamily(b.subnet) && a.start <= b.end && b.start <= a.end;

export function parseIpamConfig(raw: unknown, field = 'ipam'): IpamConfig {
  if (!isObj(raw)) throw invalid(field, 'must be an object');
  const type = optString(raw, 'type', field);
  let sets: RangeSet[];
  const ranges = goField(raw, 'ranges', 'nullable');
  if (ranges !== undefined) {
    if (!Array.isArray(ranges) || ranges.length === 0) throw invalid(`${field}.ranges`, 'must be a non-empty list of range sets');
    sets = ranges.map((set: unknown, i) => {
      if (!Array.isArray(set) || set.length === 0) throw invalid(`${field}.ranges[${i}]`, 'must be a non-empty list of ranges');
      const rs = set.map((r: unknown, j) => parseRange(r, `${field}.ranges[${i}][${j}]`));
      const fam = addrFamily(rs[0]?.subnet as Prefix);
      rs.forEach((r, j) => {
        if (addrFamily(r.subnet) !== fam) throw invalid(`${field}.ranges[${i}][${j}].subnet`, 'a range set mixes IPv4 and IPv6');
      });
      return rs;
    });
  } else if (goField(raw, 'subnet') !== undefined) {
    sets = [[parseRange(raw, field)]];
  } else {
    throw invalid(`${field}.ranges`, 'missing (give "ranges" or "subnet")');
  }
  const flat = sets.flatMap((s, i) => s.map((r, j) => ({ r, where: `${field}.ranges[${i}][${j}]` })));
  for (let a = 0; a < flat.length; a++) {
    for (let b = a + 1; b < flat.length; b++) {
      const x = flat[a];
      const y = flat[b];
      if (x && y && overlap(x.r, y.r)) throw invalid(y.where, `overlaps ${x.where}`);
    }
  }
  const dataDir = optString(raw, 'dataDir', field);
  if (dataDir !== undefined && !dataDir.startsWith('/')) throw invalid(`${field}.dataDir`, 'must be an absolute path');
  return {
    type,
    ranges: sets,
    routes: parseRoutes(goField(raw, 'routes', 'nullable'), `${field}.routes`) ?? [],
    dataDir,
    dns: parseDns(goField(raw, 'dns'), `${field}.dns`),
  };
}

/**
 * Addresses asked for, from the `ips` capability (runtimeConfig.ips), `args.cni.ips` and CNI_ARGS
 * `IP=` (comma-separated), in that order of preference. CIDR suffixes are dropped.
 */
export function requestedIps(config: Readonly<Record<string, unknown>>, args: ReadonlyMap<string, string>): IpAddr[] {
  const fromRc = goPath(config, ['runtimeConfig', 'ips'], 'nullable');
  const fromArgs = goPath(config, ['args', 'cni', 'ips'], 'nullable');
  const fromEnv = args.get('IP');
  const pick: [unknown, string] | undefined =
    fromRc !== undefined ? [fromRc, 'runtimeConfig.ips'] : fromArgs !== undefined ? [fromArgs, 'args.cni.ips'] : fromEnv !== undefined ? [fromEnv.split(','), 'CNI_ARGS IP'] : undefined;
  if (pick === undefined) return [];
  const [list, field] = pick;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) throw invalid(field, 'must be a list of addresses');
  return (list as string[]).map((s, i) => (s.includes('/') ? (parsePrefix(s, `${field}[${i}]`).split('/')[0] as IpAddr) : parseIpAddr(s, `${field}[${i}]`)));
}

/** The configuration's range sets as the shared allocator's (ipam/range-set.ts): the gateway excluded. */
export function rangeSets(cfg: IpamConfig): AllocSet[] {
  return cfg.ranges.map((set) => ({
    family: addrFamily(set[0]?.subnet as Prefix),
    ranges: set.map((r) => ({ subnet: r.subnet, first: r.start, last: r.end, gateway: r.gateway, excluded: new Set([addrToBigInt(r.gateway)]) })),
  }));
}

/** Reserves one address per range set (a requested one where given); releases all on failure. */
export async function ipamAdd(store: HostLocalStore, cfg: IpamConfig, att: Attachment, requested: readonly IpAddr[]): Promise<Result> {
  // No lock: the exclusive creation of the address's file is the reservation, atomic in the
  // kernel, so concurrent ADDs (tsnet's or host-local's) never share an address. Measured with 20
  // concurrent ADDs, serializing them through the directory's lock cost 1.3 s of 4.4 s.
  const got = await allocateAttachment(store, rangeSets(cfg), att, requested);
  return {
    ips: got.map((a): IpConfig => ({ address: `${a.ip}/${prefixLen(a.subnet)}`, ...(a.gateway !== undefined ? { gateway: a.gateway } : {}) })),
    ...(cfg.routes.length > 0 ? { routes: cfg.routes } : {}),
    ...(cfg.dns !== undefined ? { dns: cfg.dns } : {}),
  };
}

/** Addresses of a result that fall in our ranges. */
export function ourAddresses(cfg: IpamConfig, prev: Result | undefined): IpAddr[] {
  const out: IpAddr[] = [];
  for (const c of prev?.ips ?? []) {
    const ip = c.address.split('/')[0] ?? '';
    try {
      out.push(parseIpAddr(ip, 'prevResult.ips'));
    } catch {
      // not ours to judge
    }
  }
  return inSets(rangeSets(cfg), out);
}

/** Releases the attachment's reservations; idempotent. `known`: addresses from prevResult. */
export const ipamDel = (store: HostLocalStore, att: Attachment, known: readonly IpAddr[]): Promise<void> => releaseAttachment(store, att, known);

/** CHECK: every address of prevResult in our ranges is reserved for this attachment. */
export async function ipamCheck(store: HostLocalStore, cfg: IpamConfig, att: Attachment, prev: Result): Promise<void> {
  await checkAttachment(store, rangeSets(cfg), att, ourAddresses(cfg, prev));
}

/** GC: releases every reservation not owned by a valid attachment (and a killed plugin's temp files). */
export const ipamGc = (store: HostLocalStore, valid: readonly Attachment[], isAlive: (pid: number) => boolean): Promise<string[]> => gcAttachments(store, valid, isAlive);

/**
 * STATUS, for tsnet-ipam and tsnet-bridge's built-in IPAM alike: NOT_AVAILABLE (code 50) when the
 * data directory cannot be opened or a range set has no address left.
 */
export async function ipamStatus(open: () => Promise<HostLocalStore>, cfg: IpamConfig): Promise<void> {
  let store: HostLocalStore;
  try {
    store = await open();
  } catch (err) {
    throw new CniError(CNI_ERR.NOT_AVAILABLE, `ipam data directory unusable: ${err instanceof Error ? err.message : String(err)}`, 'plugin not available');
  }
  await exhaustion(store, cfg).catch((err: unknown) => {
    throw new CniError(CNI_ERR.NOT_AVAILABLE, err instanceof Error ? err.message : String(err), 'plugin not available');
  });
}

async function exhaustion(store: HostLocalStore, cfg: IpamConfig): Promise<void> {
  const sets = rangeSets(cfg);
  const i = await exhaustedSet(store, sets);
  if (i !== undefined) {
    const set = cfg.ranges[i] ?? [];
    const fam = addrFamily(set[0]?.subnet as Prefix);
    throw new TsnetError('EXHAUSTED', `ipam: range set ${set.map((r) => `${bigIntToAddr(r.start, fam)}-${bigIntToAddr(r.end, fam)}`).join(', ')} has no free address`, { details: { field: 'ranges' } });
  }
}
