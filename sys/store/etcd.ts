/**
 * The cluster store on etcd (v3 API), through etcd's own gRPC gateway: JSON over HTTP(S) on the
 * client port (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`, `/v3/watch`), as etcd documents it.
 *
 * Why not the npm `etcd3` client (microsoft, 1.1.2, the maintained v3 client for Node): loading it
 * costs 280-420 ms on the reference machine (measured: `require('etcd3')` 315, 276, 323, 426, 360
 * ms; `node:http` 7 ms), because it loads @grpc/grpc-js and parses etcd's protobuf definitions at
 * start. Every `tsnet` command on a cluster network is its own process, and `run -d` must stay
 * within 1.2x of a single host's: that load time alone would exceed it. The gateway is part of
 * etcd (3.4 serves it on the client URL by default), speaks the same v3 API (revisions, leases,
 * transactions, watches with a start revision), and needs nothing beyond node:http.
 *
 * Behaviour:
 * - Several endpoints (the members): a request goes to the last one that answered and moves on to
 *   the next when one refuses or does not answer within `timeoutMs` (default 2 s): losing one
 *   member of three changes nothing for callers; losing all is UNAVAILABLE naming the store, fast.
 * - TLS as etcd documents it (`--cacert`, `--cert`, `--key`): the CA that signed the members'
 *   certificates, and a client certificate and key.
 * - Watches are one streaming request each; when the stream breaks, they reconnect (backoff 100 ms
 *   to 2 s, or at once on `kick`) and resume from the revision after the last one delivered, so
 *   no event is lost or repeated; a compacted revision is reported (`onCompacted`) for a re-list.
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { TsnetError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ClusterKv, KvCompare, KvEntry, KvEvent, KvOp, KvTxnResult, KvWatch, KvWatchHandler } from './api.js';

export interface EtcdTls {
  /** The CA that signed the members' certificates; omitted: the system's CAs. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

export interface EtcdOptions {
  /** "IP:PORT" of each member. */
  readonly endpoints: readonly string[];
  readonly tls?: EtcdTls;
  /** Per request and member (default 2000 ms). */
  readonly timeoutMs?: number;
  readonly log: Logger;
}

