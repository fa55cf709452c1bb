/**
 * The in-memory store: the same contract as the fs store (test/contracts/store.ts runs both), for
 * callers' unit tests. Records are kept as the same serialized envelopes the fs store writes, so
 * validation, copies and corruption behave alike. Locks are per process (one store = one
 * "machine"). Failure injection: `failNext(op, error)` makes the next call of `op` reject before it
 * has any effect; `writeRaw` plants a corrupt or hand-edited record.
 */
import { TsnetError } from '../../core/errors.js';
import {
  byId,
  decodeRecord,
  SET_ASIDE_PROBLEMS,
  splitUnreadable,
  type CorruptProblem,
  encodeRecord,
  parseCollectionName,
  parseOwner,
  parseRecordId,
  parseRecordSpec,
  recordLockName,
  reservationLockName,
  type Collection,
  type Entry,
  type LockOptions,
  type OpOptions,
  type RecordSpec,
  type Reservations,
  type Store,
} from './api.js';
import { createLocker } from './lock.js';

export type MemoryOp =
  | 'get'
  | 'list'
  | 'create'
  | 'put'
  | 'update'
  | 'upsert'
  | 'delete'
  | 'reserve'
  | 'owner'
  | 'release'
  | 'releaseOwner'
  | 'listReservations'
  | 'lock';

export interface MemoryStore extends Store {
  /** The next call of `op` (in any collection or pool) rejects with `error`, before any effect. Queues. */
  failNext(op: MemoryOp, error: unknown): void;
  /** Sets the stored text of a record as-is (no validation): a crash, a hand edit, an old version. */
  writeRaw(collection: string, id: string, text: string): void;
  /** The stored text of a record (the envelope), or undefined. */
  readRaw(collection: string, id: string): string | undefined;
}

