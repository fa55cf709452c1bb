/**
 * The tsnet daemon: one long-lived process per run directory hosting services (the embedded DNS
 * resolver now; the firewall watcher of issue #4 plugs in as another `DaemonService`). A
 * composition root under cli/.
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
import net from 'node:net';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { daemonCall, daemonSocket } from '../sys/daemon-client.js';

export interface DaemonService {
  readonly name: string;
  start(): Promise<void>;
  /** Re-reads the records; must not interrupt what the service is serving. */
  reload(): Promise<void>;
  stop(): Promise<void>;
  status(): Record<string, unknown>;
}

export interface DaemonFiles {
  readonly socket: string;
  readonly pid: string;
  readonly log: string;
}

export const daemonFiles = (runDir: string): DaemonFiles => ({
  socket: daemonSocket(runDir),
  pid: join(runDir, 'daemon.pid'),
  log: join(runDir, 'daemon.log'),
});

const RequestSchema = z.strictObject({ op: z.enum(['reload', 'status', 'stop']) });
export type DaemonOp = z.infer<typeof RequestSchema>['op'];
const ReplySchema = z.strictObject({
  ok: z.boolean(),
  pid: z.number().int(),
  error: z.string().optional(),
  services: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
});
export type DaemonReply = z.infer<typeof ReplySchema>;

export interface DaemonOptions {
  readonly runDir: string;
  readonly log: Logger;
  readonly services: readonly DaemonService[];
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
    let server: net.Server | undefined;
    let stopping: Promise<void> | undefined;
    let resolveStopped: () => void = () => undefined;
    const stopped = new Promise<void>((r) => {
      resolveStopped = r;
    });
    let running: Promise<void> | undefined;
    let queued: Promise<void> | undefined;
    const reloadNow = async (): Promise<void> => {
      for (const s of started) await s.reload();
    };
    const reload = (): Promise<void> => {
      if (running === undefined) {
        running = reloadNow().finally(() => {
          running = undefined;
        });
        return running;
      }
      queued ??= running.catch(() => undefined).then(() => {
        queued = undefined;
        return reload();
      });
      return queued;
    };
    const status = (): Record<string, Record<string, unknown>> => Object.fromEntries(started.map((s) => [s.name, s.status()]));
    const stop = (why: string): Promise<void> => {
      stopping ??= (async () => {
        log.info('stopping', { why });
        clearInterval(watch);
        await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
        for (const s of [...started].reverse()) {
          await s.stop().catch((err: unknown) => log.warn('service stop failed', { service: s.name, err: err instanceof Error ? err.message : String(err) }));
        }
        await rm(files.socket, { force: true });
        if ((await readFile(files.pid, 'utf8').catch(() => '')).trim() === String(process.pid)) await rm(files.pid, { force: true });
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
      readFile(files.pid, 'utf8').then(
        (p) => (p.trim() === String(process.pid) ? undefined : stop('pid file taken over')),
        () => stop('pid file removed'),
      );
    }, o.watchMs ?? 2000);
    try {
      for (const s of o.services) {
        await s.start();
        started.push(s);
      }
      await rm(files.socket, { force: true }); // a dead daemon's socket: we hold the lock, so it is stale
      server = net.createServer((conn) => serveControl(conn, { reload, status, stop, log }));
      await new Promise<void>((resolve, reject) => {
        server?.once('error', reject);
        server?.listen(files.socket, () => resolve());
      });
      const tmp = `${files.pid}.${process.pid}.tmp`;
      await writeFile(tmp, `${process.pid}\n`);
      await rename(tmp, files.pid);
      log.info('daemon ready', { pid: process.pid, services: started.map((s) => s.name) });
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

function serveControl(conn: net.Socket, d: { reload: () => Promise<void>; status: () => Record<string, Record<string, unknown>>; stop: (why: string) => Promise<void>; log: Logger }): void {
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('error', () => undefined);
  const reply = (r: DaemonReply): void => {
    if (!conn.destroyed) conn.end(`${JSON.stringify(r)}\n`);
  };
  conn.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > 4096) {
      conn.destroy();
      return;
    }
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    let op: DaemonOp;
    try {
      op = RequestSchema.parse(JSON.parse(buf.slice(0, nl))).op;
    } catch (err) {
      reply({ ok: false, pid: process.pid, error: `bad request: ${err instanceof Error ? err.message : String(err)}` });
      return;
    }
    const ok = (): void => reply({ ok: true, pid: process.pid, services: d.status() });
    const fail = (err: unknown): void => {
      d.log.warn(`${op} failed`, { err: err instanceof Error ? err.message : String(err) });
      reply({ ok: false, pid: process.pid, error: err instanceof Error ? err.message : String(err) });
    };
    switch (op) {
      case 'reload':
        d.reload().then(ok, fail);
        return;
      case 'status':
        ok();
        return;
      case 'stop':
        ok();
        void d.stop('stop requested');
        return;
    }
  });
}

/** Sends one request to the daemon of `runDir`; undefined if no daemon listens there. */
export async function daemonRequest(runDir: string, op: DaemonOp, timeoutMs = 10_000): Promise<DaemonReply | undefined> {
  const raw = await daemonCall(daemonFiles(runDir).socket, op, timeoutMs);
  if (raw === undefined) return undefined;
  const r = ReplySchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INTERNAL', `daemon: bad reply to ${op}: ${JSON.stringify(JSON.stringify(raw).slice(0, 200))}`, { cause: r.error });
  return r.data;
}

/**
 * Makes the daemon reload and waits for its ack. With `start`, a daemon is started first when none
 * answers (`start` spawns it detached), and waited for up to `startTimeoutMs`.
 */
export async function notifyDaemon(o: {
  readonly runDir: string;
  readonly start?: () => Promise<void>;
  readonly startTimeoutMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}): Promise<DaemonReply | undefined> {
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let r = await daemonRequest(o.runDir, 'reload');
  if (r === undefined && o.start !== undefined) {
    await o.start();
    const deadline = Date.now() + (o.startTimeoutMs ?? 10_000);
    while (r === undefined && Date.now() < deadline) {
      await sleep(25);
      // A fresh daemon loads the records when it starts; the reload covers a write made meanwhile.
      r = await daemonRequest(o.runDir, 'reload');
    }
    if (r === undefined) throw new TsnetError('UNAVAILABLE', `daemon did not start within ${o.startTimeoutMs ?? 10_000} ms; see ${daemonFiles(o.runDir).log}`);
  }
  if (r !== undefined && !r.ok) throw new TsnetError('UNAVAILABLE', `daemon reload failed: ${r.error ?? '?'}`);
  return r;
}
