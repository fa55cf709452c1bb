/**
 * The store port: tsnet's persisted records (networks, endpoints, sandboxes, containers) in typed
 * collections, cheap create-exclusive reservations (IP addresses, ports), and named locks that
 * serialize work across async tasks AND across processes (CNI plugins run as many concurrent
 * short-lived processes).
 *
 * Implementations: `fs.ts` (the embedded default: one JSON file per record under the state
 * directory, crash-safe writes, kernel-released cross-process locks) and `memory.ts` (same
 * contract, in memory, with failure injection, for callers' unit tests). Both run through
 * test/contracts/store.ts.
 *
 * Callers outside composition roots import this file with `import type` only; the pure codec below
 * (`encodeRecord`/`decodeRecord`/parsers) is shared by the two implementations.
 *
 * Rules a caller can rely on:
 * - Every record is validated with its collection's zod schema when written and when read.
 * - A record that cannot be read (empty, truncated, invalid JSON, wrong schemaVersion, schema
 *   mismatch) is a TsnetError INTERNAL whose message and `details.path` name the file and whose
 *   `details.problem` says what is wrong. `get` throws it; `list` returns the good records and the
 *   errors side by side, so one bad file neither hides the others nor goes unnoticed.
 * - Mutations of one record are serialized by a per-record lock, so `update` is a true
 *   read-modify-write across processes (no lost update). Record locks are leaves: never call
 *   `withLock` from inside an `update` callback.
 * - `delete`, `release` succeed when the target is already gone.
 */
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import { invalidName, parseCollectionName } from './names.js';
import type { IpAddr, Prefix } from '../../core/net.js';

export interface LockOptions {
  /** Gives up waiting (TsnetError UNAVAILABLE) when aborted. Does not interrupt a running `fn`. */
  readonly signal?: AbortSignal;
  /** Bound on the wait for the lock, in ms; TsnetError UNAVAILABLE naming the lock when exceeded. */
  readonly timeoutMs?: number;
}

/** Per-operation options: mutations wait for a record lock, bounded by these. */
export type OpOptions = LockOptions;

export interface ListOptions extends OpOptions {
  /** Only records whose id starts with this (cheap: other files are not read). */
  readonly prefix?: string;
  /** Records that cannot be read are set aside (`setAside`); their errors say so (`details.setAside`). */
  readonly setAside?: boolean;
}

export interface GetOptions extends OpOptions {
  /** A record that cannot be read is set aside (`setAside`) and reads as absent. */
  readonly setAside?: boolean;
}

/** A record set aside because it could not be read. */
export interface SetAsideRecord {
  readonly id: string;
  /** Where it is kept now (STATE/corrupt/COLLECTION/ID.json). */
  readonly path: string;
}

/** The problems for which a record is set aside: it will never read (a newer tsnet's record is left alone). */
export const SET_ASIDE_PROBLEMS: readonly CorruptProblem[] = ['empty', 'invalid-json', 'not-a-record', 'id-mismatch', 'older-version', 'schema'];

export interface RecordSpec<T> {
  /** Collection name: 1-64 of [a-z0-9_.-], starting with a letter or digit. */
  readonly name: string;
  /** The schemaVersion written now. Files with a newer version are refused, never rewritten. */
  readonly version: number;
  /** Validates the record on write and on read. Use strict objects (unknown keys are errors). */
  readonly schema: z.ZodType<T>;
  /**
   * Upgrades a record stored with an older schemaVersion to the current one (the result is then
   * validated by `schema`). Without it, an older version is a read error naming the file.
   */
  readonly migrate?: (fromVersion: number, raw: unknown) => unknown;
}

export interface Entry<T> {
  readonly id: string;
  readonly record: T;
}

export interface ListResult<T> {
  /** The records that read and validated, sorted by id. */
  readonly entries: readonly Entry<T>[];
  /** One TsnetError (INTERNAL, `details.path`, `details.problem`) per file that did not. */
  readonly errors: readonly TsnetError[];
  /**
   * With `setAside`: the files that are no readable record, moved out of the way (set aside) or left
   * (a newer tsnet's, a stray file), which the caller reports and skips; `errors` then holds only
   * real failures (the disk).
   */
  readonly unreadable?: readonly TsnetError[];
}

