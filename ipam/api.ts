/**
 * The IPAM contract: what `cnm` and the plugins call (Ipam), the persistence port the allocator needs
 * (IpamStore, implemented on disk by sys/store through an adapter, in memory by ./memory-store.ts),
 * and the persisted pool record with its schema.
 *
 * Model: a network has at most one pool per address family. A pool is one subnet plus its gateway,
 * optional ip-range (where dynamic addresses come from) and aux addresses (never handed out). An
 * address is reserved by an exclusive create in the store (`reserve()` returns false when the
 * address is already taken), so allocation needs no lock and many processes can allocate at once.
 * Pool creation and deletion run under the store's cross-process pool lock, so two networks never
 * get overlapping subnets.
 */
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import type { Brand, Family, IpAddr, NetworkId, Prefix } from '../core/net.js';
import { addrFamily, parseIpAddr, parseNetworkId, parseSubnet } from '../core/net.js';

/** Identifies one pool: a network's IPv4 or IPv6 subnet. Safe as a file name. See poolIdFor. */
export type PoolId = Brand<string, 'PoolId'>;

/** The id of the network's pool of the family: "<networkId>-ipv4" / "<networkId>-ipv6". */
export function poolIdFor(networkId: NetworkId, family: Family): PoolId {
  return `${networkId}-ipv${family}` as PoolId;
}

const valid = (fn: () => unknown): boolean => {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
};
const isStr = (v: unknown): v is string => typeof v === 'string';

/**
 * Who holds an address: an endpoint id, or for CNI "<containerId>/<ifname>". 1–256 characters, no
 * control characters (it is stored as the content of a reservation file).
 */
