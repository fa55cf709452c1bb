/**
 * `tsnet events`: the event log (network, endpoint and container events from every process) as
 * `docker events` prints it: `--since`/`--until` (RFC 3339, Unix seconds, or a duration before now
 * such as 10m), `--filter type=/event=/container=/network=/label=`, `--format` (json or a Go
 * template). Without `--until` it follows until interrupted.
 */
import { TsnetError } from '../../core/errors.js';
import { EVENT_TYPES, parseEventLine, type DockerEvent } from '../../engine/events.js';
import type { EventLog } from '../../sys/api.js';
import { bool, list, parseArgs, str, usage, type FlagSpec } from '../args.js';
import { anyOf, labelsMatch, parseFilters } from '../filters.js';
import { goMap, parseTemplate } from '../template.js';
import type { Command, Io } from './types.js';

const SPECS: FlagSpec[] = [
  { name: 'since', type: 'string', help: 'events from this time: RFC 3339, Unix seconds, or a duration ago (10m)', placeholder: 'TIME' },
  { name: 'until', type: 'string', help: 'events until this time (then exit)', placeholder: 'TIME' },
  { name: 'filter', short: 'f', type: 'string', multiple: true, help: 'type, event, container, network, label (KEY=VALUE)', placeholder: 'FILTER' },
  { name: 'format', type: 'string', help: 'json or a Go template', placeholder: 'FORMAT' },
  { name: 'help', type: 'boolean', help: 'show this help' },
];

const UNITS: Record<string, bigint> = { ns: 1n, us: 1_000n, µs: 1_000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n };

/** Docker's --since/--until: a time as nanoseconds since the epoch. */
export function parseEventTime(raw: string, field: string, now: Date): bigint {
  const bad = (): TsnetError => new TsnetError('INVALID_CONFIG', `${field}: invalid time ${JSON.stringify(raw)} (RFC 3339, Unix seconds or a duration such as 10m)`, { details: { field, value: raw } });
  const unix = /^(\d+)(?:\.(\d{1,9}))?$/.exec(raw);
  if (unix) return BigInt(unix[1] ?? '0') * 1_000_000_000n + BigInt((unix[2] ?? '').padEnd(9, '0') || '0');
  if (/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(raw)) {
    let total = 0n;
    for (const m of raw.matchAll(/(\d+)(?:\.(\d+))?(ns|us|µs|ms|s|m|h)/g)) {
      const unit = UNITS[m[3] as string] as bigint;
      total += BigInt(m[1] ?? '0') * unit + (m[2] !== undefined ? (BigInt(m[2]) * unit) / 10n ** BigInt(m[2].length) : 0n);
    }
    return BigInt(now.getTime()) * 1_000_000n - total;
  }
  const ms = Date.parse(raw);
  if (Number.isNaN(ms)) throw bad();
  const frac = /\.(\d+)/.exec(raw)?.[1] ?? '';
  return BigInt(ms) * 1_000_000n + (frac.length > 3 ? BigInt(frac.slice(3, 9).padEnd(6, '0')) : 0n);
}

/** RFC 3339 with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano), in UTC. */
function rfc3339Nano(nano: string): string {
  const n = BigInt(nano);
  const ms = Number(n / 1_000_000n);
  const frac = (n % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, `${frac === '' ? '' : `.${frac}`}Z`);
}

/** Docker's default line: TIME TYPE ACTION ID (k=v, ...). */
export function eventText(e: DockerEvent): string {
  const attrs = Object.keys(e.Actor.Attributes).sort().map((k) => `${k}=${e.Actor.Attributes[k] ?? ''}`);
  return `${rfc3339Nano(e.timeNano)} ${e.Type} ${e.Action} ${e.Actor.ID}${attrs.length > 0 ? ` (${attrs.join(', ')})` : ''}`;
}

export const eventsCommand = (log: () => Promise<EventLog>): Command => ({
  summary: 'Stream network, endpoint and container events',
  async run(argv, io: Io) {
    const p = parseArgs(argv, SPECS);
    if (bool(p, 'help')) return io.out(usage('events [OPTIONS]', 'Print events as they happen (network create/connect/disconnect/destroy; container create/start/kill/die/stop/destroy/exec_start), from every tsnet process.', SPECS, 'tsnet events --since 10m --until 0s --filter type=container --format "{{.Action}} {{.Actor.Attributes.name}}"'));
    const f = parseFilters(list(p, 'filter'), ['type', 'event', 'container', 'network', 'label']);
    for (const v of f.get('type') ?? []) if (!(EVENT_TYPES as readonly string[]).includes(v)) throw new TsnetError('INVALID_CONFIG', `filter: invalid filter 'type=${v}' (container or network)`, { details: { field: 'filter', value: `type=${v}` } });
    const now = new Date();
    const since = str(p, 'since') !== undefined ? parseEventTime(str(p, 'since') as string, 'since', now) : undefined;
    const until = str(p, 'until') !== undefined ? parseEventTime(str(p, 'until') as string, 'until', now) : undefined;
    const format = str(p, 'format');
    const tmpl = format === undefined || format === 'json' ? undefined : parseTemplate(format.replace(/\\t/g, '\t').replace(/\\n/g, '\n'));
    const matches = (e: DockerEvent): boolean => {
      const attrs = e.Actor.Attributes;
      return anyOf(f, 'type', (x) => e.Type === x)
        && anyOf(f, 'event', (x) => e.Action === x)
        && anyOf(f, 'container', (x) => e.Type === 'container' && (e.Actor.ID.startsWith(x) || attrs['name'] === x))
        && anyOf(f, 'network', (x) => e.Type === 'network' && (e.Actor.ID.startsWith(x) || attrs['name'] === x))
        && labelsMatch(f, attrs);
    };
    const print = (e: DockerEvent): void => {
      if (!matches(e)) return;
      const t = BigInt(e.timeNano);
      if (since !== undefined && t < since) return;
      if (until !== undefined && t > until) return;
      if (format === 'json') io.out(`${JSON.stringify({ ...e, timeNano: '\u0000' }).replace('"\\u0000"', e.timeNano)}\n`);
      else if (tmpl !== undefined) io.out(`${tmpl.execute({ ...e, Actor: { ...e.Actor, Attributes: goMap({ ...e.Actor.Attributes }) } })}\n`);
      else io.out(`${eventText(e)}\n`);
    };
    const events = await log();
    const stop = new AbortController();
    const nowNano = BigInt(Date.now()) * 1_000_000n;
    const follow = until === undefined || until > nowNano;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let off: () => void = () => undefined;
    if (follow) {
      off = io.onSignal?.(['SIGINT', 'SIGTERM', 'SIGHUP'], () => stop.abort()) ?? (() => undefined);
      if (until !== undefined) timer = setTimeout(() => stop.abort(), Number((until - nowNano) / 1_000_000n) + 200);
    }
    try {
      await events.read((line) => {
        const e = parseEventLine(line);
        if (e !== undefined) print(e);
      }, follow ? stop.signal : undefined);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      off();
    }
    return 0;
  },
});
