/**
 * The embedded store: one JSON file per record under the state directory, safe under concurrent
 * processes and crashes.
 *
 *   STATE/.lock-secret                      random, mode 0600: part of every lock's name (lock.ts)
 *   STATE/records/COLLECTION/ID.json        {"schemaVersion":N,"id":"ID","record":{...}}
 *   STATE/reservations/POOL/KEY             the owner string (e.g. "containerid/eth0")
 *   .*.tmp-PID-RANDOM                       a write in progress (or interrupted); never read
 *
 * Writes: temp file in the same directory, write, fsync, rename over the target, fsync the
 * directory. A reader sees the old record or the new one, never a torn one, and a process killed
 * mid-write leaves at most a dot-file that readers ignore. Mutations of a record hold its
 * cross-process lock (lock.ts), so `update` is a real read-modify-write across processes.
 * Reservations take no lock: `open(O_CREAT|O_EXCL)` is the atomic test-and-set (EEXIST = taken),
 * like the reference host-local plugin's one file per IP.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, statSync, type BigIntStats } from 'node:fs';
import { link, mkdir, open, readdir, readFile, realpath, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError, fsError as coreFsError } from '../../core/errors.js';
import {
  byId,
  corruptRecord,
  SET_ASIDE_PROBLEMS,
  splitUnreadable,
  type CorruptProblem,
  decodeRecord,
  encodeRecord,
  parseCollectionName,
  parseOwner,
  parseRecordId,
  parseRecordSpec,
  recordLockName,
  reservationLockName,
  type Collection,
  type Entry,
  type ListResult,
  type OpOptions,
  type RecordSpec,
  type Reservation,
  type Reservations,
  type Store,
} from './api.js';
import { fsyncDir, tmpName, writeAtomic } from './atomic.js';
import { abstractSocketLock, createLocker, type CrossProcessLock, type Locker } from './lock.js';

export interface FsStoreOptions {
  /** The state directory; created (mode 0700) if missing. */
  readonly dir: string;
  /** Default bound on lock waits, ms (30 s if omitted). */
  readonly lockTimeoutMs?: number;
  /**
   * The cross-process half of the locks, given the store's scope (secret included); default the
   * abstract-socket lock of this process's network namespace. A process outside the namespace
   * playing host passes its lock proxy (lock-proxy.ts).
   */
  readonly crossProcess?: (scope: string) => CrossProcessLock;
}

const SECRET_FILE = '.lock-secret';
const SECRET = /^[0-9a-f]{64}\n?$/;
const READ_PARALLELISM = 32;
/**
 * Records are read with readFileSync, `list` in chunks of this many between event-loop turns.
 * Measured here (1,000 records of 1.5 kB, tmpfs): fs/promises readFile 68–92 ms, the callback API
 * 36–58 ms, readFileSync 9–11 ms; the promise API makes four thread-pool round trips per file
 * (open, fstat, read, close). `tsnet ps` with 250 containers spent most of its time there. A
 * chunk of 64 blocks the loop well under 1 ms; the state directory is a local disk.
 */
const READ_CHUNK = 64;

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/**
 * An fs failure as a TsnetError (core/errors.ts fsError): a full, read-only or failing disk is
 * IO_FAILURE (exit code 7), the rest INTERNAL; the errno is kept in details.
 */
function fsError(context: string, err: unknown): TsnetError {
  return coreFsError(context, err);
}

function checkSignal(opts: OpOptions | undefined, what: string): void {
  if (opts?.signal?.aborted) throw new TsnetError('UNAVAILABLE', `${what}: aborted`, { cause: opts.signal.reason });
}

async function readOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Decoded records are kept by the identity of the file they came from (inode, size, mtime, ctime),
 * so a list re-reads only what changed: one stat(2) instead of open/read/close, JSON and the zod
 * schema. Measured with 1,000 containers: `tsnet ps` spent 47 ms reading and 20 ms validating the
 * records, a stat of all 1,000 takes about 4 ms. Writes replace the file (rename), so a new version
 * is a new inode with a new ctime. Only a file left unchanged for STABLE_NS when it was read is
 * kept: a later write then carries a later mtime, even where an inode number is reused and file
 * times are as coarse as a jiffy. Kept records are frozen: whoever wants one changed makes a
 * changed copy, and what others are handed never changes under them.
 */
const STABLE_NS = 1_000_000_000n;

interface FileIdentity {
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
}
const identityOf = (st: BigIntStats): FileIdentity => ({ ino: st.ino, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs });
const sameFile = (a: FileIdentity, b: FileIdentity): boolean => a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

