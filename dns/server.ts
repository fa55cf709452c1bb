/**
 * The resolver's sockets (the one place outside sys/ that opens sockets, by design): UDP and TCP on
 * port 53 of each DNS-enabled network's gateway(s), answering from the current snapshot.
 *
 * - `update(snapshot)` swaps the table in one assignment and adds or removes listeners only for
 *   gateways that appear or disappear: a reload never closes a socket that is serving, so no
 *   in-flight query is lost.
 * - Replies to repeated queries come from a per-snapshot cache (key: network, client, the query
 *   bytes after the id), so the hot path is a map lookup and a copy.
 * - Native fast path (optional, `native`): a C addon (native/dns-fast.c) serves the UDP socket JS
 *   bound from its own thread, replaying replies JS computed and marked cacheable, byte for byte
 *   (key: client address + query bytes after the id); every other datagram reaches JS as before
 *   (through a bounded queue) and JS's answer is sent and installed by the addon. A snapshot swap
 *   clears the addon's cache before `update` resolves. Without it, the same answers come from JS.
 * - Forwarding: a fresh socket per query (kernel-chosen random source port) with a random query id,
 *   connected to the upstream so an ICMP "port unreachable" ends the wait at once; upstreams tried
 *   in order within one overall timeout; a bounded number in flight (beyond it: SERVFAIL at once).
 *   UDP queries are forwarded over UDP (a truncated upstream answer reaches the client with TC set,
 *   and it retries over TCP), TCP queries over TCP.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { TsnetError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { addrFamily, type IpAddr } from '../core/net.js';
import { answerQuery, type Transport, type Verdict } from './answer.js';
import type { DnsSnapshot } from './records.js';

export interface Upstream {
  readonly host: IpAddr;
  readonly port: number;
}

/** The addon's per-listener counters. */
export interface NativeListenerStats {
  readonly hits: number;
  readonly misses: number;
  /** Misses dropped because the queue to JS was full. */
  readonly queueDrops: number;
  /** Datagrams shorter than a header or longer than 4096 bytes, dropped in C. */
  readonly ignored: number;
  readonly sendErrors: number;
  readonly installed: number;
  readonly clears: number;
  readonly entries: number;
  readonly bytes: number;
}

declare const nativeHandle: unique symbol;
export type NativeHandle = { readonly [nativeHandle]: true };

/** native/dns-fast.c (see its header). */
export interface DnsNativeAddon {
  open(fd: number, onMiss: (query: Buffer, address: string, port: number, sockaddr: Buffer) => void, maxEntries: number, maxBytes: number, queueMax: number): NativeHandle;
  /** Joins the thread; idempotent. The socket stays JS's. */
  stop(h: NativeHandle): void;
  /** Sends `reply` to `sockaddr`; installs it for (client address, query) when `cacheable`. False if not sent. */
  reply(h: NativeHandle, sockaddr: Buffer, query: Buffer, reply: Buffer, cacheable: boolean): boolean;
  clear(h: NativeHandle): void;
  stats(h: NativeHandle): NativeListenerStats;
}

/** Native fast path counters, summed over listeners (closed ones included). */
export type DnsNativeStats = { -readonly [K in Exclude<keyof NativeListenerStats, 'entries' | 'bytes' | 'installed' | 'clears'>]: number };

export interface DnsServerOptions {
  readonly log: Logger;
  /** 53 unless a test says otherwise. */
  readonly port: number;
  /** Read at each forward, so a reload can change them. */
  readonly upstreams: () => readonly Upstream[];
  /** Overall budget of one forwarded query (default 2000 ms). */
  readonly timeoutMs?: number;
  /** Forwarded queries in flight at most (default 256). */
  readonly maxInFlight?: number;
  readonly randomId: () => number;
  /** The native UDP fast path, when loaded; absent: everything is answered in JS. */
  readonly native?: DnsNativeAddon;
}

export interface DnsServerStats {
  queries: number;
  cacheHits: number;
  forwarded: number;
  servfail: number;
  overload: number;
  dropped: number;
  tcpConnections: number;
  /** Queries that threw (a bug); each cost that query only. */
  errors: number;
}