export function parseOwner(raw: string, field = 'owner'): string {
  // eslint-disable-next-line no-control-regex
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 256 || /[\u0000-\u001f\u007f]/.test(raw)) {
    throw new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: must be 1-256 characters without control characters`, {
      details: { field, value: raw },
    });
  }
  return raw;
}

/**
 * The persisted record of one pool (schemaVersion 1). Written once by createPool and never changed;
 * every field is validated on read (`parsePoolRecord`).
 */
export const PoolRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  poolId: z.custom<PoolId>((v) => isStr(v) && /^[a-z0-9][a-z0-9_.-]{0,127}-ipv[46]$/.test(v)),
  networkId: z.custom<NetworkId>((v) => isStr(v) && valid(() => parseNetworkId(v))),
  /** Shown in error messages ("overlaps network \"web\""); defaults to the network id. */
  networkName: z.string().min(1).max(256),
  family: z.union([z.literal(4), z.literal(6)]),
  subnet: z.custom<Prefix>((v) => isStr(v) && valid(() => parseSubnet(v))),
  gateway: z.custom<IpAddr>((v) => isStr(v) && parseIpAddrOk(v)),
  ipRange: z.custom<Prefix>((v) => isStr(v) && valid(() => parseSubnet(v))).optional(),
  auxAddresses: z.record(z.string().min(1), z.custom<IpAddr>((v) => isStr(v) && parseIpAddrOk(v))),
  /** 'user': the subnet came from the request; 'default': picked from the default pools. */
  source: z.union([z.literal('user'), z.literal('default')]),
});
function parseIpAddrOk(v: string): boolean {
  return valid(() => {
    if (parseIpAddr(v) !== v) throw new Error('not canonical');
  });
}

export type PoolRecord = z.infer<typeof PoolRecordSchema>;

/** Parses a persisted pool record (e.g. read from disk); INVALID_CONFIG naming what is wrong. */
export function parsePoolRecord(raw: unknown): PoolRecord {
  const r = PoolRecordSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INVALID_CONFIG', `ipam pool record: ${z.prettifyError(r.error)}`, { details: { field: 'pool' } });
  const rec = r.data;
  if (addrFamily(rec.subnet) !== rec.family || addrFamily(rec.gateway) !== rec.family) {
    throw new TsnetError('INVALID_CONFIG', `ipam pool record ${rec.poolId}: family ${rec.family} does not match subnet ${rec.subnet}`, {
      details: { field: 'pool' },
    });
  }
  return rec;
}

/** One reserved address and who holds it. */
export interface Reservation {
  readonly addr: IpAddr;
  readonly owner: string;
}

/**
 * Persistence port of the allocator. Designed for "one file per reservation, created with O_EXCL"
 * (the CNI host-local layout): `<state>/ipam/<poolId>/pool.json`, `<poolId>/<addr>` holding the
 * owner, `<poolId>/cursor`. Only `withPoolLock` locks; `reserve` must be an atomic exclusive create
 * so concurrent processes never both get `true` for one address.
 */
export interface IpamStore {
  /** Every pool record of every network (the overlap check needs all of them). */
  listPools(): Promise<PoolRecord[]>;
  /** One pool record, or undefined when there is none. */
  getPool(poolId: PoolId): Promise<PoolRecord | undefined>;
  /**
   * Persists a new pool, atomically (a reader sees the whole record or none). Throws
   * TsnetError('ALREADY_EXISTS') when a pool with that id exists. A new pool has no reservations and
   * no cursor (an implementation removes leftovers of an earlier pool with that id).
   */
  createPool(rec: PoolRecord): Promise<void>;
  /** Removes the pool record, all its reservations and its cursor. Idempotent. */
  deletePool(poolId: PoolId): Promise<void>;
  /** Exclusive create: true if `addr` is now held by `owner`, false if it was already held (by anyone). */
  reserve(poolId: PoolId, addr: IpAddr, owner: string): Promise<boolean>;
  /** Frees the address. Idempotent (no error when it is not reserved or the pool is gone). */
  release(poolId: PoolId, addr: IpAddr): Promise<void>;
  /** Every reservation of the pool, in any order; [] when the pool is gone. */
  listReserved(poolId: PoolId): Promise<Reservation[]>;
  /** Who holds `addr` in the pool (one lookup, not a listing); undefined when nobody does or the pool is gone. */
  holder(poolId: PoolId, addr: IpAddr): Promise<string | undefined>;
  /** Frees `addr` only if `owner` holds it, checked and removed atomically; true if this call freed it. */
  releaseHeld(poolId: PoolId, addr: IpAddr, owner: string): Promise<boolean>;
  /** The address most recently handed out dynamically (round-robin cursor), if any. */
  getCursor(poolId: PoolId): Promise<IpAddr | undefined>;
  setCursor(poolId: PoolId, addr: IpAddr): Promise<void>;
  /**
   * Runs `fn` holding the cross-process pool lock (create and delete of pools; subnet choice must see
   * every pool). Must be released by the kernel if the holder dies (flock semantics). Not re-entrant.
   */
  withPoolLock<T>(fn: () => Promise<T>): Promise<T>;
}

/** Where default subnets come from: `base` split into subnets of prefix length `size`. */
export interface DefaultPool {
  /** A subnet, e.g. "10.89.0.0/16" or "fd12:3456:789a::/48". */
  readonly base: string;
  /** Prefix length of each network's subnet, e.g. 24 (IPv4) or 64 (IPv6). At most 30 / 126. */
  readonly size: number;
}

/** Ask for a network's pool of one family. All strings are raw user input, validated here. */
export interface PoolRequest {
  readonly networkId: NetworkId;
  /** Human name for messages; defaults to the network id. */
  readonly networkName?: string;
  /** Defaults to the family of `subnet`, else 4. */
  readonly family?: Family;
  /** Explicit subnet (--subnet). Without it a free subnet is picked from the default pools. */
  readonly subnet?: string;
  /** Gateway address (--gateway); default: the first host address of the subnet. Needs `subnet`. */
  readonly gateway?: string;
  /** Sub-prefix of the subnet that dynamic addresses come from (--ip-range). Needs `subnet`. */
  readonly ipRange?: string;
  /** name → address, reserved and never handed out (--aux-address name=ip). Needs `subnet`. */
  readonly auxAddresses?: Readonly<Record<string, string>>;
}

/** Ask for one address on a network. */
export interface AddressRequest {
  readonly networkId: NetworkId;
  /** Who will hold it: endpoint id, or "<containerId>/<ifname>" for CNI. */
  readonly owner: string;
  /** Which of the network's pools; defaults to the family of `ip`, else 4. */
  readonly family?: Family;
  /** A static address (--ip / --ip6); may lie outside the ip-range but must be inside the subnet. */
  readonly ip?: string;
}

/** An address handed out. */
export interface Allocation {
  readonly networkId: NetworkId;
  readonly poolId: PoolId;
  readonly family: Family;
  /** The bare address, "10.89.0.2". */
  readonly ip: IpAddr;
  /** The address with the subnet's length, for the interface: "10.89.0.2/24". */
  readonly address: Prefix;
  readonly subnet: Prefix;
  readonly gateway: IpAddr;
  readonly owner: string;
}

export interface ReleaseAddressRequest {
  readonly networkId: NetworkId;
  readonly addr: string;
  /**
   * When given, the address is released only if this owner holds it, so a repeated DEL cannot free
   * an address that has since been handed to someone else.
   */
  readonly owner?: string;
}

/** An address that a release freed. */
export interface Released {
  readonly networkId: NetworkId;
  readonly poolId: PoolId;
  readonly addr: IpAddr;
  readonly owner: string;
}

export interface Ipam {
  /**
   * Creates the network's pool for one family. Validates the whole request first (INVALID_CONFIG with
   * details.field = subnet | gateway | ip-range | aux-address), then, under the pool lock, checks the
   * subnet against every existing pool and every host route (INVALID_CONFIG naming the collision) or
   * picks the first free default subnet (EXHAUSTED when none is left). ALREADY_EXISTS when the network
   * already has a pool of that family.
   */
  requestPool(req: PoolRequest): Promise<PoolRecord>;
  /** Deletes every pool of the network and all their reservations. Idempotent. */
  releasePool(networkId: NetworkId): Promise<void>;
  /** The network's pools (0, 1 or 2), IPv4 first. */
  getPools(networkId: NetworkId): Promise<PoolRecord[]>;
  /** Every pool of every network. */
  listPools(): Promise<PoolRecord[]>;
  /**
   * Hands out an address. Static (`ip`): exactly that address; ALREADY_EXISTS "in use by <owner>" when
   * someone else holds it, success when `owner` already does (idempotent). Dynamic: the next free
   * address after the round-robin cursor, wrapping around, so released addresses are reused last;
   * every dynamic call reserves a new address (releaseOwner frees all an owner holds). Common case:
   * one cursor read, one reserve, one cursor write; the pool is listed only when the addresses after
   * the cursor are taken. EXHAUSTED names the subnet or ip-range and its size. NOT_FOUND when the
   * network has no pool of the family (the family is that of `ip`, else `family`, else 4).
   */
  requestAddress(req: AddressRequest): Promise<Allocation>;
  /** Frees one address; true if something was freed. Idempotent (false when not held, pool gone). */
  releaseAddress(req: ReleaseAddressRequest): Promise<boolean>;
  /** Frees every address `owner` holds (in one network, or all), e.g. on endpoint delete or after a crash. */
  releaseOwner(owner: string, opts?: { readonly networkId?: NetworkId }): Promise<Released[]>;
  /**
   * Garbage collection (CNI GC, `tsnet gc`): frees every address whose owner `keep` rejects. Goes on
   * after a failed release; if any failed, throws one TsnetError at the end (code of the first
   * failure, `cause` an AggregateError of all, `details.released` what was freed). releaseOwner too.
   */
  gc(opts: { readonly networkId?: NetworkId; readonly keep: (owner: string) => boolean }): Promise<Released[]>;
  /** The addresses held in the network's pools, sorted by family then address. */
  listAddresses(networkId: NetworkId): Promise<Allocation[]>;
}
