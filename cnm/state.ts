/**
 * The persistence port of the controller, narrow on purpose: the composition root adapts the
 * embedded store (sys/store) to it; tests use `createMemoryCnmState`.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { TsnetError, isCode } from '../core/errors.js';
import { checkLockOrder } from './locks.js';
import {
  EndpointRecordSchema, LinkRecordSchema, NetworkRecordSchema, SandboxRecordSchema, SwitchRecordSchema,
  type EndpointRecord, type LinkRecord, type NetworkRecord, type SandboxRecord, type SwitchRecord,
} from './model.js';
import type { SetAsideRecord, Store } from '../sys/store/api.js';

const IndexMarkerSchema = z.strictObject({ indexed: z.literal(true) });

export interface Records<T extends { readonly id: string }> {
  get(id: string): Promise<T | undefined>;
  /** All records, or those whose id starts with `prefix`. */
  list(prefix?: string): Promise<T[]>;
  /** ALREADY_EXISTS if a record with that id exists. */
  create(rec: T): Promise<void>;
  put(rec: T): Promise<void>;
  /** Succeeds if there is none. */
  delete(id: string): Promise<void>;
  /** Records set aside because they could not be read (list and get set them aside and skip them). */
  listSetAside(): Promise<readonly SetAsideRecord[]>;
  /** Deletes a set-aside record (once what it described is removed). */
  discardSetAside(id: string): Promise<void>;
}

/** Unique names, each held by one record id (create-exclusive: no lock needed to take one). */
export interface NameIndex {
  /** Takes `name` for `id`: true if taken now (or `id` holds it), false if another id holds it. */
  reserve(name: string, id: string): Promise<boolean>;
  /** The id holding `name`, if any. */
  owner(name: string): Promise<string | undefined>;
  /** Frees `name` if `id` holds it. */
  release(name: string, id: string): Promise<void>;
  /** Frees whatever name `id` holds (its record, and so its name, could not be read). */
  releaseId(id: string): Promise<void>;
  /**
   * Whether the index covers every record. A state directory written before the index existed is
   * indexed once: the caller lists the records, reserves their names, then marks it complete.
   */
  complete(): Promise<boolean>;
  markComplete(): Promise<void>;
}

export interface CnmState {
  readonly networks: Records<NetworkRecord>;
  readonly endpoints: Records<EndpointRecord>;
  readonly sandboxes: Records<SandboxRecord>;
  /** Point-to-point links and the switches they may attach to (cnm/links.ts). */
  readonly links: Records<LinkRecord>;
  readonly switches: Records<SwitchRecord>;
  /** Sandbox names (a container's name): found and kept unique without reading every sandbox. */
  readonly sandboxNames: NameIndex;
  /** A cross-process lock (names and their order: locks.ts), released if the holder dies. */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /**
   * Runs `fn` holding the lock if nobody holds it now; `{ ran: false }` at once if someone does (a
   * live process: the kernel releases a dead one's locks), without waiting.
   */
  tryLock<T>(name: string, fn: () => Promise<T>): Promise<{ readonly ran: true; readonly value: T } | { readonly ran: false }>;
}

function memoryRecords<T extends { readonly id: string }>(): Records<T> {
  const m = new Map<string, T>();
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
  return {
    async get(id) {
      await tick();
      return m.get(id);
    },
    async list(prefix) {
      await tick();
      return [...m.values()].filter((r) => prefix === undefined || r.id.startsWith(prefix));
    },
    async create(rec) {
      await tick();
      if (m.has(rec.id)) throw new TsnetError('ALREADY_EXISTS', `record ${rec.id} exists`);
      m.set(rec.id, rec);
    },
    async put(rec) {
      await tick();
      m.set(rec.id, rec);
    },
    async delete(id) {
      await tick();
      m.delete(id);
    },
    listSetAside: async () => [],
    discardSetAside: async () => undefined,
  };
}

function memoryNames(): NameIndex {
  const m = new Map<string, string>();
  let complete = false;
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
  return {
    async reserve(name, id) {
      await tick();
      const cur = m.get(name);
      if (cur !== undefined) return cur === id;
      m.set(name, id);
      return true;
    },
    async owner(name) {
      await tick();
      return m.get(name);
    },
    async release(name, id) {
      await tick();
      if (m.get(name) === id) m.delete(name);
    },
    async releaseId(id) {
      await tick();
      for (const [k, v] of m) if (v === id) m.delete(k);
    },
    complete: async () => complete,
    async markComplete() {
      complete = true;
    },
  };
}