/** Parses `etcd://IP:PORT[,IP:PORT...]`; INVALID_CONFIG naming `field`. */
export function parseEtcdUrl(raw: string, field = 'cluster-store'): string[] {
  const bad = (why: string): TsnetError => new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: ${why}`, { details: { field, value: raw } });
  if (typeof raw !== 'string' || !raw.startsWith('etcd://')) throw bad('expected etcd://IP:PORT[,IP:PORT...]');
  const list = raw.slice('etcd://'.length).split(',').map((s) => s.trim());
  if (list.length === 0 || list.some((s) => s === '')) throw bad('expected etcd://IP:PORT[,IP:PORT...]');
  return list.map((ep) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(ep);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65_535) throw bad(`${ep}: expected IP:PORT`);
    return ep;
  });
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined): string => (s === undefined ? '' : Buffer.from(s, 'base64').toString('utf8'));

/** The end of the range of every key starting with `prefix` (etcd's prefix convention). */
export function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if ((b[i] ?? 0) < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i] = (out[i] ?? 0) + 1;
      return out.toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

interface RawKv {
  readonly key?: string;
  readonly value?: string;
  readonly create_revision?: string;
  readonly mod_revision?: string;
  readonly lease?: string;
}

function entryOf(kv: RawKv): KvEntry {
  return {
    key: unb64(kv.key),
    value: unb64(kv.value),
    createRevision: Number(kv.create_revision ?? 0),
    modRevision: Number(kv.mod_revision ?? 0),
    ...(kv.lease !== undefined && kv.lease !== '0' ? { lease: kv.lease } : {}),
  };
}

/** gRPC status codes (etcd's errors arrive as {code, message}). */
function errorOf(where: string, path: string, status: number, body: string): TsnetError {
  let code = 0;
  let message = body.trim().slice(0, 300);
  try {
    const j = JSON.parse(body) as { code?: number; message?: string; error?: string };
    code = j.code ?? 0;
    message = j.message ?? j.error ?? message;
  } catch {
    // not JSON: keep the text
  }
  const tcode = code === 5 ? 'NOT_FOUND' : code === 3 ? 'INVALID_CONFIG' : code === 14 || code === 4 || /no leader|timed out|unavailable/i.test(message) ? 'UNAVAILABLE' : 'INTERNAL';
  return new TsnetError(tcode, `cluster store ${where}: ${path}: ${message} (HTTP ${status})`, { details: { grpcCode: code, httpStatus: status } });
}

export function createEtcdKv(o: EtcdOptions): ClusterKv {
  const endpoints = [...o.endpoints];
  const where = `etcd://${endpoints.join(',')}`;
  const timeoutMs = o.timeoutMs ?? 2000;
  const tls = o.tls;
  const agent = tls !== undefined
    ? new HttpsAgent({ keepAlive: true, maxSockets: 16, ...(tls.ca !== undefined ? { ca: tls.ca } : {}), ...(tls.cert !== undefined ? { cert: tls.cert } : {}), ...(tls.key !== undefined ? { key: tls.key } : {}) })
    : new HttpAgent({ keepAlive: true, maxSockets: 16 });
  const log = o.log.child({ component: 'etcd' });
  let preferred = 0;
  let closed = false;
  const watches = new Set<WatchStream>();

  const split = (ep: string): { host: string; port: number } => {
    const i = ep.lastIndexOf(':');
    return { host: ep.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(ep.slice(i + 1)) };
  };
  const open = (ep: string, path: string, body: string, timeout: number | undefined): ClientRequest => {
    const { host, port } = split(ep);
    const opts = { host, port, path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, ...(timeout !== undefined ? { timeout } : {}) };
    return tls !== undefined ? httpsRequest(opts) : httpRequest(opts);
  };

  /** One request to one member: the parsed reply; rejects with `retry` set when another member may answer. */
  const once = (ep: string, path: string, payload: unknown): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify(payload);
      const req = open(ep, path, body, timeoutMs);
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { retry: true })));
      req.on('error', (err: Error & { retry?: boolean }) => reject(Object.assign(err, { retry: true })));
      req.on('response', (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err: Error) => reject(Object.assign(err, { retry: true })));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if ((res.statusCode ?? 0) >= 400) {
            const e = errorOf(where, path, res.statusCode ?? 0, text);
            // A member without a leader (a partitioned one) may be the only one failing.
            reject(Object.assign(e, { retry: e.code === 'UNAVAILABLE' }));
            return;
          }
          try {
            resolve(JSON.parse(text));
          } catch {
            reject(new TsnetError('INTERNAL', `cluster store ${where}: ${path}: not JSON: ${text.slice(0, 200)}`));
          }
        });
      });
      req.end(body);
    });

  /** A request to the cluster: the preferred member first, then the others once each. */
  const call = async <T>(path: string, payload: unknown): Promise<T> => {
    if (closed) throw new TsnetError('UNAVAILABLE', `cluster store ${where}: client closed`);
    const errors: string[] = [];
    for (let i = 0; i < endpoints.length; i++) {
      const idx = (preferred + i) % endpoints.length;
      const ep = endpoints[idx] as string;
      try {
        const r = (await once(ep, path, payload)) as T;
        preferred = idx;
        return r;
      } catch (err) {
        const e = err as Error & { retry?: boolean };
        if (e.retry !== true) throw e;
        errors.push(`${ep}: ${e.message}`);
      }
    }
    throw new TsnetError('UNAVAILABLE', `cluster store ${where} is unreachable (${errors.join('; ')})`, { details: { field: 'cluster-store' } });
  };

  const rev = (h: { header?: { revision?: string } }): number => Number(h.header?.revision ?? 0);
  const opOf = (op: KvOp): Record<string, unknown> =>
    op.op === 'put'
      ? { request_put: { key: b64(op.key), value: b64(op.value), ...(op.lease !== undefined ? { lease: op.lease } : {}) } }
      : { request_delete_range: { key: b64(op.key) } };
  const compareOf = (c: KvCompare): Record<string, unknown> =>
    'absent' in c
      ? { key: b64(c.key), target: 'CREATE', result: 'EQUAL', create_revision: '0' }
      : { key: b64(c.key), target: 'MOD', result: 'EQUAL', mod_revision: String(c.modRevision) };

  class WatchStream implements KvWatch {
    revision: number;
    readonly #prefix: string;
    readonly #h: KvWatchHandler;
    #req: ClientRequest | undefined;
    #timer: NodeJS.Timeout | undefined;
    #backoff = 100;
    #closed = false;
    #up = false;
    #member = preferred;
    constructor(prefix: string, from: number, h: KvWatchHandler) {
      this.#prefix = prefix;
      this.revision = from - 1;
      this.#h = h;
      this.#connect();
    }
    #connect(): void {
      if (this.#closed) return;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      const ep = endpoints[this.#member % endpoints.length] as string;
      const body = JSON.stringify({ create_request: { key: b64(this.#prefix), range_end: prefixEnd(this.#prefix), start_revision: String(this.revision + 1) } });
      const req = open(ep, '/v3/watch', body, undefined);
      this.#req = req;
      let buf = '';
      const broke = (why: string): void => {
        if (this.#req !== req) return;
        this.#req = undefined;
        req.destroy();
        if (this.#up) {
          this.#up = false;
          this.#h.onConnection?.(false);
        }
        if (this.#closed) return;
        log.debug('watch broke; reconnecting', { member: ep, why, revision: this.revision });
        this.#member++;
        this.#timer = setTimeout(() => this.#connect(), this.#backoff);
        this.#timer.unref();
        this.#backoff = Math.min(2000, this.#backoff * 2);
      };
      // Connecting must not hang on a member that does not answer.
      const connectTimer = setTimeout(() => broke('connect timeout'), timeoutMs);
      connectTimer.unref();
      req.on('error', (err: Error) => broke(err.message));
      req.on('response', (res: IncomingMessage) => {
        clearTimeout(connectTimer);
        if ((res.statusCode ?? 0) >= 400) {
          broke(`HTTP ${res.statusCode ?? 0}`);
          return;
        }
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line !== '') this.#message(line, broke);
          }
        });
        res.on('end', () => broke('stream ended'));
        res.on('error', (err: Error) => broke(err.message));
      });
      req.end(body);
    }
    #message(line: string, broke: (why: string) => void): void {
      let m: { result?: { header?: { revision?: string }; created?: boolean; canceled?: boolean; compact_revision?: string; events?: { type?: string; kv?: RawKv }[] }; error?: { message?: string } };
      try {
        m = JSON.parse(line) as typeof m;
      } catch {
        broke('unparsable message');
        return;
      }
      const r = m.result;
      if (r === undefined) {
        broke(m.error?.message ?? 'error message');
        return;
      }
      if (r.compact_revision !== undefined && r.compact_revision !== '0') {
        this.revision = Number(r.compact_revision) - 1;
        this.#h.onCompacted(Number(r.compact_revision));
        broke('compacted');
        return;
      }
      if (r.created === true) {
        this.#backoff = 100;
        if (!this.#up) {
          this.#up = true;
          this.#h.onConnection?.(true);
        }
      }
      if (r.canceled === true) {
        broke('canceled');
        return;
      }
      const events: KvEvent[] = (r.events ?? []).map((e) =>
        e.type === 'DELETE' ? { type: 'delete', key: unb64(e.kv?.key), modRevision: Number(e.kv?.mod_revision ?? 0) } : { type: 'put', entry: entryOf(e.kv ?? {}) },
      );
      if (events.length > 0) {
        const last = events.at(-1) as KvEvent;
        this.revision = Math.max(this.revision, last.type === 'put' ? last.entry.modRevision : last.modRevision);
        this.#h.onEvents(events, this.revision);
      }
    }
    kick(): void {
      if (this.#closed || this.#req !== undefined) return;
      this.#backoff = 100;
      this.#connect();
    }
    close(): void {
      this.#closed = true;
      clearTimeout(this.#timer);
      this.#req?.destroy();
      this.#req = undefined;
      watches.delete(this);
    }
  }

  return {
    where,
    async get(key) {
      const r = await call<{ kvs?: RawKv[] }>('/v3/kv/range', { key: b64(key) });
      const kv = r.kvs?.[0];
      return kv === undefined ? undefined : entryOf(kv);
    },
    async list(prefix) {
      const r = await call<{ kvs?: RawKv[]; header?: { revision?: string } }>('/v3/kv/range', { key: b64(prefix), range_end: prefixEnd(prefix) });
      return { entries: (r.kvs ?? []).map(entryOf), revision: rev(r) };
    },
    async txn(req): Promise<KvTxnResult> {
      const r = await call<{ succeeded?: boolean; header?: { revision?: string }; responses?: { response_range?: { kvs?: RawKv[] } }[] }>('/v3/kv/txn', {
        compare: req.if.map(compareOf),
        success: req.then.map(opOf),
        failure: (req.readOnFailure ?? []).map((k) => ({ request_range: { key: b64(k) } })),
      });
      const read = r.succeeded === true ? [] : (r.responses ?? []).flatMap((x) => (x.response_range?.kvs ?? []).map(entryOf));
      return { succeeded: r.succeeded === true, revision: rev(r), read };
    },
    async put(key, value, opts = {}) {
      return rev(await call('/v3/kv/put', { key: b64(key), value: b64(value), ...(opts.lease !== undefined ? { lease: opts.lease } : {}) }));
    },
    async delete(key) {
      const r = await call<{ deleted?: string }>('/v3/kv/deleterange', { key: b64(key) });
      return Number(r.deleted ?? 0) > 0;
    },
    async grantLease(ttl) {
      const r = await call<{ ID?: string; error?: string }>('/v3/lease/grant', { TTL: String(ttl) });
      if (r.ID === undefined) throw new TsnetError('INTERNAL', `cluster store ${where}: lease grant: ${r.error ?? 'no id'}`);
      return r.ID;
    },
    async keepAlive(lease) {
      const r = await call<{ result?: { TTL?: string } }>('/v3/lease/keepalive', { ID: lease });
      return Number(r.result?.TTL ?? 0);
    },
    async revokeLease(lease) {
      await call('/v3/lease/revoke', { ID: lease }).catch((err: unknown) => {
        if (!(err instanceof TsnetError && err.code === 'NOT_FOUND')) throw err;
      });
    },
    watch(prefix, fromRevision, handler) {
      const w = new WatchStream(prefix, fromRevision, handler);
      watches.add(w);
      return w;
    },
    async close() {
      closed = true;
      for (const w of [...watches]) w.close();
      agent.destroy();
    },
  };
}
