/**
 * A DNS client for tests and benchmarks (dns-packet over node:dgram / node:net). Used in-process
 * against loopback, and inside namespaces through test/helpers/dns-tool.ts.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket, { type RecordType } from 'dns-packet';

export interface DnsQuestion {
  readonly name: string;
  readonly type: RecordType | 'ANY';
  readonly tcp?: boolean;
  /** EDNS0 UDP payload size to advertise. */
  readonly edns?: number;
}

export interface DnsResult {
  /** "timeout", "closed" (TCP connection ended without an answer) or "error: ..." when there is no answer. */
  readonly error?: string;
  readonly rcode?: string;
  readonly tc?: boolean;
  readonly aa?: boolean;
  readonly id?: number;
  readonly answers?: readonly { readonly type: string; readonly data: string }[];
  readonly ms: number;
}

export function encodeQuestion(q: DnsQuestion, id: number): Buffer {
  return dnsPacket.encode({
    type: 'query', id, flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name: q.name, type: q.type as RecordType, class: 'IN' }],
    additionals: q.edns !== undefined ? [{ type: 'OPT', name: '.', udpPayloadSize: q.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [],
  });
}

function describe(m: Buffer, t0: number): DnsResult {
  const p = dnsPacket.decode(m) as ReturnType<typeof dnsPacket.decode> & { rcode?: string };
  return {
    rcode: p.rcode ?? '?', tc: p.flag_tc, aa: p.flag_aa, id: p.id ?? 0, ms: performance.now() - t0,
    answers: (p.answers ?? []).map((a) => ({ type: a.type, data: 'data' in a ? String(a.data) : '' })),
  };
}

/** Sends raw bytes over UDP and waits for one datagram back. */
export function exchangeUdp(server: string, port: number, msg: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(server.includes(':') ? 'udp6' : 'udp4');
    const done = (r: Buffer | undefined): void => {
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done(undefined));
    sock.on('message', (m) => done(m));
    sock.send(msg, port, server);
  });
}

export function exchangeTcp(server: string, port: number, msg: Buffer, timeoutMs: number): Promise<Buffer | 'closed' | undefined> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    const sock = net.connect({ host: server, port });
    const done = (r: Buffer | 'closed' | undefined): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done('closed'));
    sock.on('close', () => done('closed'));
    sock.on('connect', () => {
      const f = Buffer.alloc(msg.length + 2);
      f.writeUInt16BE(msg.length, 0);
      msg.copy(f, 2);
      sock.write(f);
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0))));
    });
  });
}

export async function ask(server: string, port: number, q: DnsQuestion, timeoutMs = 3000): Promise<DnsResult> {
  const id = Math.floor(Math.random() * 65536);
  const msg = encodeQuestion(q, id);
  const t0 = performance.now();
  const r = q.tcp === true ? await exchangeTcp(server, port, msg, timeoutMs) : await exchangeUdp(server, port, msg, timeoutMs);
  if (r === undefined) return { error: 'timeout', ms: performance.now() - t0 };
  if (r === 'closed') return { error: 'closed', ms: performance.now() - t0 };
  try {
    return describe(r, t0);
  } catch (err) {
    return { error: `error: ${err instanceof Error ? err.message : String(err)}`, ms: performance.now() - t0 };
  }
}
