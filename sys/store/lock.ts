/**
 * Named locks that serialize async tasks in one process (FIFO, core/keyed-mutex) and, across
 * processes, are released by the KERNEL when the holder dies, with flock(2)-like semantics but no
 * native addon and no stale timeout.
 *
 * Mechanism: an abstract-namespace unix socket per lock. Holding the lock = having a listening
 * socket bound to `\0tsnet-lock-<hash>`; a second bind fails with EADDRINUSE. Waiters queue (see
 * "Abstract unix socket locks" below): each sleeps on a connection to the process ahead of it and
 * wakes when that connection closes, which happens the moment that process releases, gives up or
 * dies (the kernel closes a dead process's sockets, and resets connections still in its backlog,
 * so a holder stuck in a busy loop is no obstacle). No polling, no timeout-based stealing.
 *
 * Why not util-linux flock(1) as a holder child per acquisition (`stdbuf -oL flock --verbose
 * FILE cat`: three exec's; its --verbose line is block-buffered on a pipe, hence stdbuf; release =
 * end its stdin)? Measured on the 2-core machine while other jobs loaded it (load average 9-18;
 * bench/store.bench.ts, test/integration/store-concurrency.test.ts):
 *   acquire+release, uncontended:       0.18-0.21 ms   flock(1): 3.8-8 ms (20-40x slower)
 *   50 processes x 20 locked increments: 110-220 ops/s flock(1): 110-275 ops/s (from equal to
 *                                        1.3x better: the queue wakes 1-2 processes per release;
 *                                        wake-all had given 30 ops/s)
 *   10 processes x 50:                  180-190 ops/s  flock(1): 134-146 ops/s
 *   holder SIGKILLed -> waiter holds:   7-11 ms median (kernel-released, no stale timeout)
 * and flock(1) adds two live processes per waiter. flock(1) would work across network namespaces.
 *
 * Caveats, by design:
 * - Abstract socket names live in the NETWORK namespace. All processes sharing a state directory
 *   must take their locks in the same network namespace (tsnet's CLI, CNI plugins and daemon all run
 *   in the host's; a library outside it takes them there through lock-proxy.ts). Two processes
 *   locking in different network namespaces would NOT exclude each other. The name
 *   mixes the state directory's real path, device and inode and a random secret kept in the state
 *   directory (mode 0600), so different state directories never share a lock.
 * - Abstract names carry no permissions. An unprivileged process in the same network namespace
 *   that learns a name (they are visible in /proc/net/unix while held) could bind it and hold it,
 *   or queue a wait node that never lets go: waiters then time out with UNAVAILABLE naming the
 *   lock (and, for a squatted lock, the holder's pid and uid). That is a denial of service, never
 *   a second holder, and the secret prevents claiming names in advance. flock(2) on a 0600 file
 *   would not have this exposure; the state directory's permissions do not protect these names.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { TsnetError, wrap } from '../../core/errors.js';
import { KeyedMutex } from '../../core/keyed-mutex.js';
import type { LockOptions } from './api.js';
import { parseLockName } from './names.js';

export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
/** The message of a single try (`once`) that found the lock held. */
export const HELD = 'held';

export interface Locker {
  withLock<T>(name: string, fn: () => Promise<T>, opts?: LockOptions): Promise<T>;
}

/** The cross-process half of a lock. */
export interface CrossProcessLock {
  /**
   * Acquires `name`, waiting as long as needed until `stop` aborts (then rejects). Returns release.
   * `once`: a single try, `stop` ignored; rejects (`HELD`) when another holds it.
   */
  acquire(name: string, stop: AbortSignal, opts?: { readonly once?: boolean }): Promise<() => void>;
  /** Best-effort facts about the current holder, for timeout messages ({} if unknown). */
  describeHolder(name: string): Promise<Record<string, unknown>>;
}

export interface LockerOptions {
  /** Omitted: locks are per process only (the memory store). */
  readonly crossProcess?: CrossProcessLock;
  readonly defaultTimeoutMs?: number;
  /** Named in error messages, e.g. the state directory. */
  readonly label: string;
}

/** Tasks currently holding locks, per async context (to turn self-deadlock into an error). */
const held = new AsyncLocalStorage<ReadonlySet<string>>();

type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