export function createMemoryStore(opts: { readonly lockTimeoutMs?: number } = {}): MemoryStore {
  const records = new Map<string, Map<string, string>>();
  const setAsideRows = new Map<string, Map<string, string>>();
  const pools = new Map<string, Map<string, string>>();
  const failures = new Map<MemoryOp, unknown[]>();
  const locker = createLocker({ label: 'memory', ...(opts.lockTimeoutMs === undefined ? {} : { defaultTimeoutMs: opts.lockTimeoutMs }) });

  const injected = (op: MemoryOp): void => {
    const q = failures.get(op);
    if (q === undefined || q.length === 0) return;
    const err = q.shift();
    throw err;
  };
  const checkSignal = (o: OpOptions | undefined, what: string): void => {
    if (o?.signal?.aborted) throw new TsnetError('UNAVAILABLE', `${what}: aborted`, { cause: o.signal.reason });
  };
  const table = <V>(m: Map<string, Map<string, V>>, name: string): Map<string, V> => {
    let t = m.get(name);
    if (t === undefined) {
      t = new Map();
      m.set(name, t);
    }
    return t;
  };
  // Yield once per operation, as real I/O would, so callers' interleavings are exercised.
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

  function withLock<T>(name: string, fn: () => Promise<T>, lo?: LockOptions): Promise<T> {
    return (async () => {
      injected('lock');
      return locker.withLock(name, fn, lo);
    })();
  }

  function collection<T>(rawSpec: RecordSpec<T>): Collection<T> {
    const spec = parseRecordSpec(rawSpec);
    const rows = table(records, spec.name);
    const aside = table(setAsideRows, spec.name);
    const pathOf = (id: string): string => `memory:${spec.name}/${id}.json`;
    const asidePath = (id: string): string => `memory:corrupt/${spec.name}/${id}.json`;
    const setAsideNow = (id: string): boolean => {
      const text = rows.get(id);
      if (text === undefined) return false;
      try {
        decodeRecord(spec, id, text, pathOf(id));
        return false;
      } catch (err) {
        const problem = err instanceof TsnetError ? err.details['problem'] : undefined;
        if (!SET_ASIDE_PROBLEMS.includes(problem as CorruptProblem)) return false;
      }
      aside.set(id, text);
      rows.delete(id);
      return true;
    };
    const asideErr = (err: TsnetError): TsnetError => {
      const id = err.details['id'];
      if (typeof id !== 'string' || !setAsideNow(id)) return err;
      return new TsnetError(err.code, `${err.message}; set aside as ${asidePath(id)}`, { cause: err, details: { ...err.details, setAside: asidePath(id) } });
    };
    const read = (id: string): T | undefined => {
      const text = rows.get(parseRecordId(id));
      return text === undefined ? undefined : decodeRecord(spec, id, text, pathOf(id));
    };
    const write = (id: string, record: T): T => {
      const enc = encodeRecord(spec, id, record);
      rows.set(id, enc.text);
      return enc.record;
    };
    const locked = async <R>(op: MemoryOp, id: string, o: OpOptions | undefined, fn: () => Promise<R>): Promise<R> => {
      parseRecordId(id);
      injected(op);
      return locker.withLock(recordLockName(spec.name, id), fn, o);
    };
    const notFound = (id: string): TsnetError => new TsnetError('NOT_FOUND', `${spec.name} ${id}: not found`, { details: { collection: spec.name, id } });

    const self: Collection<T> = {
      name: spec.name,
      async get(id, o) {
        checkSignal(o, `get ${spec.name}/${id}`);
        parseRecordId(id);
        injected('get');
        await tick();
        if (o?.setAside !== true) return read(id);
        try {
          return read(id);
        } catch (err) {
          if (err instanceof TsnetError && asideErr(err).details['setAside'] !== undefined) return undefined;
          throw err;
        }
      },
      async require(id, o) {
        const r = await self.get(id, o);
        if (r === undefined) throw notFound(id);
        return r;
      },
      async list(o) {
        checkSignal(o, `list ${spec.name}`);
        injected('list');
        await tick();
        const entries: Entry<T>[] = [];
        const errors: TsnetError[] = [];
        for (const id of [...rows.keys()].sort()) {
          if (o?.prefix !== undefined && !id.startsWith(o.prefix)) continue;
          try {
            const record = read(id);
            if (record !== undefined) entries.push({ id, record });
          } catch (err) {
            if (!(err instanceof TsnetError)) throw err;
            errors.push(o?.setAside === true ? asideErr(err) : err);
          }
        }
        if (o?.setAside === true) return { entries: entries.sort(byId), ...splitUnreadable(errors) };
        return { entries: entries.sort(byId), errors };
      },
      setAside(id, o) {
        return locked('put', id, o, async () => {
          await tick();
          return setAsideNow(id);
        });
      },
      async listSetAside() {
        await tick();
        return [...aside.keys()].sort().map((id) => ({ id, path: asidePath(id) }));
      },
      async discardSetAside(id) {
        await tick();
        return aside.delete(id);
      },
      create(id, record, o) {
        return locked('create', id, o, async () => {
          await tick();
          if (rows.has(id)) throw new TsnetError('ALREADY_EXISTS', `${spec.name} ${id}: already exists`, { details: { collection: spec.name, id, path: pathOf(id) } });
          return write(id, record);
        });
      },
      put(id, record, o) {
        return locked('put', id, o, async () => {
          await tick();
          return write(id, record);
        });
      },
      update(id, fn, o) {
        return locked('update', id, o, async () => {
          await tick();
          const cur = read(id);
          if (cur === undefined) throw notFound(id);
          const next = await fn(cur);
          await tick();
          return write(id, next);
        });
      },
      upsert(id, fn, o) {
        return locked('upsert', id, o, async () => {
          await tick();
          const next = await fn(read(id));
          await tick();
          return write(id, next);
        });
      },
      delete(id, o) {
        return locked('delete', id, o, async () => {
          await tick();
          return rows.delete(id);
        });
      },
    };
    return self;
  }

  function reservations(rawName: string): Reservations {
    const name = parseCollectionName(rawName, 'reservation pool name');
    const held = table(pools, name);
    const self: Reservations = {
      name,
      async reserve(key, owner, o) {
        checkSignal(o, `reserve ${name}/${key}`);
        parseRecordId(key, 'reservation key');
        parseOwner(owner);
        injected('reserve');
        await tick();
        if (held.has(key)) return false;
        held.set(key, owner);
        return true;
      },
      async owner(key, o) {
        checkSignal(o, `owner ${name}/${key}`);
        parseRecordId(key, 'reservation key');
        injected('owner');
        await tick();
        return held.get(key);
      },
      async release(key, owner, o) {
        parseRecordId(key, 'reservation key');
        if (owner !== undefined) parseOwner(owner);
        injected('release');
        return locker.withLock(
          reservationLockName(name, key),
          async () => {
            await tick();
            const cur = held.get(key);
            if (cur === undefined || (owner !== undefined && cur !== owner)) return false;
            held.delete(key);
            return true;
          },
          o,
        );
      },
      async releaseOwner(owner, o) {
        parseOwner(owner);
        injected('releaseOwner');
        const out: string[] = [];
        for (const r of await self.list(o)) {
          if (r.owner === owner && (await self.release(r.key, owner, o))) out.push(r.key);
        }
        return out;
      },
      async releaseAll(o) {
        const released: string[] = [];
        for (const r of await self.list(o)) if (await self.release(r.key, undefined, o)) released.push(r.key);
        return released;
      },
      async list(o) {
        checkSignal(o, `list reservations ${name}`);
        injected('listReservations');
        await tick();
        return [...held.entries()].map(([key, owner]) => ({ key, owner })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      },
    };
    return self;
  }

  return {
    location: 'memory:',
    collection,
    reservations,
    withLock,
    failNext(op, error) {
      const q = failures.get(op) ?? [];
      q.push(error);
      failures.set(op, q);
    },
    writeRaw(coll, id, text) {
      table(records, parseCollectionName(coll)).set(parseRecordId(id), text);
    },
    readRaw(coll, id) {
      return records.get(parseCollectionName(coll))?.get(parseRecordId(id));
    },
  };
}