export interface DnsServer {
  /** Swaps the snapshot; listeners follow its gateways. Resolves with the addresses that could not be bound. */
  update(s: DnsSnapshot): Promise<{ readonly listening: readonly string[]; readonly failed: readonly string[] }>;
  stats(): Readonly<DnsServerStats> & {
    readonly inFlight: number;
    readonly listeners: readonly string[];
    readonly version: number;
    /** Present when the addon was given: its counters and how many listeners it serves. */
    readonly native?: DnsNativeStats & { readonly listeners: number };
  };
  close(): Promise<void>;
}

interface Listener {
  readonly key: string;
  readonly networkId: string;
  readonly addr: IpAddr;
  readonly udp: dgram.Socket;
  readonly tcp: net.Server;
  readonly conns: Set<net.Socket>;
  /** Reply cache of the current snapshot, per transport: client address → query bytes after the id (latin1) → reply. */
  readonly cache: { readonly udp: Map<string, Map<string, Buffer>>; readonly tcp: Map<string, Map<string, Buffer>> };
  /** Set when the addon serves this listener's UDP socket. */
  native: NativeHandle | undefined;
}

const NATIVE_KEYS = ['hits', 'misses', 'queueDrops', 'ignored', 'sendErrors'] as const satisfies readonly (keyof DnsNativeStats)[];

type ForwardVerdict = Extract<Verdict, { kind: 'forward' }>;

const CACHE_MAX = 20_000;
/**
 * The addon's cache per listener: at most CACHE_MAX entries and this many bytes of keys and replies
 * (full: emptied, as the JS cache). With its 2 x 64 x 4 KiB batch buffers, a listener's addon memory
 * stays under ~5 MiB.
 */
const NATIVE_CACHE_BYTES = 4 << 20;
/** Misses waiting for JS at most; beyond, the addon drops (and counts) them, as a full socket buffer would. */
const NATIVE_QUEUE_MAX = 2048;
const TCP_MAX_CONNS = 256;
const TCP_IDLE_MS = 10_000;

/** dgram's default resolves every send's address through dns.lookup plus a nextTick; ours are always literal. */
const literal = (family: 4 | 6) => (address: string, _o: unknown, cb: (err: Error | null, address: string, family: number) => void): void => cb(null, address, family);

/** The fd of a bound dgram socket and a way to stop libuv reading it (Node internals, checked: undefined if absent). */
function udpHandleOf(sock: dgram.Socket): { readonly fd: number; readonly recvStop: () => number } | undefined {
  const sym = Object.getOwnPropertySymbols(sock).find((x) => x.description === 'state symbol');
  const state = sym !== undefined ? (sock as unknown as Record<symbol, { handle?: { fd?: unknown; recvStop?: unknown } } | undefined>)[sym] : undefined;
  const h = state?.handle;
  if (h === undefined || typeof h.fd !== 'number' || h.fd < 0 || typeof h.recvStop !== 'function') return undefined;
  const recvStop = h.recvStop as () => number;
  return { fd: h.fd, recvStop: () => recvStop.call(h) };
}

const sourceOf = (a: string | undefined): IpAddr => (a ?? '').replace(/^::ffff:(?=\d+\.)/, '') as IpAddr;

function frame(msg: Buffer): Buffer {
  const b = Buffer.allocUnsafe(msg.length + 2);
  b.writeUInt16BE(msg.length, 0);
  msg.copy(b, 2);
  return b;
}

/** One UDP exchange with an upstream; undefined on timeout, ICMP error or a mismatched answer. */
function udpExchange(up: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(addrFamily(up.host) === 4 ? 'udp4' : 'udp6');
    const id = query.readUInt16BE(0);
    let finished = false;
    const done = (r: Buffer | undefined): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.removeAllListeners('message');
      sock.on('error', () => undefined);
      try {
        sock.close();
      } catch {
        // already closed
      }
      resolve(r);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done(undefined));
    sock.on('message', (m) => {
      if (m.length >= 12 && m.readUInt16BE(0) === id && (m.readUInt16BE(2) & 0x8000) !== 0) done(m);
    });
    sock.connect(up.port, up.host, () => {
      if (finished) return; // failed or timed out before the connect completed
      try {
        sock.send(query, (err) => err && done(undefined));
      } catch {
        done(undefined);
      }
    });
  });
}

