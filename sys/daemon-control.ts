/**
 * The tsnet daemon's control protocol, both ends' vocabulary and the client: newline-delimited JSON
 * on `<runDir>/daemon.sock`, one request and one reply per connection. `{"op":"reload"}` → every
 * service reloads from the records, then `{"ok":true,...}`; `{"op":"status"}`; `{"op":"stop"}`.
 * The server is engine/daemon.ts. (The CNI plugins use the zod-free daemon-client.ts.)
 */
import { join } from 'node:path';
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import { daemonCall, daemonSocket } from './daemon-client.js';
import type { RecordChanges } from './api.js';

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

const Ids = z.array(z.string().regex(/^[0-9a-f]{1,64}$/)).max(4096).readonly();
export const RecordChangesSchema = z.strictObject({ networks: z.boolean().optional(), endpoints: Ids.optional(), sandboxes: Ids.optional() });
/**
 * `reload` with `changes`: only those records are re-read; `exited`: a container's supervisor says
 * its process ended (the daemon observes it: its sandbox is released at once).
 */
export const DaemonRequestSchema = z.strictObject({
  op: z.enum(['reload', 'status', 'stop', 'exited']),
  changes: RecordChangesSchema.optional(),
  container: z.string().regex(/^[0-9a-f]{64}$/).optional(),
});
export type DaemonRequest = z.infer<typeof DaemonRequestSchema>;
export type DaemonOp = DaemonRequest['op'];
export const DaemonReplySchema = z.strictObject({
  ok: z.boolean(),
  pid: z.number().int(),
  error: z.string().optional(),
  services: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
});
export type DaemonReply = z.infer<typeof DaemonReplySchema>;

/** Sends one request to the daemon of `runDir`; undefined if no daemon listens there. */
export async function daemonRequest(runDir: string, op: DaemonOp, timeoutMs = 10_000, extra: { readonly changes?: RecordChanges; readonly container?: string } = {}): Promise<DaemonReply | undefined> {
  const raw = await daemonCall(daemonFiles(runDir).socket, op, timeoutMs, extra);
  if (raw === undefined) return undefined;
  const r = DaemonReplySchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INTERNAL', `daemon: bad reply to ${op}: ${JSON.stringify(JSON.stringify(raw).slice(0, 200))}`, { cause: r.error });
  return r.data;
}

/**
 * Makes the daemon reload and waits for its ack. With `start`, a daemon is started first when none
 * answers (`start` spawns it detached), and waited for up to `startTimeoutMs`.
 */
export async function notifyDaemon(o: {
  readonly runDir: string;
  /** What changed (only those records are re-read); absent: everything. */
  readonly changes?: RecordChanges;
  readonly start?: () => Promise<void>;
  readonly startTimeoutMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}): Promise<DaemonReply | undefined> {
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let r = await daemonRequest(o.runDir, 'reload', 10_000, o.changes !== undefined ? { changes: o.changes } : {});
  if (r === undefined && o.start !== undefined) {
    await o.start();
    const deadline = Date.now() + (o.startTimeoutMs ?? 10_000);
    while (r === undefined && Date.now() < deadline) {
      await sleep(25);
      // A fresh daemon loads the records when it starts; the reload covers a write made meanwhile.
      r = await daemonRequest(o.runDir, 'reload', 10_000, o.changes !== undefined ? { changes: o.changes } : {});
    }
    if (r === undefined) throw new TsnetError('UNAVAILABLE', `daemon did not start within ${o.startTimeoutMs ?? 10_000} ms; see ${daemonFiles(o.runDir).log}`);
  }
  if (r !== undefined && !r.ok) throw new TsnetError('UNAVAILABLE', `daemon reload failed: ${r.error ?? '?'}`);
  return r;
}