export function createLocker(opts: LockerOptions): Locker {
  const mutex = new KeyedMutex();
  const defaultTimeoutMs = opts.defaultTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;

  return {
    async withLock<T>(name: string, fn: () => Promise<T>, lo: LockOptions = {}): Promise<T> {
      parseLockName(name);
      const mine = held.getStore();
      if (mine?.has(name)) {
        throw new TsnetError('INTERNAL', `lock ${name} (${opts.label}): already held by this task; taking it again would deadlock`, {
          details: { lock: name },
        });
      }
      const timeoutMs = lo.timeoutMs ?? defaultTimeoutMs;
      if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
        throw new TsnetError('INVALID_CONFIG', `lock ${name}: timeoutMs must be a finite number >= 0`, { details: { lock: name, timeoutMs } });
      }
      const stopped = (): TsnetError =>
        new TsnetError('UNAVAILABLE', `lock ${name} (${opts.label}): wait aborted`, { cause: lo.signal?.reason, details: { lock: name } });
      if (lo.signal?.aborted) throw stopped();

      const stop = new AbortController();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        stop.abort();
      }, timeoutMs);
      const onAbort = (): void => stop.abort();
      lo.signal?.addEventListener('abort', onAbort, { once: true });
      const stopWaiting = (): void => {
        clearTimeout(timer);
        lo.signal?.removeEventListener('abort', onAbort);
      };
      const waitError = async (): Promise<TsnetError> => {
        if (!timedOut) return stopped();
        // A try (timeout 0: the caller skips what is held) needs no explanation, and finding the
        // holder reads every process's fds in /proc (6 ms with 1,000 containers, per skipped lock).
        const holder: Record<string, unknown> = opts.crossProcess && timeoutMs > 0 ? await opts.crossProcess.describeHolder(name).catch(() => ({})) : {};
        const who = 'holderPid' in holder ? `; held by pid ${String(holder['holderPid'])} (${String(holder['holderCommand'] ?? '?')}, uid ${String(holder['holderUid'] ?? '?')})` : '';
        return new TsnetError('UNAVAILABLE', `lock ${name} (${opts.label}): not acquired within ${timeoutMs} ms${who}`, {
          details: { lock: name, timeoutMs, ...holder },
        });
      };

      // Phase 1: our turn in this process (FIFO). Phase 2: the cross-process lock. Phase 3: fn.
      let phase: 'queued' | 'running' | 'gave-up' = 'queued';
      const gaveUp = new Promise<Outcome<T>>((resolve) => {
        stop.signal.addEventListener(
          'abort',
          () => {
            if (phase !== 'queued') return;
            phase = 'gave-up';
            void waitError().then((error) => resolve({ ok: false, error }));
          },
          { once: true },
        );
      });
      const ran = mutex.run(name, async (): Promise<Outcome<T>> => {
        if (phase === 'gave-up') return { ok: false, error: undefined }; // pass the turn on at once
        phase = 'running';
        let release: (() => void) | undefined;
        try {
          // A try (timeout 0) is one attempt, whatever its round trip costs (lock-proxy.ts).
          if (opts.crossProcess) release = await opts.crossProcess.acquire(name, stop.signal, { once: timeoutMs === 0 });
        } catch (err) {
          stopWaiting();
          if (timeoutMs === 0 && err instanceof Error && err.message === HELD) timedOut = true;
          return { ok: false, error: stop.signal.aborted || timedOut ? await waitError() : wrap(`lock ${name} (${opts.label})`, err) };
        }
        stopWaiting();
        try {
          const value = await held.run(new Set([...(mine ?? []), name]), fn);
          return { ok: true, value };
        } catch (error) {
          return { ok: false, error };
        } finally {
          release?.();
        }
      });
      const outcome = await Promise.race([ran, gaveUp]);
      stopWaiting();
      if (outcome.ok) return outcome.value;
      throw outcome.error;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Abstract unix socket locks.
//
// Mutual exclusion rests on one thing only: bind(2) of the lock's name L. Everything else is
// about waking waiters cheaply. If every waiter connected to the holder, all would wake at each
// release (a thundering herd: with 50 contending processes each hand-over woke 49 of them, at a
// quarter of flock(1)'s throughput). Instead waiters form a queue, MCS-style:
// - A contended waiter W listens on a wait node of its own, N_W, connects to L and sends
//   `join N_W`. The holder answers `after T` (T: the queue's tail; W then sleeps on a connection
//   to T's node) or `after -` (wait on me directly), and N_W becomes the tail.
// - On release the holder sends `tail T` to every connection (on L and on its own node, if it
//   queued before) and closes: only its direct successors wake. The one that wins bind(L) carries
//   T on, so it can answer joins. A woken waiter that loses (another process got L first) sends
//   `front N_W`: the holder answers `after -` and remembers N_W as its head (its direct waiter),
//   or, when it has a head already, `after HEAD`. So one or two processes wake per release.
// - A waiter that gives up (timeout, abort) tells its successors `moveto P` (its own predecessor)
//   before closing; a waiter whose predecessor dies (EOF, no message) tries L, then sends `front`.
// Messages are hints: a lost or wrong one costs a wake-up, never exclusion. No cycle of waits can
// form: a waiter waits on the holder, or (join) on the tail, having no successors yet itself, or
// (front) on the holder's current direct waiter, which waits on nothing but the holder, or
// (moveto) on the predecessor of the one it waited on.