/** With `setAside`: splits a listing's errors into what is skipped (reported) and what fails. */
export function splitUnreadable(errors: readonly TsnetError[]): { readonly unreadable: TsnetError[]; readonly errors: TsnetError[] } {
  const unreadable: TsnetError[] = [];
  const failed: TsnetError[] = [];
  for (const e of errors) {
    const problem = e.details['problem'];
    if (e.details['setAside'] !== undefined || problem === 'newer-version' || problem === 'unexpected-file') unreadable.push(e);
    else failed.push(e);
  }
  return { unreadable, errors: failed };
}

export interface Collection<T> {
  readonly name: string;
  /** The record, or undefined if there is none. Throws INTERNAL (naming the file) if it is corrupt (unless `setAside`). */
  get(id: string, opts?: GetOptions): Promise<T | undefined>;
  /** The record; NOT_FOUND if there is none. */
  require(id: string, opts?: OpOptions): Promise<T>;
  /** Every record that reads, plus an error per file that does not. Never throws for one bad file. */
  list(opts?: ListOptions): Promise<ListResult<T>>;
  /** Writes a new record; ALREADY_EXISTS if the id is taken (even by a corrupt file). */
  create(id: string, record: T, opts?: OpOptions): Promise<T>;
  /** Writes the record, replacing any existing one (also a corrupt one: this is how to repair). */
  put(id: string, record: T, opts?: OpOptions): Promise<T>;
  /** Read-modify-write under the record's lock; NOT_FOUND if absent. `fn` must not take locks. */
  update(id: string, fn: (current: T) => T | Promise<T>, opts?: OpOptions): Promise<T>;
  /** Like update, but `fn` gets undefined when the record does not exist yet (create-or-update). */
  upsert(id: string, fn: (current: T | undefined) => T | Promise<T>, opts?: OpOptions): Promise<T>;
  /** Removes the record (also a corrupt one); true if it existed, false if it was already gone. */
  delete(id: string, opts?: OpOptions): Promise<boolean>;
  /**
   * Moves a record that cannot be read (SET_ASIDE_PROBLEMS) out of the collection, kept as it was
   * for inspection (an earlier one of the same id is replaced): the id is free again and listings no
   * longer meet it. True if it moved; false for a readable record, a newer tsnet's, or none.
   */
  setAside(id: string, opts?: OpOptions): Promise<boolean>;
  /** The records set aside, sorted by id. */
  listSetAside(): Promise<SetAsideRecord[]>;
  /** Deletes a record set aside; true if there was one. */
  discardSetAside(id: string): Promise<boolean>;
}

export interface Reservation {
  readonly key: string;
  readonly owner: string;
}

/**
 * A pool of create-exclusive reservations: one entry per key (an address "10.1.0.5", a port
 * "tcp-8080"), taken atomically without any lock, so many processes can reserve distinct keys in
 * parallel. The owner is an opaque string (e.g. "containerid/eth0").
 */
export interface Reservations {
  readonly name: string;
  /** Takes `key` for `owner`: true if taken now, false if it was already taken (by anyone). */
  reserve(key: string, owner: string, opts?: OpOptions): Promise<boolean>;
  /** Who holds `key`, or undefined. An entry whose owner was lost in a crash reads as "". */
  owner(key: string, opts?: OpOptions): Promise<string | undefined>;
  /**
   * Releases `key`: true if this call released it. With `owner`, only if held by that owner
   * (checked and removed atomically); otherwise whoever holds it. Succeeds if already free.
   */
  release(key: string, owner?: string, opts?: OpOptions): Promise<boolean>;
  /** Releases every key held by `owner`; returns the keys released, sorted. */
  releaseOwner(owner: string, opts?: OpOptions): Promise<string[]>;
  /** Releases every key of the pool (e.g. when its network is deleted); returns the keys released. */
  releaseAll(opts?: OpOptions): Promise<string[]>;
  /** Every reservation, sorted by key. */
  list(opts?: OpOptions): Promise<Reservation[]>;
}

