/**
 * The tsnet daemon: one long-lived process per run directory hosting services (the embedded DNS
 * resolver, the firewall watcher, the CNI plugins' service: each a `DaemonService`, composed by
 * engine/daemon-main.ts). Process lifecycle, pid file and control socket; the protocol and its
 * client are daemon-control.ts.
 *
 * - One instance per state directory: it holds the store lock "daemon" for its whole life (the
 *   kernel releases it if the process dies), then (re)binds the control socket and writes its pid.
 * - Control: newline-delimited JSON on the unix socket `<runDir>/daemon.sock`:
 *   `{"op":"reload"}` → every service reloads from the records, then `{"ok":true,...}` (a reload
 *   requested while one runs waits for the next one, so the ack always covers the caller's write);
 *   `{"op":"status"}`; `{"op":"stop"}`.
 * - Stops cleanly on SIGTERM/SIGINT, on "stop", or when its pid file disappears (its run directory
 *   was removed): services stopped in reverse order, socket and pid file removed.
 */
import type { Logger } from '../core/log.js';
import type { DaemonService, RecordChanges } from './api.js';
import { daemonFiles, DaemonRequestSchema, type DaemonReply, type DaemonRequest } from './daemon-control.js';
import { readOptional, removePath, replaceFile } from './files.js';
import { listenLines, type UnixServer } from './unix-socket.js';

export type { DaemonService };

/** The running daemon, for what runs inside its process (the CLI service). */
export interface DaemonControl {
  /** Every service reloads (only `changes`, when given); coalesced as control requests are. */
  reload(changes?: RecordChanges): Promise<void>;
}

export interface DaemonOptions {
  readonly runDir: string;
  readonly log: Logger;
  readonly services: readonly DaemonService[];
  /** A container's supervisor reported its process ended (`{"op":"exited"}`). */
  readonly onExited?: (containerId: string) => Promise<void>;
  /** Called once the daemon serves, with its control handle. */
  readonly onControl?: (c: DaemonControl) => void;
  /** Runs `fn` holding the daemon's single-instance lock; UNAVAILABLE if another daemon holds it. */
  readonly holdLock: (fn: () => Promise<void>) => Promise<void>;
  /** How often the pid file is checked (default 2000 ms). */
  readonly watchMs?: number;
  /** Called once the daemon serves (tests, `tsnet daemon` printing its pid). */
  readonly onReady?: () => void;
}

