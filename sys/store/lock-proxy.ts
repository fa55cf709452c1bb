/**
 * The cross-process locks of a process that is not in the network namespace playing "host".
 *
 * The store's locks are abstract unix sockets (lock.ts), and abstract names live in a network
 * namespace: a library that runs in one namespace and names another as its host (`hostNetns`)
 * would take its locks where the CLI, the CNI plugins and the daemon (all in the host's) never look,
 * and exclude none of them. Found in CI: the daemon's periodic recovery took `sandbox:<id>` while
 * the library held it, saw the sandbox "creating", and removed its namespace file under the
 * library's `unshare --net=FILE`.
 *
 * So such a process holds its locks through one helper child started in the host's namespace
 * (lock-proxy-main.ts, the same abstract-socket code there): acquire, release, abort and who-holds
 * go over its stdin and stdout as JSON lines. The child ends when its stdin closes, which the kernel
 * does when this process exits or dies, and its sockets (the held locks) go with it: still
 * kernel-released, never a stale lock. Cost: one Node start, on the first lock, and a pipe round trip
 * per lock; a release is a message, so another process may find the lock held for that long (this
 * process's own next acquire comes after it on the same pipe). A try (timeout 0) is one attempt in
 * the helper. A process in the host's namespace (every CLI command, plugin and daemon) never uses it.
 */
import type { Readable, Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { spawnLongLived, type Argv, type LongLived } from '../exec.js';
import type { CrossProcessLock } from './lock.js';

/** Parent to child: the first line is `{ scope }`, then these. */
export type ProxyRequest =
  | { readonly op: 'acquire'; readonly id: number; readonly name: string; readonly once?: boolean }
  | { readonly op: 'abort'; readonly id: number }
  | { readonly op: 'release'; readonly id: number }
  | { readonly op: 'who'; readonly id: number; readonly name: string };

/** Child to parent: one answer per acquire (ok or error) and per who. */
export type ProxyReply =
  | { readonly id: number; readonly ok: true }
  | { readonly id: number; readonly ok: false; readonly error: string }
  | { readonly id: number; readonly holder: Record<string, unknown> };

export interface ProxiedLock extends CrossProcessLock {
  /** Ends the helper (its locks are released); a later acquire starts a new one. */
  close(): Promise<void>;
}

type Child = LongLived['child'];

/**
 * `argv`: the helper's command line, already entering the host's namespace (nsenter --net=…
 * node lock-proxy.js). `scope`: the store's lock scope (secret included, so it goes over the pipe,
 * never on a command line).
 */
export function proxiedLock(argv: Argv, scope: string): ProxiedLock {
  let helper: LongLived | undefined;
  let child: Child | undefined;
  let nextId = 1;
  const waiting = new Map<number, (r: ProxyReply) => void>();

  const refresh = (c: Child): void => {
    // Kept referenced only while an answer is awaited: a held lock's holder keeps this process
    // busy itself, and an idle helper must never keep it from exiting.
    const busy = waiting.size > 0;
    for (const s of [c.stdout, c.stderr, c.stdin] as unknown as { ref?: () => void; unref?: () => void }[]) {
      if (busy) s.ref?.();
      else s.unref?.();
    }
    if (busy) c.ref();
    else c.unref();
  };

  const start = (): Child => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) return child;
    helper = spawnLongLived(argv);
    const c = helper.child;
    child = c;
    let stderr = '';
    c.stderr.setEncoding('utf8').on('data', (d: string) => void (stderr = (stderr + d).slice(-2_000)));
    createInterface({ input: c.stdout }).on('line', (line) => {
      let r: ProxyReply;
      try {
        r = JSON.parse(line) as ProxyReply;
      } catch {
        return;
      }
      const w = waiting.get(r.id);
      if (w === undefined) return;
      waiting.delete(r.id);
      w(r);
      refresh(c);
    });
    c.on('exit', (code, signal) => {
      if (child === c) child = undefined;
      const error = `lock helper ${argv.join(' ')} exited (${signal ?? `code ${String(code)}`})${stderr.trim() ? `: ${stderr.trim()}` : ''}`;
      for (const [id, w] of waiting) w({ id, ok: false, error });
      waiting.clear();
    });
    c.stdin.write(`${JSON.stringify({ scope })}\n`);
    return c;
  };

  const send = (c: Child, req: ProxyRequest): void => {
    if (c.stdin.writable) c.stdin.write(`${JSON.stringify(req)}\n`);
  };

  const ask = (req: ProxyRequest & { readonly op: 'acquire' | 'who' }): { readonly c: Child; readonly answer: Promise<ProxyReply> } => {
    const c = start();
    const answer = new Promise<ProxyReply>((resolve) => waiting.set(req.id, resolve));
    send(c, req);
    refresh(c);
    return { c, answer };
  };

  return {
    async acquire(name, stop, ao = {}) {
      const once = ao.once === true; // one try in the helper: `stop` does not apply
      if (stop.aborted && !once) throw new Error('aborted');
      const id = nextId++;
      const { c, answer } = ask({ op: 'acquire', id, name, ...(once ? { once } : {}) });
      const onAbort = (): void => send(c, { op: 'abort', id });
      if (!once) stop.addEventListener('abort', onAbort, { once: true });
      const r = await answer.finally(() => stop.removeEventListener('abort', onAbort));
      if (!('ok' in r) || !r.ok) throw new Error('ok' in r ? r.error : 'lock proxy: unexpected answer');
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        if (child !== c) return; // the helper is gone, and its locks with it
        send(c, { op: 'release', id });
      };
      if (stop.aborted && !once) {
        release();
        throw new Error('aborted');
      }
      return release;
    },
    async describeHolder(name) {
      const r = await ask({ op: 'who', id: nextId++, name }).answer;
      return 'holder' in r ? r.holder : {};
    },
    async close() {
      const h = helper;
      helper = undefined;
      child = undefined;
      if (h === undefined) return;
      h.child.ref(); // until it has gone
      await h.close();
    },
  };
}