export interface Store {
  /** Where records live ("/var/lib/tsnet", or "memory:" for the in-memory store). */
  readonly location: string;
  collection<T>(spec: RecordSpec<T>): Collection<T>;
  /** Pool name: same rules as a collection name. */
  reservations(name: string): Reservations;
  /**
   * Runs `fn` holding the named lock: serialized with every other holder of that name in this
   * process (FIFO) and, for the fs store, in every process using the same state directory. The
   * lock is released when `fn` settles, or by the kernel if the process dies. Waiting is bounded
   * (`timeoutMs`, default 30 s) and abortable: UNAVAILABLE naming the lock. Taking a lock this
   * task already holds is an INTERNAL error (it would deadlock); holding two different locks is
   * allowed but must follow one global order.
   */
  withLock<T>(name: string, fn: () => Promise<T>, opts?: LockOptions): Promise<T>;
}

// Names and ids (sys/store/names.ts: zod-free, so the CNI plugin bundle's lock does not pull zod in).
export { parseCollectionName, parseLockName, parseOwner, parseRecordId } from './names.js';
export function parseRecordSpec<T>(spec: RecordSpec<T>): RecordSpec<T> {
  parseCollectionName(spec.name);
  if (!Number.isInteger(spec.version) || spec.version < 1) {
    throw invalidName('schemaVersion', spec.version, 'must be an integer >= 1');
  }
  return spec;
}

/** The lock that serializes mutations of one record. */
export const recordLockName = (collection: string, id: string): string => `record/${collection}/${id}`;
/** The lock that serializes owner-checked releases of one reservation. */
export const reservationLockName = (pool: string, key: string): string => `reservation/${pool}/${key}`;

// ---------------------------------------------------------------------------------------------
// The on-disk (and in-memory) form of a record: a small envelope around the validated record.
//   { "schemaVersion": 1, "id": "n1", "record": { ... } }
// The id is repeated inside so that a file copied or renamed by hand is detected.

const EnvelopeSchema = z.strictObject({
  schemaVersion: z.number().int().min(1),
  id: z.string(),
  record: z.unknown(),
});

export type CorruptProblem = 'empty' | 'invalid-json' | 'not-a-record' | 'id-mismatch' | 'newer-version' | 'older-version' | 'schema' | 'unexpected-file';

export function corruptRecord(path: string, problem: CorruptProblem, why: string, extra: Record<string, unknown> = {}, cause?: unknown): TsnetError {
  return new TsnetError('INTERNAL', `corrupt record ${path}: ${why}`, {
    ...(cause === undefined ? {} : { cause }),
    details: { path, problem, ...extra },
  });
}

/** Validates and serializes a record. A record that fails its schema is INVALID_CONFIG (nothing is written). */
export function encodeRecord<T>(spec: RecordSpec<T>, id: string, record: T): { readonly text: string; readonly record: T } {
  const r = spec.schema.safeParse(record);
  if (!r.success) {
    throw new TsnetError('INVALID_CONFIG', `${spec.name}/${id}: refusing to write an invalid record: ${z.prettifyError(r.error)}`, {
      details: { collection: spec.name, id },
    });
  }
  const text = `${JSON.stringify({ schemaVersion: spec.version, id, record: r.data })}\n`;
  return { text, record: r.data };
}

/**
 * Parses one stored record. `path` names the file in every error (a file path for the fs store,
 * "memory:COLLECTION/ID.json" for the memory store).
 */
