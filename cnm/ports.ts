/**
 * Host ports for `-p`: checks requested host ports against what is already taken (mappings of other
 * endpoints, sockets host processes listen on), checks that a host address is local, and picks
 * ephemeral host ports (`-p 80`, `-p 127.0.0.1::80`, `-P`) from the kernel's local port range.
 * Pure: the caller reads the facts (records, `ss`, addresses, the sysctl) and passes them in.
 */
import { TsnetError } from '../core/errors.js';
import { addrFamily, type Family, type IpAddr, type Port, type Proto } from '../core/net.js';
import type { Listener, PortRange } from '../sys/api.js';

export type { Listener, PortRange };

/** A published mapping as far as the host side is concerned (hostIp undefined: every address of `family`). */
export interface HostBinding {
  readonly proto: Proto;
  readonly hostIp?: IpAddr;
  readonly family: Family;
  readonly hostPort: PortRange;
  /** Who holds it, for the message (a container's name). */
  readonly holder?: string;
}

/** What the caller asks for: hostPort undefined means "pick one" (a block as long as the container range). */
export interface PortAsk {
  readonly proto: Proto;
  readonly hostIp?: IpAddr;
  readonly hostPort?: PortRange;
  /** Where to pick from when hostPort is undefined (default: the ephemeral range). */
  readonly within?: PortRange;
  readonly containerPort: PortRange;
}

export interface HostFacts {
  /** Mappings other endpoints hold. */
  readonly taken: readonly HostBinding[];
  readonly listeners: readonly Listener[];
  /** Every address configured on the host's interfaces. */
  readonly localAddrs: readonly IpAddr[];
  /** net.ipv4.ip_local_port_range (it covers IPv6 too). */
  readonly ephemeral: PortRange;
  /** The families the endpoint has addresses in (a mapping without host address covers these). */
  readonly families: readonly Family[];
}

const UNSPECIFIED = new Set(['0.0.0.0', '::']);

/** The families an address stands for: one, or (undefined: every address) those of the endpoint. */
function familiesOf(ip: IpAddr | undefined, all: readonly Family[]): readonly Family[] {
  return ip === undefined ? all : [addrFamily(ip)];
}

/**
 * Whether a host address wanted (undefined: every address of `fams`) meets one already held: the
 * same address, an unspecified address of the family, or `[::]`, which takes IPv4 too
 * (net.ipv6.bindv6only is 0 by default).
 */
function meets(want: IpAddr | undefined, fams: readonly Family[], held: IpAddr | '*' | undefined, heldFams: readonly Family[]): boolean {
  if (held === '*' || held === '::') return true;
  const wantFams = familiesOf(want, fams);
  if (!heldFams.some((f) => wantFams.includes(f))) return false;
  if (want === undefined || held === undefined) return true;
  return want === held || UNSPECIFIED.has(want) || UNSPECIFIED.has(held);
}

const rangeText = (r: PortRange): string => (r.start === r.end ? `${r.start}` : `${r.start}-${r.end}`);
const hostText = (ip: IpAddr | undefined): string => (ip === undefined ? '0.0.0.0' : ip.includes(':') ? `[${ip}]` : ip);

function clash(ask: { proto: Proto; hostIp?: IpAddr }, port: PortRange, facts: HostFacts): string | undefined {
  for (const t of facts.taken) {
    if (t.proto !== ask.proto || t.hostPort.end < port.start || t.hostPort.start > port.end) continue;
    if (meets(ask.hostIp, facts.families, t.hostIp, familiesOf(t.hostIp, [t.family]))) return `${hostText(t.hostIp)}:${rangeText(t.hostPort)}/${t.proto} is already published by ${t.holder ?? 'another container'}`;
  }
  for (const l of facts.listeners) {
    if (l.proto !== ask.proto || l.port < port.start || l.port > port.end) continue;
    if (meets(ask.hostIp, facts.families, l.ip, l.ip === '*' ? [4, 6] : [addrFamily(l.ip)])) return `${l.proto} port ${l.port} is in use by a process on the host (listening on ${l.ip === '*' ? '*' : hostText(l.ip)}:${l.port})`;
  }
  return undefined;
}

function fail(code: 'ALREADY_EXISTS' | 'INVALID_CONFIG' | 'EXHAUSTED', msg: string): TsnetError {
  return new TsnetError(code, `publish: ${msg}`, { details: { field: 'publish' } });
}

/**
 * Turns asks into concrete host ports, in order; each granted port counts as taken for the next ask.
 * ALREADY_EXISTS names what holds a requested port; EXHAUSTED when no block of the needed length is
 * free in the ephemeral range; INVALID_CONFIG for a host address the host does not have.
 * `start` chooses where the search for an ephemeral block begins (an offset into the range).
 */
export function assignHostPorts(asks: readonly PortAsk[], facts: HostFacts, start = 0): (PortAsk & { readonly hostPort: PortRange })[] {
  const local = new Set(facts.localAddrs);
  const taken: HostBinding[] = [...facts.taken];
  const out: (PortAsk & { readonly hostPort: PortRange })[] = [];
  for (const ask of asks) {
    if (ask.hostIp !== undefined && !UNSPECIFIED.has(ask.hostIp) && !local.has(ask.hostIp)) {
      throw fail('INVALID_CONFIG', `host address ${ask.hostIp} is not an address of this host (publish on one of its addresses, or leave it out for all)`);
    }
    const now = { ...facts, taken };
    let hostPort = ask.hostPort;
    if (hostPort !== undefined) {
      const why = clash(ask, hostPort, now);
      if (why !== undefined) throw fail('ALREADY_EXISTS', `cannot publish ${hostText(ask.hostIp)}:${rangeText(hostPort)}/${ask.proto}: ${why}`);
    } else {
      const len = ask.containerPort.end - ask.containerPort.start;
      const from = ask.within ?? facts.ephemeral;
      const lo = from.start;
      const span = from.end - lo + 1 - len;
      for (let i = 0; i < span && hostPort === undefined; i++) {
        const s = lo + ((start + i) % span);
        const cand = { start: s as Port, end: (s + len) as Port };
        if (clash(ask, cand, now) === undefined) hostPort = cand;
      }
      if (hostPort === undefined) {
        const where = ask.within !== undefined ? `the range ${rangeText(from)}` : `the ephemeral range ${rangeText(from)} (net.ipv4.ip_local_port_range)`;
        throw fail(ask.within !== undefined ? 'ALREADY_EXISTS' : 'EXHAUSTED', `no free ${ask.proto} port${len > 0 ? ` block of ${len + 1}` : ''} in ${where} on ${hostText(ask.hostIp)}`);
      }
    }
    for (const family of familiesOf(ask.hostIp, facts.families)) {
      taken.push({ proto: ask.proto, ...(ask.hostIp !== undefined ? { hostIp: ask.hostIp } : {}), family, hostPort });
    }
    out.push({ ...ask, hostPort });
  }
  return out;
}