/** The abstract socket address of lock `name` in `scope` (a string identifying the state dir). */
export function lockAddress(scope: string, name: string): string {
  const h = createHash('sha256').update(scope).update('\0').update(name).digest('hex').slice(0, 40);
  return `\0tsnet-lock-${h}`;
}

const noop = (): void => undefined;
const NODE_TEXT = /^tsnet-lockq-[0-9a-f]{16}-[0-9a-f]{16}$/;
const toText = (addr: string | undefined): string => (addr === undefined ? '-' : addr.slice(1));
const fromText = (text: string | undefined): string | undefined => (text !== undefined && NODE_TEXT.test(text) ? `\0${text}` : undefined);

interface Endpoint {
  readonly addr: string;
  /** Closes the listener now (the name is free at once) and ends every connection with `msg`. */
  close(msg: string): void;
}

interface PeerEvents {
  /** A line a peer sent; may answer on `peer`. */
  line(peer: Socket, line: string): void;
  closed(peer: Socket): void;
}

/** Listens on `addr`: an Endpoint, or undefined if the name is taken (EADDRINUSE). */
function serve(addr: string, events?: PeerEvents): Promise<Endpoint | undefined> {
  return new Promise((resolve, reject) => {
    const peers = new Set<Socket>();
    const server = createServer((s) => {
      s.on('error', noop);
      s.unref();
      peers.add(s);
      s.once('close', () => {
        peers.delete(s);
        events?.closed(s);
      });
      if (events === undefined) return;
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        buf += d;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          events.line(s, buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
        if (buf.length > 256) s.destroy(); // not our protocol
      });
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      if (err.code === 'EADDRINUSE') resolve(undefined);
      else reject(err);
    };
    server.once('error', onError);
    server.listen({ path: addr, backlog: 511 }, () => {
      server.removeListener('error', onError);
      server.on('error', noop);
      server.unref(); // a held lock or a wait node never keeps the process alive on its own
      let closed = false;
      resolve({
        addr,
        close(msg) {
          if (closed) return;
          closed = true;
          server.close(); // closes the listening fd now
          for (const p of peers) p.end(msg, () => p.destroy());
        },
      });
    });
  });
}

/** Tries to take L. While held, answers joins (queue tail from `tail`) and fronts (head). */
async function tryHold(addr: string, tail: string | undefined, node: Endpoint | undefined): Promise<(() => void) | undefined> {
  let last = tail;
  let head: { readonly node: string; readonly peer: Socket } | undefined;
  const ep = await serve(addr, {
    line(peer, line) {
      const [verb, arg] = line.split(' ');
      const from = fromText(arg);
      if (from === undefined) return;
      if (verb === 'join') {
        const pred = last ?? head?.node;
        peer.write(`after ${toText(pred)}\n`);
        if (pred === undefined) head = { node: from, peer };
        last = from;
      } else if (verb === 'front') {
        if (head?.node === from) head = undefined; // its old connection's close is still on its way
        peer.write(`after ${toText(head?.node)}\n`);
        head ??= { node: from, peer };
      }
    },
    closed(peer) {
      if (head?.peer === peer) head = undefined;
    },
  });
  if (ep === undefined) return undefined;
  return () => {
    const msg = `tail ${toText(last)}\n`;
    ep.close(msg);
    node?.close(msg);
  };
}

type Woke =
  | { readonly kind: 'refused' } // nobody listens there (any more)
  | { readonly kind: 'busy' } // EAGAIN (backlog full) or stopped
  | { readonly kind: 'after'; readonly pred: string | undefined } // answered: wait on pred's node
  | { readonly kind: 'closed'; readonly verb?: string; readonly arg?: string | undefined };