export function decodeRecord<T>(spec: RecordSpec<T>, id: string, text: string, path: string): T {
  const where = { collection: spec.name, id };
  if (text.trim().length === 0) throw corruptRecord(path, 'empty', 'empty file (a write was interrupted before tsnet used atomic writes, or the file was truncated)', where);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw corruptRecord(path, 'invalid-json', `invalid JSON (${err instanceof Error ? err.message : String(err)}; ${text.length} bytes, truncated?)`, where, err);
  }
  const env = EnvelopeSchema.safeParse(raw);
  if (!env.success) throw corruptRecord(path, 'not-a-record', `not a tsnet record envelope {schemaVersion, id, record}: ${z.prettifyError(env.error)}`, where);
  const { schemaVersion, record } = env.data;
  if (env.data.id !== id) throw corruptRecord(path, 'id-mismatch', `holds id ${JSON.stringify(env.data.id)}, but its file name says ${JSON.stringify(id)}`, where);
  if (schemaVersion > spec.version) {
    throw corruptRecord(path, 'newer-version', `schemaVersion ${schemaVersion} was written by a newer tsnet; this one reads up to ${spec.version}`, { ...where, schemaVersion });
  }
  let current: unknown = record;
  if (schemaVersion < spec.version) {
    if (spec.migrate === undefined) {
      throw corruptRecord(path, 'older-version', `schemaVersion ${schemaVersion} is older than ${spec.version} and collection ${spec.name} has no migration`, { ...where, schemaVersion });
    }
    try {
      current = spec.migrate(schemaVersion, record);
    } catch (err) {
      throw corruptRecord(path, 'older-version', `migration from schemaVersion ${schemaVersion} failed: ${err instanceof Error ? err.message : String(err)}`, { ...where, schemaVersion }, err);
    }
  }
  const r = spec.schema.safeParse(current);
  if (!r.success) throw corruptRecord(path, 'schema', `does not match the ${spec.name} schema (schemaVersion ${schemaVersion}): ${z.prettifyError(r.error)}`, { ...where, schemaVersion });
  return r.data;
}

/** Sorts entries by id (code-unit order, the same in every implementation). */
export function byId<E extends { readonly id: string }>(a: E, b: E): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

// The records CNI plugins leave for tsnet's DNS (cni-attachments.ts).

export interface CniAttachmentRecord {
  /** The DNS network's id (`cni-<network name>`, as the firewall owner of the network). */
  readonly networkId: string;
  /** The CNI network name (`name` of the configuration). */
  readonly network: string;
  /** The bridge's gateway addresses: where the resolver listens for this network. */
  readonly gateways: readonly IpAddr[];
  readonly subnets: readonly Prefix[];
  readonly containerId: string;
  readonly ifName: string;
  /** The container's addresses on the network. */
  readonly addresses: readonly IpAddr[];
  /** Names answered with `addresses`, the canonical (PTR) one first. */
  readonly names: readonly string[];
}

/** The attachment records of tsnet's DNS and the daemon that serves them, as a CNI plugin sees them. */
export interface CniDnsRegistry {
  put(id: string, rec: CniAttachmentRecord): Promise<void>;
  /** true if the record existed. */
  remove(id: string): Promise<boolean>;
  /** Ids of the records whose id starts with `prefix`. */
  ids(prefix: string): Promise<string[]>;
  /** Temp files of records `keep` rejects (a writer killed mid-way); removes them, returns their names. */
  removeStaleTemps(keep: (id: string) => boolean): Promise<string[]>;
  /**
   * Makes a running daemon reload and waits for its ack (at most `timeoutMs`: UNAVAILABLE beyond);
   * false if none runs.
   */
  reload(timeoutMs: number): Promise<boolean>;
}

// The reference host-local IPAM's on-disk reservations (host-local.ts).

export interface HostLocalReservation {
  readonly ip: string;
  readonly containerId: string;
  /** Undefined for a legacy file holding the container id only. */
  readonly ifName: string | undefined;
}

