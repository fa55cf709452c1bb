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
import { addrToBigInt, bigIntToAddr, prefixRange } from '../../ipam/ranges.js';
import type { HostLocalReservation, HostLocalStore } from '../../sys/store/host-local.js';
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

/** Does a reservation belong to the attachment? Legacy files match on the container id alone. */
export function ownedBy(r: HostLocalReservation, containerId: string, ifName: string): boolean {
  return r.containerId === containerId.trim() && (r.ifName === undefined || r.ifName === ifName);
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function invalid(field: string, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${why}`, { details: { field } });
}

function optString(o: Record<string, unknown>, key: string, field: string): string | undefined {
  const v = o[key];
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
  if (raw['ranges'] !== undefined) {
    if (!Array.isArray(raw['ranges']) || raw['ranges'].length === 0) throw invalid(`${field}.ranges`, 'must be a non-empty list of range sets');
    sets = raw['ranges'].map((set: unknown, i) => {
      if (!Array.isArray(set) || set.length === 0) throw invalid(`${field}.ranges[${i}]`, 'must be a non-empty list of ranges');
      const rs = set.map((r: unknown, j) => parseRange(r, `${field}.ranges[${i}][${j}]`));
      const fam = addrFamily(rs[0]?.subnet as Prefix);
      rs.forEach((r, j) => {
        if (addrFamily(r.subnet) !== fam) throw invalid(`${field}.ranges[${i}][${j}].subnet`, 'a range set mixes IPv4 and IPv6');
      });
      return rs;
    });
  } else if (raw['subnet'] !== undefined) {
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
    routes: parseRoutes(raw['routes'], `${field}.routes`) ?? [],
    dataDir,
    dns: parseDns(raw['dns'], `${field}.dns`),
  };
}

/**
 * Addresses asked for, from the `ips` capability (runtimeConfig.ips), `args.cni.ips` and CNI_ARGS
 * `IP=` (comma-separated), in that order of preference. CIDR suffixes are dropped.
 */
export function requestedIps(config: Readonly<Record<string, unknown>>, args: ReadonlyMap<string, string>): IpAddr[] {
  const rc = config['runtimeConfig'];
  const fromRc = isObj(rc) ? rc['ips'] : undefined;
  const a = config['args'];
  const cni = isObj(a) ? a['cni'] : undefined;
  const fromArgs = isObj(cni) ? cni['ips'] : undefined;
  const fromEnv = args.get('IP');
  const pick: [unknown, string] | undefined =
    fromRc !== undefined ? [fromRc, 'runtimeConfig.ips'] : fromArgs !== undefined ? [fromArgs, 'args.cni.ips'] : fromEnv !== undefined ? [fromEnv.split(','), 'CNI_ARGS IP'] : undefined;
  if (pick === undefined) return [];
  const [list, field] = pick;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) throw invalid(field, 'must be a list of addresses');
  return (list as string[]).map((s, i) => (s.includes('/') ? (parsePrefix(s, `${field}[${i}]`).split('/')[0] as IpAddr) : parseIpAddr(s, `${field}[${i}]`)));
}

function setContains(set: RangeSet, n: bigint, fam: 4 | 6): boolean {
  return set.some((r) => addrFamily(r.subnet) === fam && n >= r.start && n <= r.end);
}

function ipConfig(r: IpRange, ip: IpAddr): IpConfig {
  return { address: `${ip}/${prefixLen(r.subnet)}`, gateway: r.gateway };
}

/** Candidates of a range set in host-local's order: after `last`, round robin over its ranges. */
function* candidates(set: RangeSet, last: bigint | undefined): Generator<{ r: IpRange; n: bigint }> {
  let ri = 0;
  let cur: bigint | undefined;
  if (last !== undefined) {
    const i = set.findIndex((r) => last >= r.start && last <= r.end);
    if (i >= 0) {
      ri = i;
      cur = last;
    }
  }
  const first = set[ri];
  if (first === undefined) return;
  let n = cur === undefined ? first.start : cur + 1n;
  let idx = ri;
  if (n > first.end) {
    idx = (idx + 1) % set.length;
    n = (set[idx] as IpRange).start;
  }
  const startIdx = idx;
  const startN = n;
  for (;;) {
    const r = set[idx] as IpRange;
    if (addrToBigInt(r.gateway) !== n) yield { r, n };
    n += 1n;
    if (n > r.end) {
      idx = (idx + 1) % set.length;
      n = (set[idx] as IpRange).start;
    }
    if (idx === startIdx && n === startN) return;
  }
}

/** Reserves one address per range set (a requested one where given); releases all on failure. */
export async function ipamAdd(store: HostLocalStore, cfg: IpamConfig, att: Attachment, requested: readonly IpAddr[]): Promise<Result> {
  // No lock: the exclusive creation of the address's file is the reservation, atomic in the
  // kernel, so concurrent ADDs (tsnet's or host-local's) never share an address. Measured with 20
  // concurrent ADDs, serializing them through the directory's lock cost 1.3 s of 4.4 s.
  // Every requested address must fall in exactly one range set.
  const want = new Map<number, { ip: IpAddr; r: IpRange }>();
  for (const ip of requested) {
    const n = addrToBigInt(ip);
    const fam = addrFamily(ip);
    const si = cfg.ranges.findIndex((s) => setContains(s, n, fam));
    const r = cfg.ranges[si]?.find((x) => addrFamily(x.subnet) === fam && n >= x.start && n <= x.end);
    if (r === undefined) throw invalid('ips', `requested address ${ip} is in none of the configured ranges`);
    if (want.has(si)) throw invalid('ips', `two requested addresses in range set ${si}`);
    want.set(si, { ip, r });
  }
  {
    const got: IpConfig[] = [];
    const taken: string[] = [];
    try {
      for (let si = 0; si < cfg.ranges.length; si++) {
        const set = cfg.ranges[si] as RangeSet;
        const asked = want.get(si);
        if (asked !== undefined) {
          if (!(await store.reserve(asked.ip, att.containerId, att.ifName, si))) {
            const owner = await store.get(asked.ip);
            throw new TsnetError('ALREADY_EXISTS', `ips: requested address ${asked.ip} is already reserved${owner ? ` by container ${owner.containerId}` : ''}`, { details: { field: 'ips' } });
          }
          taken.push(asked.ip);
          got.push(ipConfig(asked.r, asked.ip));
          continue;
        }
        const lastText = await store.lastReserved(si);
        const fam = addrFamily(set[0]?.subnet as Prefix);
        let last: bigint | undefined;
        if (lastText !== undefined) {
          try {
            last = addrToBigInt(parseIpAddr(lastText, 'last_reserved_ip'));
          } catch {
            last = undefined; // unreadable hint: start from the beginning, as host-local does
          }
        }
        let done = false;
        for (const { r, n } of candidates(set, last)) {
          const ip = bigIntToAddr(n, fam);
          if (await store.reserve(ip, att.containerId, att.ifName, si)) {
            taken.push(ip);
            got.push(ipConfig(r, ip));
            done = true;
            break;
          }
        }
        if (!done) {
          const desc = set.map((r) => `${bigIntToAddr(r.start, fam)}-${bigIntToAddr(r.end, fam)}`).join(', ');
          throw new TsnetError('EXHAUSTED', `ipam: no IP addresses available in range set ${desc}`, { details: { field: 'ranges' } });
        }
      }
    } catch (err) {
      for (const ip of taken) await store.release(ip).catch(() => undefined);
      throw err;
    }
    return {
      ips: got,
      ...(cfg.routes.length > 0 ? { routes: cfg.routes } : {}),
      ...(cfg.dns !== undefined ? { dns: cfg.dns } : {}),
    };
  }
}

function inRanges(cfg: IpamConfig, ip: IpAddr): boolean {
  const n = addrToBigInt(ip);
  return cfg.ranges.some((s) => setContains(s, n, addrFamily(ip)));
}

/** Addresses of a result that fall in our ranges. */
export function ourAddresses(cfg: IpamConfig, prev: Result | undefined): IpAddr[] {
  const out: IpAddr[] = [];
  for (const c of prev?.ips ?? []) {
    const ip = c.address.split('/')[0] ?? '';
    try {
      const a = parseIpAddr(ip, 'prevResult.ips');
      if (inRanges(cfg, a)) out.push(a);
    } catch {
      // not ours to judge
    }
  }
  return out;
}

/** Releases the attachment's reservations; idempotent. `known`: addresses from prevResult. */
export async function ipamDel(store: HostLocalStore, att: Attachment, known: readonly IpAddr[]): Promise<void> {
  // No lock either: only the attachment's own files are removed, and a file cannot change owner
  // while it exists. (GC, which removes other owners' files, takes the lock; the runtime never runs
  // GC concurrently with ADD or DEL.)
  {
    if (known.length > 0) {
      let released = 0;
      for (const ip of known) {
        const r = await store.get(ip);
        if (r !== undefined && ownedBy(r, att.containerId, att.ifName)) {
          await store.release(ip);
          released++;
        }
      }
      if (released === known.length) return;
    }
    for (const r of await store.list()) if (ownedBy(r, att.containerId, att.ifName)) await store.release(r.ip);
  }
}

/** CHECK: every address of prevResult in our ranges is reserved for this attachment. */
export async function ipamCheck(store: HostLocalStore, cfg: IpamConfig, att: Attachment, prev: Result): Promise<void> {
  const mine = ourAddresses(cfg, prev);
  if (mine.length === 0) throw new TsnetError('NOT_FOUND', `ipam: prevResult has no address in the configured ranges for ${att.containerId}/${att.ifName}`, { details: { field: 'prevResult.ips' } });
  for (const ip of mine) {
    const r = await store.get(ip);
    if (r === undefined || !ownedBy(r, att.containerId, att.ifName)) {
      throw new TsnetError('NOT_FOUND', `ipam: ${ip} is not reserved for ${att.containerId}/${att.ifName}${r ? ` (reserved by ${r.containerId})` : ''}`, { details: { field: 'ips' } });
    }
  }
}

/** GC: releases every reservation not owned by a valid attachment; returns the released addresses. */
export async function ipamGc(store: HostLocalStore, valid: readonly Attachment[]): Promise<string[]> {
  return store.withLock(async () => {
    const released: string[] = [];
    for (const r of await store.list()) {
      if (valid.some((a) => ownedBy(r, a.containerId, a.ifName))) continue;
      await store.release(r.ip);
      released.push(r.ip);
    }
    return released;
  });
}
