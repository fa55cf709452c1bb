/**
 * The persistence port of the controller, narrow on purpose: the composition root adapts the
 * embedded store (sys/store) to it; tests use `createMemoryCnmState`.
 */
import type { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import type { Store } from '../sys/store/api.js';
import { EndpointRecordSchema, NetworkRecordSchema, SandboxRecordSchema, type EndpointRecord, type NetworkRecord, type SandboxRecord } from './model.js';

export interface Records<T extends { readonly id: string }> {
  get(id: string): Promise<T | undefined>;
  /** All records, or those whose id starts with `prefix`. */
  list(prefix?: string): Promise<T[]>;
  /** ALREADY_EXISTS if a record with that id exists. */
  create(rec: T): Promise<void>;
  put(rec: T): Promise<void>;
  /** Succeeds if there is none. */
  delete(id: string): Promise<void>;
}

export interface CnmState {
  readonly networks: Records<NetworkRecord>;
  readonly endpoints: Records<EndpointRecord>;
  readonly sandboxes: Records<SandboxRecord>;
  /** A cross-process lock (names: "networks", "sandbox:<id>"...), released if the holder dies. */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
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
  };
}

export function createMemoryCnmState(): CnmState {
  const tails = new Map<string, Promise<unknown>>();
  return {
    networks: memoryRecords<NetworkRecord>(),
    endpoints: memoryRecords<EndpointRecord>(),
    sandboxes: memoryRecords<SandboxRecord>(),
    async withLock(name, fn) {
      const prev = tails.get(name) ?? Promise.resolve();
      const run = prev.catch(() => undefined).then(fn);
      tails.set(name, run.catch(() => undefined));
      return run;
    },
  };
}

/** The controller's records in the embedded store (sys/store): one collection per kind. */
export function createStoreCnmState(store: Store): CnmState {
  const records = <T extends { readonly id: string }>(name: string, schema: z.ZodType<T>): Records<T> => {
    const c = store.collection<T>({ name, version: 1, schema });
    return {
      get: (id) => c.get(id),
      async list(prefix) {
        const r = await c.list(prefix === undefined ? {} : { prefix });
        // A corrupt record is reported, never silently dropped: refuse to act on partial state.
        if (r.errors.length > 0) throw new TsnetError('INTERNAL', `${name}: ${r.errors.map((e) => e.message).join('; ')}`, { details: { errors: r.errors.length } });
        return r.entries.map((e) => e.record);
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
  return {
    networks: records<NetworkRecord>('networks', NetworkRecordSchema as unknown as z.ZodType<NetworkRecord>),
    endpoints: records<EndpointRecord>('endpoints', EndpointRecordSchema as unknown as z.ZodType<EndpointRecord>),
    sandboxes: records<SandboxRecord>('sandboxes', SandboxRecordSchema as unknown as z.ZodType<SandboxRecord>),
    withLock: (name, fn) => store.withLock(`cnm/${name.replaceAll(':', '/')}`, fn),
  };
}