/** The helper's side: serves `lock` (the abstract-socket lock of the scope in the first line). */
export async function serveLockProxy(input: Readable, output: Writable, lockFor: (scope: string) => CrossProcessLock): Promise<void> {
  let lock: CrossProcessLock | undefined;
  const waits = new Map<number, AbortController>();
  const held = new Map<number, () => void>();
  const reply = (r: ProxyReply): void => void output.write(`${JSON.stringify(r)}\n`);
  for await (const line of createInterface({ input })) {
    let msg: { scope?: unknown } & Partial<ProxyRequest>;
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      continue;
    }
    if (lock === undefined) {
      if (typeof msg.scope === 'string') lock = lockFor(msg.scope);
      continue;
    }
    const l = lock;
    const id = Number(msg.id);
    if (msg.op === 'acquire' && typeof msg.name === 'string') {
      const stop = new AbortController();
      waits.set(id, stop);
      l.acquire(msg.name, stop.signal, { once: msg.once === true }).then(
        (release) => {
          waits.delete(id);
          held.set(id, release);
          reply({ id, ok: true });
        },
        (err: unknown) => {
          waits.delete(id);
          reply({ id, ok: false, error: err instanceof Error ? err.message : String(err) });
        },
      );
    } else if (msg.op === 'abort') {
      waits.get(id)?.abort();
    } else if (msg.op === 'release') {
      held.get(id)?.();
      held.delete(id);
    } else if (msg.op === 'who' && typeof msg.name === 'string') {
      l.describeHolder(msg.name).then((holder) => reply({ id, holder }), () => reply({ id, holder: {} }));
    }
  }
  // The parent closed the pipe (or died): every lock goes.
  for (const w of waits.values()) w.abort();
  for (const r of held.values()) r();
}