/** Connects to `addr` (sending `hello` first if given) and resolves when something happens. */
function waitOn(addr: string, stop: AbortSignal, hello?: string): Promise<Woke> {
  return new Promise((resolve) => {
    // Aborted while the caller was between checks (binding its wait node): an abort listener
    // added now would never fire, and this wait would last until the holder let go.
    if (stop.aborted) {
      resolve({ kind: 'busy' });
      return;
    }
    const sock = connect({ path: addr });
    let connected = false;
    let answered = false;
    let errCode: string | undefined;
    let last: { verb: string; arg: string | undefined } | undefined;
    let settled = false;
    let buf = '';
    const finish = (w: Woke): void => {
      if (settled) return;
      settled = true;
      stop.removeEventListener('abort', onStop);
      sock.destroy();
      resolve(w);
    };
    const onStop = (): void => finish({ kind: 'busy' });
    stop.addEventListener('abort', onStop, { once: true });
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      if (hello !== undefined) sock.write(`${hello}\n`);
    });
    sock.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const [verb = '', arg] = buf.slice(0, i).split(' ');
        buf = buf.slice(i + 1);
        if (verb === 'after' && hello !== undefined && !answered) {
          answered = true;
          if (arg !== '-') {
            finish({ kind: 'after', pred: fromText(arg) });
            return;
          }
        } else if (verb === 'tail' || verb === 'moveto') {
          last = { verb, arg };
        }
      }
      if (buf.length > 256) buf = '';
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      errCode = err.code;
    });
    sock.on('close', () => {
      if (connected || errCode === 'ECONNRESET' || errCode === 'EPIPE') finish({ kind: 'closed', ...(last ?? {}) });
      else if (errCode === 'ECONNREFUSED' || errCode === 'ENOENT') finish({ kind: 'refused' });
      else finish({ kind: 'busy' }); // EAGAIN: the listener's backlog is full; back off
    });
  });
}

export function abstractSocketLock(scope: string): CrossProcessLock {
  return {
    async acquire(name, stop, ao = {}) {
      const addr = lockAddress(scope, name);
      if (ao.once === true) {
        const release = await tryHold(addr, undefined, undefined);
        if (release === undefined) throw new Error(HELD);
        return release;
      }
      const nodePrefix = `\0tsnet-lockq-${addr.slice(-16)}-`;
      let tail: string | undefined; // the queue's tail, handed over by the last release we saw
      let node: Endpoint | undefined; // our wait node, from our first contact with a holder
      let joined = false; // a holder has seen our node (then we only ever send `front`)
      let pred: string | undefined; // the node we wait on; undefined: try L, then contact its holder
      let misses = 0;
      const backoff = async (): Promise<void> => {
        misses++;
        const ms = Math.min(50, 2 ** Math.min(misses, 6)) * (0.5 + Math.random());
        await sleep(ms, undefined, { signal: stop }).catch(noop);
      };
      try {
        for (;;) {
          if (stop.aborted) throw new Error('aborted');
          if (pred === undefined) {
            const release = await tryHold(addr, tail, node);
            if (release) {
              if (!stop.aborted) return release;
              release();
              throw new Error('aborted');
            }
            tail = undefined;
            node ??= await serve(`${nodePrefix}${randomBytes(8).toString('hex')}`);
            if (node === undefined) throw new Error('could not create a wait node');
            const w = await waitOn(addr, stop, `${joined ? 'front' : 'join'} ${toText(node.addr)}`);
            if (w.kind === 'after' || w.kind === 'closed') joined = true; // it may have seen us
            if (w.kind === 'after') {
              pred = w.pred === node.addr ? undefined : w.pred;
            } else if (w.kind === 'closed') {
              misses = 0;
              if (w.verb === 'tail') tail = fromText(w.arg); // we were its direct waiter
            } else if (w.kind === 'busy' || ++misses > 2) {
              await backoff(); // refused again and again: L bound but not listening?
            }
            continue;
          }
          const w = await waitOn(pred, stop);
          if (w.kind === 'closed') {
            misses = 0;
            pred = w.verb === 'moveto' ? fromText(w.arg) : undefined; // gave up: wait on its predecessor
            if (w.verb === 'tail') tail = fromText(w.arg); // released: we may be next
          } else if (w.kind === 'refused') {
            pred = undefined;
          } else {
            await backoff();
          }
        }
      } catch (err) {
        node?.close(`moveto ${toText(pred)}\n`);
        throw err;
      }
    },
    describeHolder: (name) => findSocketHolder(lockAddress(scope, name)),
  };
}

/**
 * Who is listening on abstract address `addr`: its inode from /proc/net/unix, then the process
 * with an fd on that socket. Only used to explain a timeout; reads /proc, costs a few ms.
 */
export async function findSocketHolder(addr: string): Promise<Record<string, unknown>> {
  // Shown as "@name", NULs as '@'; libuv binds abstract names padded with NULs to sun_path's size.
  const shown = `@${addr.slice(1)}`;
  const table = await readFile('/proc/net/unix', 'utf8').catch(() => '');
  const cols = table
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((c) => c[7]?.replace(/@+$/, '') === shown && c[3] === '00010000'); // __SO_ACCEPTCON: listening
  const inode = cols?.[6];
  if (inode === undefined) return {};
  const target = `socket:[${inode}]`;
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((p) => /^\d+$/.test(p));
  for (const pid of pids) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) !== target) continue;
      const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
      return { holderPid: Number(pid), holderCommand: comm, ...(uid === undefined ? {} : { holderUid: Number(uid) }), socketInode: Number(inode) };
    }
  }
  return { socketInode: Number(inode) };
}
