/**
 * Pure helpers shared by the netlink implementations: re-validation of every op before anything
 * touches the kernel (the branded types are trusted by design, but a name with a space or a newline
 * must never reach an `ip -batch` stream, and a batch with one malformed op must apply nothing),
 * and one-line descriptions for error messages.
 */
import { TsnetError } from '../../core/errors.js';
import {
  addrFamily, MACVLAN_MODES, parseIfName, parseIpAddr, parseMac, parsePrefix, prefixNetwork,
  type IfName, type IpAddr, type MacAddr, type NetnsRef, type Prefix,
} from '../../core/net.js';
import type { LinkChanges, NetlinkOp, RouteSpec } from './api.js';

export const MIN_MTU = 68;
export const MAX_MTU = 65_535;
const MAX_U32 = 0xffff_ffff;
/** Namespace paths go into `ip -batch` lines, which ip splits on blanks and cuts at '#'. */
const SAFE_PATH = /^\/[A-Za-z0-9_.\/@:+-]*$/;

function invalid(field: string, value: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(value)}: ${why}`, {
    details: { field, value },
  });
}

export function checkIfName(raw: unknown, field: string): IfName {
  if (typeof raw !== 'string') throw invalid(field, raw, 'not a string');
  return parseIfName(raw, field);
}

/** An address with prefix length, canonical. Host bits may be set. */
export function checkPrefix(raw: unknown, field: string): Prefix {
  if (typeof raw !== 'string') throw invalid(field, raw, 'not a string');
  return parsePrefix(raw, field);
}

export function checkIpAddr(raw: unknown, field: string): IpAddr {
  if (typeof raw !== 'string') throw invalid(field, raw, 'not a string');
  return parseIpAddr(raw, field);
}

export function checkMac(raw: unknown, field: string): MacAddr {
  if (typeof raw !== 'string') throw invalid(field, raw, 'not a string');
  return parseMac(raw, field);
}

/** An interface alias goes into an `ip -batch` line: no blanks, quotes or '#'. */
const ALIAS = /^[A-Za-z0-9_.:\/@+=-]{1,255}$/;
export function checkAlias(raw: unknown, field: string): string {
  if (typeof raw !== 'string' || !ALIAS.test(raw)) throw invalid(field, raw, "must be 1-255 of letters, digits and _ . : / @ + = -");
  return raw;
}

export function checkMtu(raw: unknown, field: string): number {
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < MIN_MTU || raw > MAX_MTU) {
    throw invalid(field, raw, `must be an integer ${MIN_MTU}-${MAX_MTU}`);
  }
  return raw;
}

export function checkMetric(raw: unknown, field: string): number {
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 0 || raw > MAX_U32) {
    throw invalid(field, raw, 'must be an integer 0-4294967295');
  }
  return raw;
}

export function checkNetnsRef(raw: unknown, field: string): NetnsRef {
  const ns = raw as NetnsRef | undefined;
  if (ns?.kind === 'host') return ns;
  if (ns?.kind === 'path' && typeof ns.path === 'string' && SAFE_PATH.test(ns.path) && !ns.path.split('/').includes('..')) {
    return ns;
  }
  const value = ns?.kind === 'path' ? ns.path : raw;
  throw invalid(field, value, "must be { kind: 'host' } or an absolute namespace path of letters, digits and _ . / @ : + -");
}

/** `forRemove`: a route to delete may be named by its destination alone. */
export function checkRoute(raw: RouteSpec, field: string, forRemove = false): RouteSpec {
  if (typeof raw !== 'object' || raw === null) throw invalid(field, raw, 'not an object');
  const dst = checkPrefix(raw.dst, `${field}.dst`);
  const net = prefixNetwork(dst);
  if (net !== dst) throw invalid(`${field}.dst`, raw.dst, `host bits set; did you mean ${net}?`);
  const fam = addrFamily(dst);
  const out: { -readonly [K in keyof RouteSpec]: RouteSpec[K] } = { dst };
  if (raw.via !== undefined) {
    out.via = checkIpAddr(raw.via, `${field}.via`);
    if (addrFamily(out.via) !== fam) throw invalid(`${field}.via`, raw.via, `not an IPv${fam} address like the destination`);
  }
  if (raw.dev !== undefined) out.dev = checkIfName(raw.dev, `${field}.dev`);
  if (raw.metric !== undefined) out.metric = checkMetric(raw.metric, `${field}.metric`);
  if (raw.src !== undefined) {
    out.src = checkIpAddr(raw.src, `${field}.src`);
    if (addrFamily(out.src) !== fam) throw invalid(`${field}.src`, raw.src, `not an IPv${fam} address like the destination`);
  }
  if (!forRemove && out.via === undefined && out.dev === undefined) throw invalid(field, raw, 'a route needs a gateway (via) or a device (dev)');
  return out;
}

function checkChanges(raw: LinkChanges, field: string): LinkChanges {
  if (typeof raw !== 'object' || raw === null) throw invalid(field, raw, 'not an object');
  const out: { -readonly [K in keyof LinkChanges]: LinkChanges[K] } = {};
  for (const key of Object.keys(raw)) {
    if (!['up', 'mtu', 'mac', 'master', 'name', 'isolated', 'hairpin', 'alias'].includes(key)) throw invalid(`${field}.${key}`, (raw as Record<string, unknown>)[key], 'unknown link attribute');
  }
  if (raw.up !== undefined) {
    if (typeof raw.up !== 'boolean') throw invalid(`${field}.up`, raw.up, 'must be true or false');
    out.up = raw.up;
  }
  if (raw.mtu !== undefined) out.mtu = checkMtu(raw.mtu, `${field}.mtu`);
  if (raw.mac !== undefined) out.mac = checkMac(raw.mac, `${field}.mac`);
  if (raw.master !== undefined) out.master = raw.master === null ? null : checkIfName(raw.master, `${field}.master`);
  if (raw.name !== undefined) out.name = checkIfName(raw.name, `${field}.name`);
  if (raw.alias !== undefined) out.alias = checkAlias(raw.alias, `${field}.alias`);
  if (raw.isolated !== undefined) {
    if (typeof raw.isolated !== 'boolean') throw invalid(`${field}.isolated`, raw.isolated, 'must be true or false');
    out.isolated = raw.isolated;
  }
  if (raw.hairpin !== undefined) {
    if (typeof raw.hairpin !== 'boolean') throw invalid(`${field}.hairpin`, raw.hairpin, 'must be true or false');
    out.hairpin = raw.hairpin;
  }
  return out;
}

/**
 * Re-checks one op and returns it with every value in canonical form. `where` prefixes field
 * names ("ops[2]."), so the error says which op and which field is wrong.
 */
export function validateOp(op: NetlinkOp, where = ''): NetlinkOp {
  if (typeof op !== 'object' || op === null) throw invalid(`${where}op`, op, 'not an object');
  const f = (name: string): string => `${where}${name}`;
  switch (op.op) {
    case 'addBridge':
    case 'ensureBridge':
      return {
        op: op.op,
        name: checkIfName(op.name, f('name')),
        ...(op.mtu !== undefined ? { mtu: checkMtu(op.mtu, f('mtu')) } : {}),
        ...(op.mac !== undefined ? { mac: checkMac(op.mac, f('mac')) } : {}),
      };
    case 'addVeth':
      return {
        op: op.op,
        name: checkIfName(op.name, f('name')),
        peer: checkIfName(op.peer, f('peer')),
        ...(op.peerNetns !== undefined ? { peerNetns: checkNetnsRef(op.peerNetns, f('peerNetns')) } : {}),
        ...(op.mtu !== undefined ? { mtu: checkMtu(op.mtu, f('mtu')) } : {}),
        ...(op.mac !== undefined ? { mac: checkMac(op.mac, f('mac')) } : {}),
        ...(op.peerMac !== undefined ? { peerMac: checkMac(op.peerMac, f('peerMac')) } : {}),
        ...(op.alias !== undefined ? { alias: checkAlias(op.alias, f('alias')) } : {}),
      };
    case 'addMacvlan':
      if (!(MACVLAN_MODES as readonly string[]).includes(op.mode)) throw invalid(f('mode'), op.mode, `must be one of ${MACVLAN_MODES.join(', ')}`);
      return {
        op: op.op,
        name: checkIfName(op.name, f('name')),
        parent: checkIfName(op.parent, f('parent')),
        mode: op.mode,
        ...(op.netns !== undefined ? { netns: checkNetnsRef(op.netns, f('netns')) } : {}),
        ...(op.mtu !== undefined ? { mtu: checkMtu(op.mtu, f('mtu')) } : {}),
        ...(op.mac !== undefined ? { mac: checkMac(op.mac, f('mac')) } : {}),
      };
    case 'addVxlan':
      if (typeof op.vni !== 'number' || !Number.isInteger(op.vni) || op.vni < 1 || op.vni > 0xff_ffff) throw invalid(f('vni'), op.vni, 'must be an integer 1-16777215');
      if (op.port !== undefined && (typeof op.port !== 'number' || !Number.isInteger(op.port) || op.port < 1 || op.port > 65_535)) throw invalid(f('port'), op.port, 'must be an integer 1-65535');
      return {
        op: op.op,
        name: checkIfName(op.name, f('name')),
        vni: op.vni,
        local: checkIpAddr(op.local, f('local')),
        ...(op.port !== undefined ? { port: op.port } : {}),
        ...(op.dev !== undefined ? { dev: checkIfName(op.dev, f('dev')) } : {}),
        ...(op.mtu !== undefined ? { mtu: checkMtu(op.mtu, f('mtu')) } : {}),
        ...(op.mac !== undefined ? { mac: checkMac(op.mac, f('mac')) } : {}),
      };
    case 'ensureNeigh':
      return { op: op.op, dev: checkIfName(op.dev, f('dev')), ip: checkIpAddr(op.ip, f('ip')), mac: checkMac(op.mac, f('mac')) };
    case 'removeNeigh':
      return { op: op.op, dev: checkIfName(op.dev, f('dev')), ip: checkIpAddr(op.ip, f('ip')) };
    case 'ensureFdb':
    case 'removeFdb':
      return { op: op.op, dev: checkIfName(op.dev, f('dev')), mac: checkMac(op.mac, f('mac')), dst: checkIpAddr(op.dst, f('dst')) };
    case 'removeLink':
      return { op: op.op, name: checkIfName(op.name, f('name')) };
    case 'setLink':
      return { op: op.op, name: checkIfName(op.name, f('name')), changes: checkChanges(op.changes, f('changes')) };
    case 'addAddr':
    case 'ensureAddr': {
      if (op.nodad !== undefined && typeof op.nodad !== 'boolean') throw invalid(f('nodad'), op.nodad, 'must be true or false');
      return {
        op: op.op,
        dev: checkIfName(op.dev, f('dev')),
        prefix: checkPrefix(op.prefix, f('prefix')),
        ...(op.nodad !== undefined ? { nodad: op.nodad } : {}),
      };
    }
    case 'removeAddr':
      return { op: op.op, dev: checkIfName(op.dev, f('dev')), prefix: checkPrefix(op.prefix, f('prefix')) };
    case 'addRoute':
    case 'ensureRoute':
    case 'removeRoute':
      return { op: op.op, route: checkRoute(op.route, f('route'), op.op === 'removeRoute') };
  }
  // Not reachable for typed callers; a JS caller may pass anything.
  throw invalid(`${where}op`, (op as { op?: unknown }).op, 'unknown operation');
}

/** Validates every op first, so that a batch with one bad op applies nothing. */
export function validateOps(ops: readonly NetlinkOp[]): NetlinkOp[] {
  if (!Array.isArray(ops)) throw invalid('ops', ops, 'not an array');
  return ops.map((op, i) => validateOp(op, ops.length === 1 ? '' : `ops[${i}].`));
}

export function describeRoute(r: RouteSpec): string {
  return [r.dst, r.via !== undefined ? `via ${r.via}` : '', r.dev !== undefined ? `dev ${r.dev}` : '', r.metric !== undefined ? `metric ${r.metric}` : '']
    .filter(Boolean)
    .join(' ');
}

/** "add veth vh0 peer eth0", for error messages. */
export function describeOp(op: NetlinkOp): string {
  switch (op.op) {
    case 'addBridge':
      return `add bridge ${op.name}`;
    case 'ensureBridge':
      return `ensure bridge ${op.name}`;
    case 'addVeth':
      return `add veth ${op.name} peer ${op.peer}`;
    case 'addMacvlan':
      return `add macvlan ${op.name} on ${op.parent}`;
    case 'addVxlan':
      return `add vxlan ${op.name} vni ${op.vni}`;
    case 'ensureNeigh':
      return `ensure neighbour ${op.ip} lladdr ${op.mac} dev ${op.dev}`;
    case 'removeNeigh':
      return `remove neighbour ${op.ip} dev ${op.dev}`;
    case 'ensureFdb':
      return `ensure fdb ${op.mac} dst ${op.dst} dev ${op.dev}`;
    case 'removeFdb':
      return `remove fdb ${op.mac} dst ${op.dst} dev ${op.dev}`;
    case 'removeLink':
      return `remove link ${op.name}`;
    case 'setLink':
      return `set link ${op.name}`;
    case 'addAddr':
      return `add address ${op.prefix} dev ${op.dev}`;
    case 'ensureAddr':
      return `ensure address ${op.prefix} dev ${op.dev}`;
    case 'removeAddr':
      return `remove address ${op.prefix} dev ${op.dev}`;
    case 'addRoute':
      return `add route ${describeRoute(op.route)}`;
    case 'ensureRoute':
      return `ensure route ${describeRoute(op.route)}`;
    case 'removeRoute':
      return `remove route ${describeRoute(op.route)}`;
  }
}

/** FDB ops run through iproute2's `bridge` tool, not `ip`. */
export function isFdbOp(op: NetlinkOp): op is Extract<NetlinkOp, { op: 'ensureFdb' | 'removeFdb' }> {
  return op.op === 'ensureFdb' || op.op === 'removeFdb';
}

/** Removes succeed when their target is already gone. */
export function isRemove(op: NetlinkOp): boolean {
  return op.op === 'removeLink' || op.op === 'removeAddr' || op.op === 'removeRoute' || op.op === 'removeNeigh' || op.op === 'removeFdb';
}