/** A record file's text and the identity of the very file it came from (read through one fd). */
function readWithIdentity(path: string): { readonly text: string; readonly id: FileIdentity } | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const id = identityOf(fstatSync(fd, { bigint: true }));
    return { text: readFileSync(fd, 'utf8'), id };
  } finally {
    closeSync(fd);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Maps over items with at most `n` in flight, keeping order. */
async function mapLimit<A, B>(items: readonly A[], n: number, fn: (a: A) => Promise<B>): Promise<B[]> {
  const out: B[] = new Array<B>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as A);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** Reads (or creates, race-free) the state directory's lock secret. */
async function loadSecret(dir: string): Promise<string> {
  const path = join(dir, SECRET_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    const text = await readOrUndefined(path);
    if (text !== undefined) {
      if (!SECRET.test(text)) {
        throw new TsnetError('INTERNAL', `corrupt lock secret ${path}: expected 64 hex digits; remove the file while no tsnet process runs`, {
          details: { path, problem: 'invalid-secret' },
        });
      }
      return text.trim();
    }
    // Write it whole under a temp name, then link(2): exactly one process's secret wins.
    const tmp = join(dir, tmpName(SECRET_FILE));
    await writeFile(tmp, `${randomBytes(32).toString('hex')}\n`, { flag: 'wx', mode: 0o600 });
    try {
      await link(tmp, path);
      await fsyncDir(dir);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw err;
    } finally {
      await rm(tmp, { force: true });
    }
  }
  throw new TsnetError('INTERNAL', `lock secret ${path}: could not be created`, { details: { path } });
}

/** Opens (creating if needed) the store in `opts.dir`. */
export async function openFsStore(opts: FsStoreOptions): Promise<Store> {
  let root: string;
  let scope: string;
  try {
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    root = await realpath(opts.dir);
    const st = await stat(root);
    const secret = await loadSecret(root);
    scope = `${root}\0${st.dev}:${st.ino}\0${secret}`;
  } catch (err) {
    throw fsError(`open store ${opts.dir}`, err);
  }
  const locker = createLocker({
    crossProcess: (opts.crossProcess ?? abstractSocketLock)(scope),
    label: root,
    ...(opts.lockTimeoutMs === undefined ? {} : { defaultTimeoutMs: opts.lockTimeoutMs }),
  });
  return createFsStore(root, locker);
}

function createFsStore(root: string, locker: Locker): Store {
  // One mkdir per write (~20 us, next to an fsync of ~1 ms): nothing cached that could go stale.
  const ensureDir = async (dir: string): Promise<void> => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  };
  const withLock = <T>(name: string, fn: () => Promise<T>, opts?: OpOptions): Promise<T> => locker.withLock(name, fn, opts);

  function collection<T>(rawSpec: RecordSpec<T>): Collection<T> {
    const spec = parseRecordSpec(rawSpec);
    const dir = join(root, 'records', spec.name);
    const asideDir = join(root, 'corrupt', spec.name);
    const pathOf = (id: string): string => join(dir, `${parseRecordId(id)}.json`);
    const asidePath = (id: string): string => join(asideDir, `${parseRecordId(id)}.json`);

    const cache = new Map<string, { readonly file: FileIdentity; readonly record: T }>();
    const readSync = (id: string): T | undefined => {
      const path = pathOf(id);
      let got: ReturnType<typeof readWithIdentity>;
      try {
        const hit = cache.get(id);
        if (hit !== undefined) {
          const st = statSync(path, { bigint: true, throwIfNoEntry: false });
          if (st !== undefined && sameFile(hit.file, identityOf(st))) return hit.record;
          cache.delete(id);
          if (st === undefined) return undefined;
        }
        got = readWithIdentity(path);
      } catch (err) {
        throw fsError(`read ${path}`, err);
      }
      if (got === undefined) return undefined;
      const record = decodeRecord(spec, id, got.text, path);
      const now = BigInt(Date.now()) * 1_000_000n;
      if (now - got.id.mtimeNs > STABLE_NS && now - got.id.ctimeNs > STABLE_NS) cache.set(id, { file: got.id, record: deepFreeze(record) });
      return record;
    };
    const read = async (id: string): Promise<T | undefined> => readSync(id);
    const write = async (id: string, record: T): Promise<T> => {
      const enc = encodeRecord(spec, id, record);
      cache.delete(id);
      try {
        await ensureDir(dir);
        await writeAtomic(dir, `${id}.json`, enc.text);
      } catch (err) {
        throw fsError(`write ${pathOf(id)}`, err);
      }
      return enc.record;
    };
    const locked = async <R>(id: string, opts: OpOptions | undefined, fn: () => Promise<R>): Promise<R> => {
      parseRecordId(id);
      return withLock(recordLockName(spec.name, id), fn, opts);
    };

    /** Sets aside, holding the record's lock: only what still does not read, for a reason it never will. */
    const setAsideLocked = async (id: string): Promise<boolean> => {
      try {
        await read(id);
        return false; // readable (or gone)
      } catch (err) {
        const problem = err instanceof TsnetError ? err.details['problem'] : undefined;
        if (!SET_ASIDE_PROBLEMS.includes(problem as CorruptProblem)) return false;
      }
      try {
        await ensureDir(asideDir);
        await rename(pathOf(id), asidePath(id));
        await fsyncDir(asideDir);
        await fsyncDir(dir);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') return false;
        throw fsError(`set aside ${pathOf(id)}`, err);
      }
      return true;
    };
    const setAsideOf = (err: TsnetError): Promise<TsnetError> => {
      const id = err.details['id'];
      if (typeof id !== 'string') return Promise.resolve(err);
      return locked(id, undefined, () => setAsideLocked(id)).then(
        (moved) => (moved ? new TsnetError(err.code, `${err.message}; set aside as ${asidePath(id)}`, { cause: err, details: { ...err.details, setAside: asidePath(id) } }) : err),
        () => err,
      );
    };

    const self: Collection<T> = {
      name: spec.name,
      async get(id, opts) {
        checkSignal(opts, `get ${spec.name}/${id}`);
        if (opts?.setAside !== true) return read(id);
        try {
          return await read(id);
        } catch (err) {
          if (!(err instanceof TsnetError) || (await setAsideOf(err)).details['setAside'] === undefined) throw err;
          return undefined;
        }
      },
      async require(id, opts) {
        const r = await self.get(id, opts);
        if (r === undefined) throw new TsnetError('NOT_FOUND', `${spec.name} ${id}: not found`, { details: { collection: spec.name, id } });
        return r;
      },
      async list(opts) {
        checkSignal(opts, `list ${spec.name}`);
        let names: string[];
        try {
          names = await readdir(dir);
        } catch (err) {
          if (errnoOf(err) === 'ENOENT') return { entries: [], errors: [] };
          throw fsError(`list ${dir}`, err);
        }
        const readOne = (name: string): Entry<T> | TsnetError | undefined => {
          const path = join(dir, name);
          const id = name.endsWith('.json') ? name.slice(0, -'.json'.length) : '';
          try {
            parseRecordId(id);
          } catch {
            return corruptRecord(path, 'unexpected-file', `unexpected file in collection ${spec.name} (records are ID.json)`, { collection: spec.name });
          }
          try {
            const record = readSync(id);
            return record === undefined ? undefined : { id, record }; // deleted meanwhile
          } catch (err) {
            return err instanceof TsnetError ? err : fsError(`read ${path}`, err);
          }
        };
        const wanted = names.filter((n) => !n.startsWith('.') && (opts?.prefix === undefined || n.startsWith(opts.prefix))).sort();
        if (opts?.prefix === undefined) {
          const present = new Set(wanted.map((n) => n.slice(0, -'.json'.length)));
          for (const id of cache.keys()) if (!present.has(id)) cache.delete(id);
        }
        const results: (Entry<T> | TsnetError | undefined)[] = [];
        for (let i = 0; i < wanted.length; i += READ_CHUNK) {
          if (i > 0) await nextTurn();
          for (const name of wanted.slice(i, i + READ_CHUNK)) results.push(readOne(name));
        }
        const entries: Entry<T>[] = [];
        const errors: TsnetError[] = [];
        for (const r of results) {
          if (r instanceof TsnetError) errors.push(opts?.setAside === true ? await setAsideOf(r) : r);
          else if (r !== undefined) entries.push(r);
        }
        if (opts?.setAside === true) return { entries: entries.sort(byId), ...splitUnreadable(errors) } satisfies ListResult<T>;
        return { entries: entries.sort(byId), errors } satisfies ListResult<T>;
      },
      setAside(id, opts) {
        return locked(id, opts, () => setAsideLocked(id));
      },
      async listSetAside() {
        let names: string[];
        try {
          names = await readdir(asideDir);
        } catch (err) {
          if (errnoOf(err) === 'ENOENT') return [];
          throw fsError(`list ${asideDir}`, err);
        }
        return names.filter((n) => n.endsWith('.json') && !n.startsWith('.')).map((n) => n.slice(0, -'.json'.length)).sort().map((id) => ({ id, path: join(asideDir, `${id}.json`) }));
      },
      async discardSetAside(id) {
        try {
          await unlink(asidePath(id));
        } catch (err) {
          if (errnoOf(err) === 'ENOENT') return false;
          throw fsError(`discard ${asidePath(id)}`, err);
        }
        return true;
      },
      create(id, record, opts) {
        return locked(id, opts, async () => {
          let taken: boolean;
          try {
            taken = await exists(pathOf(id));
          } catch (err) {
            throw fsError(`create ${pathOf(id)}`, err);
          }
          if (taken) throw new TsnetError('ALREADY_EXISTS', `${spec.name} ${id}: already exists`, { details: { collection: spec.name, id, path: pathOf(id) } });
          return write(id, record);
        });
      },
      put(id, record, opts) {
        return locked(id, opts, () => write(id, record));
      },
      update(id, fn, opts) {
        return locked(id, opts, async () => {
          const cur = await read(id);
          if (cur === undefined) throw new TsnetError('NOT_FOUND', `${spec.name} ${id}: not found`, { details: { collection: spec.name, id } });
          return write(id, await fn(cur));
        });
      },
      upsert(id, fn, opts) {
        return locked(id, opts, async () => write(id, await fn(await read(id))));
      },
      delete(id, opts) {
        return locked(id, opts, async () => {
          const path = pathOf(id);
          cache.delete(id);
          try {
            await unlink(path);
          } catch (err) {
            if (errnoOf(err) === 'ENOENT') return false;
            throw fsError(`delete ${path}`, err);
          }
          await fsyncDir(dir).catch((err: unknown) => {
            throw fsError(`delete ${path}: fsync ${dir}`, err);
          });
          return true;
        });
      },
    };
    return self;
  }

  function reservations(rawName: string): Reservations {
    const name = parseCollectionName(rawName, 'reservation pool name');
    const dir = join(root, 'reservations', name);
    const pathOf = (key: string): string => join(dir, parseRecordId(key, 'reservation key'));
    const readOwner = async (key: string): Promise<string | undefined> => {
      const path = pathOf(key);
      try {
        return await readOrUndefined(path);
      } catch (err) {
        throw fsError(`read ${path}`, err);
      }
    };
    const self: Reservations = {
      name,
      async reserve(key, owner, opts) {
        checkSignal(opts, `reserve ${name}/${key}`);
        const path = pathOf(key);
        parseOwner(owner);
        try {
          await ensureDir(dir);
        } catch (err) {
          throw fsError(`reserve ${path}`, err);
        }
        let fh;
        try {
          fh = await open(path, 'wx', 0o600); // O_CREAT|O_EXCL: the atomic test-and-set
        } catch (err) {
          if (errnoOf(err) === 'EEXIST') return false;
          throw fsError(`reserve ${path}`, err);
        }
        try {
          try {
            await fh.writeFile(owner);
            await fh.sync();
          } finally {
            await fh.close();
          }
          await fsyncDir(dir);
        } catch (err) {
          await rm(path, { force: true }).catch(() => undefined); // do not leave an ownerless entry behind
          throw fsError(`reserve ${path}`, err);
        }
        return true;
      },
      async owner(key, opts) {
        checkSignal(opts, `owner ${name}/${key}`);
        return readOwner(key);
      },
      async release(key, owner, opts) {
        const path = pathOf(key);
        if (owner !== undefined) parseOwner(owner);
        // Every release holds the key's lock, so the owner check and the unlink are one step.
        return withLock(
          reservationLockName(name, key),
          async () => {
            if (owner !== undefined && (await readOwner(key)) !== owner) return false;
            try {
              await unlink(path);
            } catch (err) {
              if (errnoOf(err) === 'ENOENT') return false;
              throw fsError(`release ${path}`, err);
            }
            await fsyncDir(dir).catch((err: unknown) => {
              throw fsError(`release ${path}: fsync ${dir}`, err);
            });
            return true;
          },
          opts,
        );
      },
      async releaseOwner(owner, opts) {
        parseOwner(owner);
        const released: string[] = [];
        for (const r of await self.list(opts)) {
          if (r.owner === owner && (await self.release(r.key, owner, opts))) released.push(r.key);
        }
        return released;
      },
      async releaseAll(opts) {
        const released: string[] = [];
        for (const r of await self.list(opts)) if (await self.release(r.key, undefined, opts)) released.push(r.key);
        return released;
      },
      async list(opts) {
        checkSignal(opts, `list reservations ${name}`);
        let names: string[];
        try {
          names = await readdir(dir);
        } catch (err) {
          if (errnoOf(err) === 'ENOENT') return [];
          throw fsError(`list ${dir}`, err);
        }
        // Dot files are never ours to read; other names that are not valid keys were not written
        // by reserve() (it validates every key) and are left alone.
        const keys = names.filter((n) => !n.startsWith('.')).filter((n) => {
          try {
            parseRecordId(n);
            return true;
          } catch {
            return false;
          }
        });
        const owners = await mapLimit(keys, READ_PARALLELISM, readOwner);
        const out: Reservation[] = [];
        keys.forEach((key, i) => {
          const owner = owners[i];
          if (owner !== undefined) out.push({ key, owner });
        });
        return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      },
    };
    return self;
  }

  return { location: root, collection, reservations, withLock };
}
