/**
 * Query → verdict, from one snapshot (pure apart from the injected rotation counter). Wire format
 * through `dns-packet`. What it decides:
 * - a source that is no endpoint of the arrival network gets no answer at all ("drop"): the
 *   resolver is never an open resolver, never a reflector for spoofed sources, and leaks nothing;
 * - local names: A/AAAA (ANY: both) with the addresses rotated per query when several containers
 *   share a name; the name exists but has no record of that type → NODATA (NOERROR, no answer);
 * - PTR for an address on a visible network: the endpoint's canonical name; any other address
 *   inside a DNS-enabled network's subnet → NXDOMAIN (never asked upstream);
 * - a single-label name that is not local → NXDOMAIN (dnsmasq's domain-needed: container names
 *   never leak upstream); anything else is forwarded, except on an internal network (REFUSED);
 * - EDNS0: the client's UDP size (512..4096) bounds the UDP answer, an OPT is echoed, an
 *   unknown EDNS version gets BADVERS; an answer too large for UDP is sent empty with TC set,
 *   and the client retries over TCP;
 * - malformed packets: FORMERR when a header can be read, else nothing; responses are ignored.
 */
import dnsPacket, { type Answer, type DecodedPacket, type OptAnswer, type Question } from 'dns-packet';
import { addrFamily, parseIpAddr, type IpAddr } from '../core/net.js';
import { wellFormed } from './wire.js';
import { lookupAddr, lookupName, normalizeName, visibleNetworks, type DnsSnapshot, type NetworkTable } from './records.js';

export type Transport = 'udp' | 'tcp';

export interface QueryContext {
  /** The network whose gateway the query arrived at. */
  readonly networkId: string;
  readonly source: IpAddr;
  readonly transport: Transport;
  /** Rotation counter: a number that changes per call for one key (round robin). */
  readonly rotate: (key: string) => number;
}

export type Verdict =
  /** `cacheable`: the same query bytes from the same client give the same reply until the next snapshot. */
  | { readonly kind: 'reply'; readonly packet: Buffer; readonly cacheable: boolean }
  /** Send the query upstream; `servfail` is the reply if no upstream answers in time. */
  | { readonly kind: 'forward'; readonly servfail: Buffer }
  | { readonly kind: 'drop' };

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const BADVERS_EXT = 1; // BADVERS = 16: extended rcode 1, header rcode 0
const QR = 0x8000;
const AA = dnsPacket.AUTHORITATIVE_ANSWER;
const TC = dnsPacket.TRUNCATED_RESPONSE;
const RD = dnsPacket.RECURSION_DESIRED;
const RA = dnsPacket.RECURSION_AVAILABLE;
/** Local records are not cached by clients (dnsmasq's local-ttl default): a removed container stops resolving at once. */
export const LOCAL_TTL = 0;
/** What we advertise and the most we send over UDP. */
export const MAX_UDP = 4096;
const MIN_UDP = 512;

/** A reply carrying only a header (for packets whose question cannot be read). */
function headerOnly(query: Buffer, rcode: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(query.readUInt16BE(0), 0);
  const flags = query.readUInt16BE(2);
  b.writeUInt16BE(QR | (flags & 0x7800) | (flags & RD) | RA | rcode, 2);
  return b;
}

interface Parsed {
  readonly id: number;
  readonly opcode: number;
  readonly rd: boolean;
  readonly question: Question;
  readonly opt: OptAnswer | undefined;
}

function build(q: Parsed, o: { rcode: number; aa: boolean; answers?: Answer[]; ext?: number; transport: Transport }): Buffer {
  const additionals: Answer[] = q.opt ? [{ type: 'OPT', name: '.', udpPayloadSize: MAX_UDP, extendedRcode: o.ext ?? 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [];
  const flags = (q.opcode << 11) | (o.aa ? AA : 0) | (q.rd ? RD : 0) | RA | o.rcode;
  const answers = o.answers ?? [];
  const full = dnsPacket.encode({ type: 'response', id: q.id, flags, questions: [q.question], answers, additionals });
  if (o.transport === 'tcp') return full;
  const limit = q.opt ? Math.min(MAX_UDP, Math.max(MIN_UDP, q.opt.udpPayloadSize)) : MIN_UDP;
  if (full.length <= limit) return full;
  return dnsPacket.encode({ type: 'response', id: q.id, flags: flags | TC, questions: [q.question], answers: [], additionals });
}

/** The address a reverse name stands for, or undefined. */
export function reverseAddr(name: string): IpAddr | undefined {
  const n = normalizeName(name);
  try {
    if (n.endsWith('.in-addr.arpa')) {
      const parts = n.slice(0, -'.in-addr.arpa'.length).split('.');
      if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p))) return undefined;
      return parseIpAddr(parts.reverse().join('.'));
    }
    if (n.endsWith('.ip6.arpa')) {
      const nibbles = n.slice(0, -'.ip6.arpa'.length).split('.');
      if (nibbles.length !== 32 || !nibbles.every((x) => /^[0-9a-f]$/.test(x))) return undefined;
      const hex = nibbles.reverse().join('');
      return parseIpAddr(hex.match(/.{4}/g)?.join(':') ?? '');
    }
  } catch {
    return undefined;
  }
  return undefined;
}

