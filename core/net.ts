/**
 * Branded network primitives. Each is created only by its parse function, at the boundary, and
 * trusted everywhere inside. Parse errors are INVALID_CONFIG and name the field at fault.
 */
import ipaddr from 'ipaddr.js';
import { TsnetError } from './errors.js';

declare const brand: unique symbol;
export type Brand<T, B extends string> = T & { readonly [brand]: B };

export type IfName = Brand<string, 'IfName'>;
/** An address in canonical text form: "10.0.0.5", "fd00::5". */
export type IpAddr = Brand<string, 'IpAddr'>;
/** An address with its prefix length, canonical text: "10.0.0.5/24", "fd00::1/64". Host bits may be set. */
export type Prefix = Brand<string, 'Prefix'>;
export type Port = Brand<number, 'Port'>;
export type MacAddr = Brand<string, 'MacAddr'>;
export type NetworkId = Brand<string, 'NetworkId'>;
export type EndpointId = Brand<string, 'EndpointId'>;
export type SandboxId = Brand<string, 'SandboxId'>;
export type Family = 4 | 6;
export type Proto = 'tcp' | 'udp' | 'sctp';
export const PROTOS = ['tcp', 'udp', 'sctp'] as const satisfies readonly Proto[];

/** A network namespace: the process's own ("host" for that process) or a namespace file. */
export type NetnsRef = { readonly kind: 'host' } | { readonly kind: 'path'; readonly path: string };
export const HOST_NETNS: NetnsRef = { kind: 'host' };