/** Runs the daemon until it is stopped. */
export async function runDaemon(o: DaemonOptions): Promise<void> {
  const files = daemonFiles(o.runDir);
  const log = o.log.child({ component: 'daemon' });
  await o.holdLock(async () => {
    const started: DaemonService[] = [];
    let server: UnixServer | undefined;
    let stopping: Promise<void> | undefined;
    let resolveStopped: () => void = () => undefined;
    const stopped = new Promise<void>((r) => {
      resolveStopped = r;
    });
    let running: Promise<void> | undefined;
    let queued: { promise: Promise<void>; changes: RecordChanges | undefined } | undefined;
    const reloadNow = async (changes: RecordChanges | undefined): Promise<void> => {
      for (const s of started) await s.reload(changes);
    };
    // One reload at a time; those asked for meanwhile are merged into the next one, so the ack
    // always covers the caller's write.
    const reload = (changes?: RecordChanges): Promise<void> => {
      if (running === undefined) {
        running = reloadNow(changes).finally(() => {
          running = undefined;
        });
        return running;
      }
      if (queued !== undefined) {
        queued.changes = mergeChanges(queued.changes, changes);
        return queued.promise;
      }
      const next: { promise: Promise<void>; changes: RecordChanges | undefined } = { promise: Promise.resolve(), changes };
      next.promise = running.catch(() => undefined).then(() => {
        queued = undefined;
        return reload(next.changes);
      });
      queued = next;
      return next.promise;
    };
    const status = (): Record<string, Record<string, unknown>> => Object.fromEntries(started.map((s) => [s.name, s.status()]));
    const stop = (why: string): Promise<void> => {
      stopping ??= (async () => {
        log.info('stopping', { why });
        clearInterval(watch);
        await server?.close();
        for (const s of [...started].reverse()) {
          await s.stop().catch((err: unknown) => log.warn('service stop failed', { service: s.name, err: err instanceof Error ? err.message : String(err) }));
        }
        await removePath(files.socket);
        if (((await readOptional(files.pid)) ?? '').trim() === String(process.pid)) await removePath(files.pid);
        resolveStopped();
      })();
      return stopping;
    };
    const onSignal = (sig: string): void => {
      void stop(sig);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    const watch = setInterval(() => {
      void readOptional(files.pid).then((p) => {
        if (p === undefined) return stop('pid file removed');
        return p.trim() === String(process.pid) ? undefined : stop('pid file taken over');
      });
    }, o.watchMs ?? 2000);
    try {
      for (const s of o.services) {
        await s.start();
        started.push(s);
      }
      // A dead daemon's socket is replaced: we hold the lock, so it is stale.
      const exited = o.onExited ?? (async () => undefined);
      server = await listenLines(files.socket, (line) => answerControl(line, { reload, status, stop, exited, log }));
      await replaceFile(files.pid, `${process.pid}\n`);
      log.info('daemon ready', { pid: process.pid, services: started.map((s) => s.name) });
      o.onControl?.({ reload });
      o.onReady?.();
    } catch (err) {
      await stop('start failed');
      throw err;
    }
    await stopped;
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  });
}

/** Two sets of changes as one (undefined, "everything", absorbs the other). */
export function mergeChanges(a: RecordChanges | undefined, b: RecordChanges | undefined): RecordChanges | undefined {
  if (a === undefined || b === undefined) return undefined;
  const ids = (x: readonly string[] | undefined, y: readonly string[] | undefined): readonly string[] => [...new Set([...(x ?? []), ...(y ?? [])])];
  return { networks: a.networks === true || b.networks === true, endpoints: ids(a.endpoints, b.endpoints), sandboxes: ids(a.sandboxes, b.sandboxes) };
}

interface ControlDeps {
  reload: (changes?: RecordChanges) => Promise<void>;
  status: () => Record<string, Record<string, unknown>>;
  stop: (why: string) => Promise<void>;
  exited: (containerId: string) => Promise<void>;
  log: Logger;
}

const mib = (n: number): number => Math.round((n / 1_048_576) * 10) / 10;
function processStatus(): Record<string, unknown> {
  const m = process.memoryUsage();
  return { uptimeSec: Math.round(process.uptime()), rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), heapTotalMiB: mib(m.heapTotal), externalMiB: mib(m.external) };
}

/** One control request line → the reply line. */
async function answerControl(line: string, d: ControlDeps): Promise<string> {
  const reply = (r: DaemonReply): string => JSON.stringify(r);
  let req: DaemonRequest;
  try {
    req = DaemonRequestSchema.parse(JSON.parse(line));
  } catch (err) {
    return reply({ ok: false, pid: process.pid, error: `bad request: ${err instanceof Error ? err.message : String(err)}` });
  }
  const ok = (): string => reply({ ok: true, pid: process.pid, services: d.status() });
  const failed = (err: unknown): string => {
    d.log.warn(`${req.op} failed`, { err: err instanceof Error ? err.message : String(err) });
    return reply({ ok: false, pid: process.pid, error: err instanceof Error ? err.message : String(err) });
  };
  switch (req.op) {
    case 'reload':
      return d.reload(req.changes as RecordChanges | undefined).then(ok, failed);
    case 'exited':
      if (req.container === undefined) return reply({ ok: false, pid: process.pid, error: 'bad request: exited needs a container' });
      return d.exited(req.container).then(() => reply({ ok: true, pid: process.pid }), failed);
    case 'status':
      // The process itself beside the services: its footprint (the lifecycle bench reads it here).
      return reply({ ok: true, pid: process.pid, services: { ...d.status(), process: processStatus() } });
    case 'stop':
      setImmediate(() => void d.stop('stop requested'));
      return ok();
  }
}