function rotated(addrs: readonly IpAddr[], start: number): IpAddr[] {
  const k = start % addrs.length;
  return [...addrs.slice(k), ...addrs.slice(0, k)];
}

function localAnswer(snap: DnsSnapshot, q: Parsed, visible: readonly NetworkTable[], ctx: QueryContext): Verdict | undefined {
  const { name } = q.question;
  const type: string = q.question.type;
  if (type === 'PTR') {
    const addr = reverseAddr(name);
    if (addr === undefined) return undefined;
    const hit = lookupAddr(snap, visible, addr);
    if (hit === 'foreign') return undefined;
    if (hit === 'nxdomain') return { kind: 'reply', packet: build(q, { rcode: RCODE.NXDOMAIN, aa: true, transport: ctx.transport }), cacheable: true };
    return { kind: 'reply', packet: build(q, { rcode: RCODE.NOERROR, aa: true, transport: ctx.transport, answers: [{ type: 'PTR', name, ttl: LOCAL_TTL, data: hit.name }] }), cacheable: true };
  }
  const addrs = lookupName(visible, name);
  if (addrs === undefined) return undefined;
  const wanted = type === 'A' ? [4] : type === 'AAAA' ? [6] : type === 'ANY' ? [4, 6] : [];
  const matching = addrs.filter((a) => wanted.includes(addrFamily(a)));
  const ordered = matching.length > 1 ? rotated(matching, ctx.rotate(`${visible[0]?.id ?? ''}\0${normalizeName(name)}\0${type}`)) : matching;
  const answers: Answer[] = ordered.map((a) => ({ type: addrFamily(a) === 4 ? 'A' : 'AAAA', name, ttl: LOCAL_TTL, data: a }));
  return { kind: 'reply', packet: build(q, { rcode: RCODE.NOERROR, aa: true, answers, transport: ctx.transport }), cacheable: matching.length <= 1 };
}

export function answerQuery(snap: DnsSnapshot, query: Buffer, ctx: QueryContext): Verdict {
  const visible = visibleNetworks(snap, ctx.networkId, ctx.source);
  if (visible === undefined) return { kind: 'drop' };
  if (query.length < 12 || (query.readUInt16BE(2) & QR) !== 0) return { kind: 'drop' };
  const opcode = (query.readUInt16BE(2) >> 11) & 0xf;
  if (!wellFormed(query)) return { kind: 'reply', packet: headerOnly(query, RCODE.FORMERR), cacheable: false };
  let decoded: DecodedPacket;
  try {
    decoded = dnsPacket.decode(query);
  } catch {
    return { kind: 'reply', packet: headerOnly(query, RCODE.FORMERR), cacheable: false };
  }
  const questions = decoded.questions ?? [];
  const question = questions[0];
  if (opcode !== 0) return { kind: 'reply', packet: headerOnly(query, RCODE.NOTIMP), cacheable: false };
  if (questions.length !== 1 || question === undefined) return { kind: 'reply', packet: headerOnly(query, RCODE.FORMERR), cacheable: false };
  const opts = (decoded.additionals ?? []).filter((a): a is OptAnswer => a.type === 'OPT');
  if (opts.length > 1) return { kind: 'reply', packet: headerOnly(query, RCODE.FORMERR), cacheable: false };
  const q: Parsed = { id: decoded.id ?? 0, opcode, rd: decoded.flag_rd, question, opt: opts[0] };
  if (q.opt !== undefined && q.opt.ednsVersion !== 0) {
    return { kind: 'reply', packet: build(q, { rcode: 0, ext: BADVERS_EXT, aa: false, transport: ctx.transport }), cacheable: true };
  }
  if (question.class === 'IN' || question.class === 'ANY') {
    const local = localAnswer(snap, q, visible, ctx);
    if (local !== undefined) return local;
    const n = normalizeName(question.name);
    if (n !== '' && !n.includes('.')) return { kind: 'reply', packet: build(q, { rcode: RCODE.NXDOMAIN, aa: true, transport: ctx.transport }), cacheable: true };
  }
  if (visible[0]?.internal === true) return { kind: 'reply', packet: build(q, { rcode: RCODE.REFUSED, aa: false, transport: ctx.transport }), cacheable: true };
  return { kind: 'forward', servfail: build(q, { rcode: RCODE.SERVFAIL, aa: false, transport: ctx.transport }) };
}
