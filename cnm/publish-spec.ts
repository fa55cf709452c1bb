/**
 * Published ports in Docker's `-p/--publish` forms: `HOSTPORT:CPORT`, `IP:HOSTPORT:CPORT`,
 * `[IPv6]:HOSTPORT:CPORT`, ranges `8000-8100:8000-8100`, ephemeral host ports `CPORT`, `:CPORT`,
 * `IP::CPORT`, and `8000-8100:80` (one free port of the host range for container port 80, as Docker
 * does), each with `/tcp`, `/udp` or `/sctp`; and `--expose`. Pure; shared by the CLI's flags and
 * the lab file's `ports`.
 */
import { TsnetError } from '../core/errors.js';
import { parseIpAddr, parsePort, parseProto, type IpAddr, type Port, type Proto } from '../core/net.js';

export interface PublishSpec {
  readonly proto: Proto;
  readonly hostIp?: IpAddr;
  /** Undefined: the controller picks free host ports (from `within`, else the ephemeral range). */
  readonly hostPort?: { readonly start: Port; readonly end: Port };
  readonly within?: { readonly start: Port; readonly end: Port };
  readonly containerPort: { readonly start: Port; readonly end: Port };
}

function bad(raw: string, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `publish: invalid value ${JSON.stringify(raw)}: ${why}`, { details: { field: 'publish', value: raw } });
}

function range(raw: string, whole: string, what: string): { start: Port; end: Port } {
  const m = /^(\d+)(?:-(\d+))?$/.exec(raw);
  if (!m) throw bad(whole, `${what} ${JSON.stringify(raw)} is not a port or a range START-END`);
  const port = (s: string): Port => {
    try {
      return parsePort(s, 'publish');
    } catch {
      throw bad(whole, `${what} ${s} is outside 1-65535`);
    }
  };
  const start = port(m[1] ?? '');
  const end = m[2] === undefined ? start : port(m[2]);
  if (end < start) throw bad(whole, `${what} range ${raw} is reversed`);
  return { start, end };
}

export function parsePublish(raw: string): PublishSpec {
  let rest = raw;
  let proto: Proto = 'tcp';
  const slash = rest.lastIndexOf('/');
  if (slash >= 0) {
    try {
      proto = parseProto(rest.slice(slash + 1), 'publish');
    } catch {
      throw bad(raw, `unknown protocol ${JSON.stringify(rest.slice(slash + 1))} (tcp, udp or sctp)`);
    }
    rest = rest.slice(0, slash);
  }
  let hostIp: IpAddr | undefined;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0 || rest[close + 1] !== ':') throw bad(raw, 'an IPv6 host address is written [ADDR]:HOSTPORT:CPORT');
    hostIp = ip(rest.slice(1, close), raw);
    rest = rest.slice(close + 2);
  }
  const parts = rest.split(':');
  if (hostIp === undefined && parts.length === 3) {
    hostIp = ip(parts[0] ?? '', raw);
    parts.shift();
  }
  if (parts.length === 1) parts.unshift('');
  if (parts.length !== 2) throw bad(raw, 'expected [IP:][HOSTPORT]:CPORT[/PROTO] or CPORT[/PROTO]');
  const containerPort = range(parts[1] ?? '', raw, 'container port');
  const base = { proto, ...(hostIp !== undefined ? { hostIp } : {}) };
  if (parts[0] === '') return { ...base, containerPort };
  const hostPort = range(parts[0] ?? '', raw, 'host port');
  const hostLen = hostPort.end - hostPort.start;
  const ctrLen = containerPort.end - containerPort.start;
  // One container port, a host range: any one free port of that range.
  if (ctrLen === 0 && hostLen > 0) return { ...base, within: hostPort, containerPort };
  if (ctrLen !== hostLen) throw bad(raw, `the host range has ${hostLen + 1} ports and the container range ${ctrLen + 1}: they must be equal, or the container side a single port`);
  return { ...base, hostPort, containerPort };
}

/** `--expose PORT[-END][/PROTO]`: ports `-P` publishes on ephemeral host ports. */
export function parseExpose(raw: string): PublishSpec {
  const m = /^([^/]+)(?:\/(.*))?$/.exec(raw);
  let proto: Proto = 'tcp';
  if (m?.[2] !== undefined) {
    try {
      proto = parseProto(m[2], 'expose');
    } catch {
      throw new TsnetError('INVALID_CONFIG', `expose: invalid value ${JSON.stringify(raw)}: unknown protocol ${JSON.stringify(m[2])} (tcp, udp or sctp)`, { details: { field: 'expose', value: raw } });
    }
  }
  try {
    return { proto, containerPort: range(m?.[1] ?? '', raw, 'port') };
  } catch (err) {
    throw new TsnetError('INVALID_CONFIG', (err as Error).message.replace(/^publish:/, 'expose:'), { details: { field: 'expose', value: raw } });
  }
}

function ip(s: string, raw: string): IpAddr {
  try {
    return parseIpAddr(s, 'publish');
  } catch {
    throw bad(raw, `${JSON.stringify(s)} is not an IP address`);
  }
}