export interface HostLocalStore {
  readonly dir: string;
  /** Runs `fn` holding the directory's lock (kernel-released; see the file comment). Taken by GC;
   *  ADD and DEL rely on the exclusive creation of reservation files. */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Reserves `ip` for the attachment (false if it is taken). The file appears with its content or
   * not at all (written beside, then linked into place), so a process killed mid-way never leaves a
   * reservation without an owner. Errors: IO_FAILURE (disk full, read-only), INTERNAL.
   */
  reserve(ip: string, containerId: string, ifName: string): Promise<boolean>;
  /** The last address handed out from range set `rangeId` (the round-robin hint). */
  lastReserved(rangeId: number): Promise<string | undefined>;
  /** Records the hint; best effort (a hint that cannot be written costs only round-robin order). */
  setLastReserved(rangeId: number, ip: string): Promise<void>;
  /** The reservation of one address, if any. */
  get(ip: string): Promise<HostLocalReservation | undefined>;
  /** Deletes the reservation file of `ip`; succeeds if absent. */
  release(ip: string): Promise<void>;
  /** Every reservation (walks the directory; skips `lock`, `last_reserved_ip.*` and temp files). */
  list(): Promise<HostLocalReservation[]>;
  /** Removes temp files whose writer is gone (a killed plugin's); returns their names. */
  removeStaleTemps(isAlive: (pid: number) => boolean): Promise<string[]>;
}

// The cluster store (etcd.ts; kv-memory.ts for callers' unit tests): a consistent key-value store
// shared by every host of a cluster, with revisions, leases and watches (etcd's v3 model).

export interface KvEntry {
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  /** The lease the key is attached to (it goes when the lease expires). */
  readonly lease?: string;
}

export type KvEvent =
  | { readonly type: 'put'; readonly entry: KvEntry }
  | { readonly type: 'delete'; readonly key: string; readonly modRevision: number };

export type KvOp =
  | { readonly op: 'put'; readonly key: string; readonly value: string; readonly lease?: string }
  | { readonly op: 'delete'; readonly key: string };

/** A condition of a transaction: the key is absent (`absent`), or was last written at `modRevision`. */
export type KvCompare = { readonly key: string; readonly absent: true } | { readonly key: string; readonly modRevision: number };

export interface KvTxnResult {
  readonly succeeded: boolean;
  readonly revision: number;
  /** On failure: the entries of the keys named in `readOnFailure` that exist. */
  readonly read: readonly KvEntry[];
}

export interface KvWatchHandler {
  /** Events in revision order; `revision` is the store's revision they bring the watcher to. */
  onEvents(events: readonly KvEvent[], revision: number): void;
  /** The revision to resume from was compacted away: the watcher must list again (its `revision`). */
  onCompacted(revision: number): void;
  /** The watch stream broke (false) or is established again (true). */
  onConnection?(up: boolean): void;
}

export interface KvWatch {
  /** The last revision delivered (resumed from +1 after a reconnect). */
  readonly revision: number;
  /** Reconnects at once (the store is reachable again) instead of at the next retry. */
  kick(): void;
  close(): void;
}

export interface ClusterKv {
  /** Where it is, for messages: "etcd://10.0.0.1:2379,10.0.0.2:2379". */
  readonly where: string;
  get(key: string): Promise<KvEntry | undefined>;
  /** Every key under `prefix`, sorted, and the store's revision of that reading. */
  list(prefix: string): Promise<{ readonly entries: readonly KvEntry[]; readonly revision: number }>;
  /** One atomic round trip: `then` when every compare holds, else the keys of `readOnFailure` are read. */
  txn(req: { readonly if: readonly KvCompare[]; readonly then: readonly KvOp[]; readonly readOnFailure?: readonly string[] }): Promise<KvTxnResult>;
  put(key: string, value: string, opts?: { readonly lease?: string }): Promise<number>;
  /** true if the key existed. */
  delete(key: string): Promise<boolean>;
  grantLease(ttlSeconds: number): Promise<string>;
  /** Renews the lease; its remaining TTL in seconds, 0 when it has expired (or never existed). */
  keepAlive(lease: string): Promise<number>;
  /** Succeeds when the lease is already gone. */
  revokeLease(lease: string): Promise<void>;
  /** Watches every key under `prefix` from `fromRevision` on; reconnects by itself, resuming after the last revision delivered. */
  watch(prefix: string, fromRevision: number, handler: KvWatchHandler): KvWatch;
  close(): Promise<void>;
}