function invalid(field: string, raw: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: ${why}`, {
    details: { field, value: raw },
  });
}

const IFNAME = /^[A-Za-z0-9_.@-]{1,15}$/;
/** Linux interface name: 1–15 bytes (IFNAMSIZ-1), no '/', ':' or whitespace, not '.' or '..'. */
export function parseIfName(raw: string, field = 'interface name'): IfName {
  if (typeof raw !== 'string' || !IFNAME.test(raw) || raw === '.' || raw === '..') {
    const why =
      typeof raw !== 'string'
        ? 'not a string'
        : Buffer.byteLength(raw) > 15
          ? 'longer than 15 bytes'
          : raw.length === 0
            ? 'empty'
            : "must be 1-15 characters of letters, digits, '_', '.', '-', '@' (no '/', ':' or whitespace)";
    throw invalid(field, raw, why);
  }
  return raw as IfName;
}
export const IFNAME_PATTERN = IFNAME;

export function parseIpAddr(raw: string, field = 'address'): IpAddr {
  if (typeof raw !== 'string' || !ipaddr.isValid(raw) || raw.includes('/')) {
    throw invalid(field, raw, 'not an IPv4 or IPv6 address');
  }
  // ipaddr.isValid accepts "1" or "0x1" for IPv4 (inet_aton forms); require four dotted decimals.
  const parsed = ipaddr.parse(raw);
  if (parsed.kind() === 'ipv4' && !ipaddr.IPv4.isValidFourPartDecimal(raw)) {
    throw invalid(field, raw, 'IPv4 addresses must be four dotted decimals');
  }
  return canonicalAddr(parsed) as IpAddr;
}

function canonicalAddr(a: ipaddr.IPv4 | ipaddr.IPv6): string {
  if (a.kind() === 'ipv6') {
    const v6 = a as ipaddr.IPv6;
    return v6.toRFC5952String();
  }
  return a.toString();
}

export function parsePrefix(raw: string, field = 'prefix'): Prefix {
  if (typeof raw !== 'string' || !raw.includes('/')) throw invalid(field, raw, 'expected ADDRESS/LENGTH (CIDR)');
  const slash = raw.lastIndexOf('/');
  const addrPart = raw.slice(0, slash);
  const lenPart = raw.slice(slash + 1);
  let addr: IpAddr;
  try {
    addr = parseIpAddr(addrPart, field);
  } catch {
    throw invalid(field, raw, 'not a valid CIDR (bad address part)');
  }
  const max = addr.includes(':') ? 128 : 32;
  if (!/^\d{1,3}$/.test(lenPart) || Number(lenPart) > max) {
    throw invalid(field, raw, `prefix length must be 0-${max}`);
  }
  return `${addr}/${Number(lenPart)}` as Prefix;
}

const accepts = (parse: () => unknown): boolean => {
  try {
    parse();
    return true;
  } catch {
    return false;
  }
};
/** Whether `raw` is an address `parseIpAddr` accepts (for schema checks: `z.custom<IpAddr>(isIpAddr)`). */
export const isIpAddr = (raw: unknown): raw is IpAddr => typeof raw === 'string' && accepts(() => parseIpAddr(raw));
/** Whether `raw` is a prefix `parsePrefix` accepts. */
export const isPrefix = (raw: unknown): raw is Prefix => typeof raw === 'string' && accepts(() => parsePrefix(raw));

/** A subnet: a prefix whose host bits are zero ("10.1.2.0/24", not "10.1.2.3/24"). */
export function parseSubnet(raw: string, field = 'subnet'): Prefix {
  const p = parsePrefix(raw, field);
  const net = prefixNetwork(p);
  if (net !== p) throw invalid(field, raw, `host bits set; did you mean ${net}?`);
  return p;
}

export function prefixAddr(p: Prefix): IpAddr {
  return p.slice(0, p.lastIndexOf('/')) as IpAddr;
}
export function prefixLen(p: Prefix): number {
  return Number(p.slice(p.lastIndexOf('/') + 1));
}
export function addrFamily(a: IpAddr | Prefix): Family {
  return a.includes(':') ? 6 : 4;
}
/** The network prefix: host bits cleared. */
export function prefixNetwork(p: Prefix): Prefix {
  const len = prefixLen(p);
  const bytes = ipaddr.parse(prefixAddr(p)).toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, len - i * 8));
    bytes[i] = (bytes[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return `${canonicalAddr(ipaddr.fromByteArray(bytes))}/${len}` as Prefix;
}
export function makePrefix(addr: IpAddr, len: number): Prefix {
  return `${addr}/${len}` as Prefix;
}
export function prefixContains(net: Prefix, addr: IpAddr): boolean {
  if (addrFamily(net) !== addrFamily(addr)) return false;
  return prefixNetwork(makePrefix(addr, prefixLen(net))) === prefixNetwork(net);
}
export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  if (addrFamily(a) !== addrFamily(b)) return false;
  const len = Math.min(prefixLen(a), prefixLen(b));
  return prefixNetwork(makePrefix(prefixAddr(a), len)) === prefixNetwork(makePrefix(prefixAddr(b), len));
}

export function parsePort(raw: number | string, field = 'port'): Port {
  const n = typeof raw === 'number' ? raw : /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65_535) throw invalid(field, raw, 'must be an integer 1-65535');
  return n as Port;
}

export function parseProto(raw: string, field = 'protocol'): Proto {
  const p = typeof raw === 'string' ? raw.toLowerCase() : raw;
  if (!(PROTOS as readonly string[]).includes(p)) throw invalid(field, raw, 'must be tcp, udp or sctp');
  return p as Proto;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
export function parseMac(raw: string, field = 'mac address'): MacAddr {
  const m = typeof raw === 'string' ? raw.toLowerCase().replaceAll('-', ':') : '';
  if (!MAC.test(m)) throw invalid(field, raw, 'expected six hex octets like 02:42:ac:11:00:02');
  if ((parseInt(m.slice(0, 2), 16) & 1) === 1) throw invalid(field, raw, 'multicast bit set (first octet must be even)');
  return m as MacAddr;
}

const ID = /^[a-z0-9][a-z0-9_.-]{0,127}$/;
function parseId<T>(raw: string, field: string): T {
  if (typeof raw !== 'string' || !ID.test(raw)) {
    throw invalid(field, raw, 'must be 1-128 lowercase letters, digits, "_", "." or "-", starting with a letter or digit');
  }
  return raw as T;
}
export const parseNetworkId = (raw: string, field = 'network id'): NetworkId => parseId<NetworkId>(raw, field);
export const parseEndpointId = (raw: string, field = 'endpoint id'): EndpointId => parseId<EndpointId>(raw, field);
export const parseSandboxId = (raw: string, field = 'sandbox id'): SandboxId => parseId<SandboxId>(raw, field);

/** A namespace file path: absolute, no NUL, no "..". Existence is checked by sys/netns when opened. */
export function parseNetnsPath(raw: string, field = 'netns'): NetnsRef {
  if (typeof raw !== 'string' || !raw.startsWith('/') || raw.includes('\0') || raw.split('/').includes('..')) {
    throw invalid(field, raw, 'must be an absolute path to a network namespace file');
  }
  return { kind: 'path', path: raw };
}

export function netnsLabel(ns: NetnsRef): string {
  return ns.kind === 'host' ? 'host' : ns.path;
}

/** macvlan modes (the kernel's): how macvlans of one parent reach each other. */
export type MacvlanMode = 'bridge' | 'private' | 'vepa' | 'passthru';
export const MACVLAN_MODES = ['bridge', 'private', 'vepa', 'passthru'] as const satisfies readonly MacvlanMode[];