export function createMemoryCnmState(): CnmState {
  const tails = new Map<string, Promise<unknown>>();
  const busy = new Map<string, number>();
  const withLock = checkLockOrder(async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const prev = tails.get(name) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(async () => {
      busy.set(name, (busy.get(name) ?? 0) + 1);
      try {
        return await fn();
      } finally {
        busy.set(name, (busy.get(name) ?? 1) - 1);
      }
    });
    tails.set(name, run.catch(() => undefined));
    return run;
  });
  return {
    networks: memoryRecords<NetworkRecord>(),
    endpoints: memoryRecords<EndpointRecord>(),
    sandboxes: memoryRecords<SandboxRecord>(),
    links: memoryRecords<LinkRecord>(),
    switches: memoryRecords<SwitchRecord>(),
    sandboxNames: memoryNames(),
    withLock,
    async tryLock(name, fn) {
      if ((busy.get(name) ?? 0) > 0) return { ran: false };
      return { ran: true, value: await withLock(name, fn) };
    },
  };
}

/**
 * The controller's records in the embedded store (sys/store): one collection per kind. A record
 * that cannot be read is set aside (kept under STATE/corrupt/ for inspection), reported through
 * `onUnreadable`, and skipped: `tsnet rm -f` / `network rm` of its id remove what it described.
 */
export function createStoreCnmState(store: Store, opts: { readonly onUnreadable?: (msg: string, err: TsnetError) => void } = {}): CnmState {
  const report = opts.onUnreadable ?? (() => undefined);
  const withLock = checkLockOrder((name, fn, opts) => store.withLock(`cnm/${name.replaceAll(':', '/')}`, fn, opts));
  const records = <T extends { readonly id: string }>(name: string, schema: z.ZodType<T>): Records<T> => {
    const c = store.collection<T>({ name, version: 1, schema });
    return {
      get: (id) => c.get(id, { setAside: true }),
      async list(prefix) {
        const r = await c.list({ setAside: true, ...(prefix === undefined ? {} : { prefix }) });
        if (r.errors.length > 0) throw new TsnetError(r.errors[0]?.code ?? 'INTERNAL', `${name}: ${r.errors.map((e) => e.message).join('; ')}`, { cause: r.errors[0], details: { errors: r.errors.length } });
        for (const u of r.unreadable ?? []) report(`${name}: skipping a record that cannot be read`, u);
        return r.entries.map((e) => e.record);
      },
      listSetAside: () => c.listSetAside(),
      async discardSetAside(id) {
        await c.discardSetAside(id);
      },
      create: async (rec) => {
        await c.create(rec.id, rec);
      },
      put: async (rec) => {
        await c.put(rec.id, rec);
      },
      delete: async (id) => {
        await c.delete(id);
      },
    };
  };
  // Names are reservation keys (at most 200 characters; a sandbox name may have 253).
  const keyOf = (name: string): string => (name.length <= 200 ? name : `${name.slice(0, 120)}@${createHash('sha256').update(name).digest('hex')}`);
  const names = store.reservations('sandbox-names');
  const marker = store.collection<{ indexed: true }>({ name: 'indexes', version: 1, schema: IndexMarkerSchema });
  const sandboxNames: NameIndex = {
    async reserve(name, id) {
      if (await names.reserve(keyOf(name), id)) return true;
      return (await names.owner(keyOf(name))) === id;
    },
    owner: (name) => names.owner(keyOf(name)),
    async release(name, id) {
      await names.release(keyOf(name), id);
    },
    async releaseId(id) {
      await names.releaseOwner(id);
    },
    complete: async () => (await marker.get('sandbox-names')) !== undefined,
    async markComplete() {
      await marker.put('sandbox-names', { indexed: true });
    },
  };
  return {
    sandboxNames,
    networks: records<NetworkRecord>('networks', NetworkRecordSchema as unknown as z.ZodType<NetworkRecord>),
    endpoints: records<EndpointRecord>('endpoints', EndpointRecordSchema as unknown as z.ZodType<EndpointRecord>),
    sandboxes: records<SandboxRecord>('sandboxes', SandboxRecordSchema as unknown as z.ZodType<SandboxRecord>),
    links: records<LinkRecord>('links', LinkRecordSchema as unknown as z.ZodType<LinkRecord>),
    switches: records<SwitchRecord>('switches', SwitchRecordSchema as unknown as z.ZodType<SwitchRecord>),
    withLock,
    async tryLock(name, fn) {
      let entered = false;
      try {
        const value = await withLock(name, () => {
          entered = true;
          return fn();
        }, { timeoutMs: 0 });
        return { ran: true, value };
      } catch (err) {
        if (!entered && isCode(err, 'UNAVAILABLE')) return { ran: false };
        throw err;
      }
    },
  };
}
