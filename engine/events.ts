/**
 * `tsnet events`: Docker's event shape (`docker events --format json`: Type, Action, Actor{ID,
 * Attributes}, scope, time, timeNano; container events also carry the legacy status/id), written to
 * the event log (sys/event-log.ts) by every process that changes state: the controller is wrapped so
 * that networks (create, destroy) and endpoints (network connect, disconnect) are logged whoever
 * calls it (CLI, library, daemon), and the runtime reports container events through its onEvent.
 */
import type { Controller } from '../cnm/controller.js';
import type { EndpointRecord, NetworkRecord } from '../cnm/model.js';
import { isCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { ContainerEvent } from '../runtime/api.js';
import type { EventLog } from '../sys/api.js';

export const EVENT_TYPES = ['container', 'network'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface DockerEvent {
  readonly status?: string;
  readonly id?: string;
  readonly from?: string;
  readonly Type: EventType;
  readonly Action: string;
  readonly Actor: { readonly ID: string; readonly Attributes: Readonly<Record<string, string>> };
  readonly scope: 'local';
  readonly time: number;
  /** Nanoseconds since the epoch, as decimal digits (beyond a double's exact range). */
  readonly timeNano: string;
}

let lastNano = 0n;
/** Wall-clock nanoseconds, strictly increasing within this process (events keep their order). */
export function nowNano(now: Date): string {
  let n = BigInt(now.getTime()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
  if (n <= lastNano) n = lastNano + 1n;
  lastNano = n;
  return n.toString();
}

/** The JSON line of an event, timeNano written as an exact integer (as Docker prints it). */
export function eventLine(e: DockerEvent): string {
  return JSON.stringify({ ...e, timeNano: '\u0000' }).replace('"\\u0000"', e.timeNano);
}

/** Parses a line of the log (timeNano kept exact); undefined for a line that is not an event. */
export function parseEventLine(line: string): DockerEvent | undefined {
  try {
    const nano = /"timeNano":(\d+)/.exec(line)?.[1];
    const e = JSON.parse(line) as DockerEvent;
    if (nano === undefined || typeof e.Type !== 'string' || typeof e.Action !== 'string' || typeof e.Actor?.ID !== 'string') return undefined;
    return { ...e, timeNano: nano };
  } catch {
    return undefined;
  }
}

export function makeEvent(type: EventType, action: string, id: string, attributes: Record<string, string>, now: Date): DockerEvent {
  const timeNano = nowNano(now);
  return {
    ...(type === 'container' ? { status: action, id } : {}),
    Type: type, Action: action, Actor: { ID: id, Attributes: attributes },
    scope: 'local', time: Math.floor(Number(BigInt(timeNano) / 1_000_000_000n)), timeNano,
  };
}

/** A runtime event as Docker's: attributes are the labels, the name (and the image: the rootfs) plus the action's own. */
export function containerEvent(e: ContainerEvent, now: Date): DockerEvent {
  const c = e.container;
  return makeEvent('container', e.action, c.id, {
    ...c.labels, ...(c.rootfs !== null ? { image: c.rootfs } : {}), name: c.name, ...(e.attributes ?? {}),
  }, now);
}

const networkAttrs = (n: NetworkRecord, extra: Record<string, string> = {}): Record<string, string> => ({ name: n.name, type: n.driver, ...extra });

export interface EventSink {
  emit(e: DockerEvent): void;
  /** Resolves when every event emitted so far is written. */
  flush(): Promise<void>;
}

/** Appends events in emission order; a failed write is logged (the operation itself succeeded). */
export function eventSink(log: EventLog, logger: Logger): EventSink {
  let chain: Promise<void> = Promise.resolve();
  return {
    emit(e) {
      chain = chain.then(() => log.append(eventLine(e))).catch((err: unknown) => logger.warn('event log write failed', { err: err instanceof Error ? err.message : String(err) }));
    },
    flush: () => chain,
  };
}

/** The controller with its network and endpoint changes logged as events. */
export function withNetworkEvents(c: Controller, sink: EventSink, now: () => Date): Controller {
  const connected = async (eps: readonly EndpointRecord[], action: 'connect' | 'disconnect', nets?: readonly NetworkRecord[]): Promise<void> => {
    const all = nets ?? (await c.listNetworks());
    for (const ep of eps) {
      const n = all.find((x) => x.id === ep.networkId);
      if (n !== undefined) sink.emit(makeEvent('network', action, n.id, networkAttrs(n, { container: ep.sandboxId }), now()));
    }
  };
  return {
    ...c,
    async createNetwork(req) {
      const n = await c.createNetwork(req);
      sink.emit(makeEvent('network', 'create', n.id, networkAttrs(n), now()));
      return n;
    },
    async deleteNetwork(ref) {
      // A network whose record could not be read is removed by its id without a record to show.
      const n = await c.findNetwork(ref).catch((err: unknown) => {
        if (isCode(err, 'NOT_FOUND')) return undefined;
        throw err;
      });
      await c.deleteNetwork(ref);
      sink.emit(n !== undefined ? makeEvent('network', 'destroy', n.id, networkAttrs(n), now()) : makeEvent('network', 'destroy', ref, {}, now()));
    },
    async pruneNetworks() {
      const before = await c.listNetworks();
      const gone = await c.pruneNetworks();
      for (const n of before.filter((x) => gone.includes(x.name))) sink.emit(makeEvent('network', 'destroy', n.id, networkAttrs(n), now()));
      return gone;
    },
    async createSandbox(req) {
      const h = await c.createSandbox(req);
      await connected(await c.endpointsOf(h.record.id), 'connect');
      return h;
    },
    async connect(sandbox, network, req) {
      const ep = await c.connect(sandbox, network, req);
      await connected([ep], 'connect');
      return ep;
    },
    async disconnect(sandbox, network) {
      const sb = await c.findSandbox(sandbox);
      const before = await c.endpointsOf(sb.id);
      await c.disconnect(sandbox, network);
      const after = new Set((await c.endpointsOf(sb.id)).map((e) => e.id));
      await connected(before.filter((e) => !after.has(e.id)), 'disconnect');
    },
    async deleteSandbox(ref) {
      const nets = await c.listNetworks();
      const removed = await c.deleteSandbox(ref);
      await connected(removed, 'disconnect', nets);
      return removed;
    },
  };
}