/** One TCP exchange (length-prefixed) with an upstream. */
function tcpExchange(up: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const id = query.readUInt16BE(0);
    let buf: Buffer = Buffer.alloc(0);
    const sock = net.connect({ host: up.host, port: up.port });
    const done = (r: Buffer | undefined): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done(undefined));
    sock.on('close', () => done(undefined));
    sock.on('connect', () => sock.write(frame(query)));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2) return;
      const len = buf.readUInt16BE(0);
      if (buf.length < 2 + len) return;
      const m = buf.subarray(2, 2 + len);
      done(m.length >= 12 && m.readUInt16BE(0) === id && (m.readUInt16BE(2) & 0x8000) !== 0 ? Buffer.from(m) : undefined);
    });
  });
}

export function createDnsServer(o: DnsServerOptions): DnsServer {
  const log = o.log.child({ component: 'dns' });
  const timeoutMs = o.timeoutMs ?? 2000;
  const maxInFlight = o.maxInFlight ?? 256;
  let snap: DnsSnapshot | undefined;
  let cacheCount = 0;
  const closedNative: DnsNativeStats = { hits: 0, misses: 0, queueDrops: 0, ignored: 0, sendErrors: 0 };
  const counters = new Map<string, number>();
  const listeners = new Map<string, Listener>();
  let inFlight = 0;
  let closed = false;
  const st: DnsServerStats = { queries: 0, cacheHits: 0, forwarded: 0, servfail: 0, overload: 0, dropped: 0, tcpConnections: 0, errors: 0 };
  const rotate = (key: string): number => {
    if (counters.size > 10_000) counters.clear();
    const n = counters.get(key) ?? 0;
    counters.set(key, (n + 1) % 1_000_000);
    return n;
  };

  async function forward(query: Buffer, servfail: Buffer, transport: Transport): Promise<Buffer> {
    if (inFlight >= maxInFlight) {
      st.overload++;
      st.servfail++;
      return servfail;
    }
    inFlight++;
    st.forwarded++;
    try {
      const ups = o.upstreams();
      const deadline = Date.now() + timeoutMs;
      const clientId = query.readUInt16BE(0);
      for (let i = 0; i < ups.length; i++) {
        const up = ups[i] as Upstream;
        const left = deadline - Date.now();
        if (left <= 0) break;
        const out = Buffer.from(query);
        out.writeUInt16BE(o.randomId() & 0xffff, 0);
        const r = await (transport === 'udp' ? udpExchange : tcpExchange)(up, out, Math.max(1, Math.floor(left / (ups.length - i))));
        if (r !== undefined) {
          r.writeUInt16BE(clientId, 0);
          return r;
        }
      }
      st.servfail++;
      return servfail;
    } finally {
      inFlight--;
    }
  }

  /** Answers one query: the reply to send now, a forward verdict (the caller forwards), or undefined (no answer). */
  function handle(l: Listener, msg: Buffer, source: IpAddr, transport: Transport): Buffer | ForwardVerdict | undefined {
    st.queries++;
    const s = snap;
    if (s === undefined || msg.length < 12) {
      st.dropped++;
      return undefined;
    }
    const q = msg.toString('latin1', 2);
    const bySource = l.cache[transport].get(source);
    const hit = bySource?.get(q);
    if (hit !== undefined) {
      st.cacheHits++;
      const b = Buffer.allocUnsafe(hit.length);
      hit.copy(b);
      b[0] = msg[0] as number;
      b[1] = msg[1] as number;
      return b;
    }
    const v = answerQuery(s, msg, { networkId: l.networkId, source, transport, rotate });
    switch (v.kind) {
      case 'drop':
        st.dropped++;
        return undefined;
      case 'reply':
        if (v.cacheable) {
          if (cacheCount >= CACHE_MAX) clearCaches();
          cacheCount++;
          if (bySource !== undefined) bySource.set(q, v.packet);
          else l.cache[transport].set(source, new Map([[q, v.packet]]));
        }
        return v.packet;
      case 'forward':
        return v;
    }
  }

  /** A datagram the addon did not answer: JS decides, the addon sends (and caches what may be cached). */
  function onNativeMiss(l: Listener, h: NativeHandle, native: DnsNativeAddon, msg: Buffer, address: string, sockaddr: Buffer): void {
    st.queries++;
    const s = snap;
    if (s === undefined || l.native !== h) {
      st.dropped++;
      return;
    }
    try {
      const v = answerQuery(s, msg, { networkId: l.networkId, source: sourceOf(address), transport: 'udp', rotate });
      switch (v.kind) {
        case 'drop':
          st.dropped++;
          return;
        case 'reply':
          native.reply(h, sockaddr, msg, v.packet, v.cacheable);
          return;
        case 'forward':
          forwardThen(msg, v, 'udp', (b) => native.reply(h, sockaddr, msg, b, false));
          return;
      }
    } catch (err) {
      st.errors++;
      log.warn('query failed', { err: err instanceof Error ? err.message : String(err) });
    }
  }

  /** Hands the listener's UDP socket to the addon; false (JS keeps serving it) if that cannot be done. */
  function startNative(l: Listener, native: DnsNativeAddon): boolean {
    const uh = udpHandleOf(l.udp);
    if (uh === undefined) {
      log.warn('native dns fast path: no fd on the UDP socket; serving from JS', { addr: l.addr });
      return false;
    }
    try {
      const h: NativeHandle = native.open(uh.fd, (msg, address, _port, sockaddr) => onNativeMiss(l, h, native, msg, address, sockaddr), CACHE_MAX, NATIVE_CACHE_BYTES, NATIVE_QUEUE_MAX);
      l.native = h;
      uh.recvStop(); // from here only the addon's thread reads the socket
      return true;
    } catch (err) {
      log.warn('native dns fast path: cannot start; serving from JS', { addr: l.addr, err: err instanceof Error ? err.message : String(err) });
      return false;
    }
  }

  function stopNative(l: Listener): void {
    const h = l.native;
    if (h === undefined || o.native === undefined) return;
    l.native = undefined;
    o.native.stop(h);
    const n = o.native.stats(h);
    for (const k of NATIVE_KEYS) closedNative[k] += n[k];
  }

  function clearCaches(): void {
    cacheCount = 0;
    for (const l of listeners.values()) {
      l.cache.udp.clear();
      l.cache.tcp.clear();
      if (l.native !== undefined) o.native?.clear(l.native);
    }
  }

  /** Forwards `msg` and hands the answer (or SERVFAIL) to `send`. */
  function forwardThen(msg: Buffer, v: ForwardVerdict, transport: Transport, send: (b: Buffer) => void): void {
    forward(msg, v.servfail, transport).then(send, (err: unknown) => log.warn('forward failed', { err }));
  }

  function serveTcp(l: Listener, sock: net.Socket): void {
    if (l.conns.size >= TCP_MAX_CONNS) {
      sock.destroy();
      return;
    }
    st.tcpConnections++;
    l.conns.add(sock);
    sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
    sock.on('close', () => l.conns.delete(sock));
    sock.on('error', () => undefined);
    const source = sourceOf(sock.remoteAddress);
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = Buffer.from(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        let answered = false;
        try {
          const r = handle(l, msg, source, 'tcp');
          answered = r !== undefined;
          if (r !== undefined && 'servfail' in r) {
            forwardThen(msg, r, 'tcp', (b) => {
              if (!sock.destroyed) sock.write(frame(b));
            });
          } else if (r !== undefined) sock.write(frame(r));
        } catch (err) {
          st.errors++;
          log.warn('query failed', { err: err instanceof Error ? err.message : String(err) });
        }
        // A query that gets no answer (not a client of this network, a response) ends the connection.
        if (!answered) {
          sock.destroy();
          return;
        }
      }
    });
  }

  async function open(networkId: string, addr: IpAddr): Promise<Listener> {
    const key = `${networkId}|${addr}`;
    const family = addrFamily(addr);
    const udp = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20, lookup: literal(family) });
    const tcp = net.createServer();
    const l: Listener = { key, networkId, addr, udp, tcp, conns: new Set(), cache: { udp: new Map(), tcp: new Map() }, native: undefined };
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind({ address: addr, port: o.port, exclusive: true }, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host: addr, port: o.port, backlog: 128, ipv6Only: addrFamily(addr) === 6 }, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      tcp.close();
      throw new TsnetError('UNAVAILABLE', `dns: listen on ${addr} port ${o.port}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    udp.on('error', (err) => log.warn('udp socket error', { addr, err: err.message }));
    const v4 = addrFamily(addr) === 4;
    udp.on('message', (msg, rinfo) => {
      try {
        // No callbacks on send: errors go to the 'error' handler.
        const r = handle(l, msg, v4 ? (rinfo.address as IpAddr) : sourceOf(rinfo.address), 'udp');
        if (r === undefined) return;
        if ('servfail' in r) forwardThen(msg, r, 'udp', (b) => udp.send(b, rinfo.port, rinfo.address));
        else udp.send(r, rinfo.port, rinfo.address);
      } catch (err) {
        // A bug must cost one query, never the resolver.
        st.errors++;
        log.warn('query failed', { err: err instanceof Error ? err.message : String(err) });
      }
    });
    if (o.native !== undefined) startNative(l, o.native);
    tcp.on('connection', (sock) => serveTcp(l, sock));
    tcp.on('error', (err) => log.warn('tcp listener error', { addr, err: err.message }));
    return l;
  }

  async function shut(l: Listener): Promise<void> {
    stopNative(l); // joins the addon's thread before the socket closes
    for (const c of l.conns) c.destroy();
    await Promise.all([
      new Promise<void>((r) => l.udp.close(() => r())),
      new Promise<void>((r) => l.tcp.close(() => r())),
    ]).catch(() => undefined);
  }

  return {
    async update(next) {
      if (closed) throw new TsnetError('UNAVAILABLE', 'dns server is closed');
      snap = next;
      clearCaches();
      const want = new Map<string, { networkId: string; addr: IpAddr }>();
      for (const n of next.networks.values()) for (const g of n.gateways) want.set(`${n.id}|${g}`, { networkId: n.id, addr: g });
      for (const [key, l] of listeners) {
        if (!want.has(key)) {
          listeners.delete(key);
          await shut(l);
          log.info('stopped listening', { addr: l.addr, network: l.networkId });
        }
      }
      const failed: string[] = [];
      for (const [key, w] of want) {
        if (listeners.has(key)) continue;
        try {
          listeners.set(key, await open(w.networkId, w.addr));
          log.info('listening', { addr: w.addr, port: o.port, network: w.networkId });
        } catch (err) {
          failed.push(w.addr);
          log.warn('cannot listen (retried at the next reload)', { addr: w.addr, err: err instanceof Error ? err.message : String(err) });
        }
      }
      return { listening: [...listeners.values()].map((l) => l.addr), failed };
    },
    stats: () => {
      const base = { ...st, inFlight, listeners: [...listeners.values()].map((l) => l.addr), version: snap?.version ?? 0 };
      const native = o.native;
      if (native === undefined) return base;
      const sum: DnsNativeStats = { ...closedNative };
      let served = 0;
      for (const l of listeners.values()) {
        if (l.native === undefined) continue;
        served++;
        const n = native.stats(l.native);
        for (const k of NATIVE_KEYS) sum[k] += n[k];
      }
      return { ...base, native: { ...sum, listeners: served } };
    },
    async close() {
      closed = true;
      for (const l of listeners.values()) await shut(l);
      listeners.clear();
    },
  };
}
