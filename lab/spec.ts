/**
 * From a lab file's text to a LabSpec: YAML (the `yaml` package), the shape (lab/schema.ts), then
 * what the shape cannot say: references between nodes, networks and links, addresses, interface
 * names, names that must fit the kernel's 15 characters, commands split into argv. Pure. Every
 * error is INVALID_CONFIG whose message starts with the path at fault (`nodes.r2.ports[0]: ...`)
 * and whose `details.field` is that path; all problems are reported at once, one per line.
 *
 * The LabSpec says what must run, with a hash per object of everything that cannot change in
 * place: the plan (lab/plan.ts) compares those hashes with the ones recorded on what runs.
 */
import { createHash } from 'node:crypto';
import { parse as parseShell } from 'shell-quote';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import { addrFamily, parseIfName, parseIpAddr, parseMac, parsePrefix, parseSubnet } from '../core/net.js';
import type { CreateNetworkRequest, PortRequest } from '../cnm/controller.js';
import { parsePublish } from '../cnm/publish-spec.js';
import type { Impairment } from '../sys/api.js';
import { LabFileSchema, type LabFile, type LinkFile, type NodeFile } from './schema.js';
import { netemFields, parseImpairment, type ImpairInput } from './units.js';

export const DEFAULT_CMD = ['sleep', 'infinity'] as const;

export interface NetSpec {
  readonly key: string;
  /** The tsnet network's name: LAB-KEY. */
  readonly name: string;
  readonly request: Omit<CreateNetworkRequest, 'labels'>;
  readonly hash: string;
}

export interface AttachSpec {
  readonly network: string;
  readonly ip?: string;
  readonly ip6?: string;
  /** Given, or derived from the lab, node and network (stable across re-creation). */
  readonly mac: string;
  readonly aliases: readonly string[];
}

export interface NodeSpec {
  readonly key: string;
  /** The container's name: LAB-KEY. */
  readonly container: string;
  readonly hostname: string;
  readonly argv: readonly [string, ...string[]];
  readonly env: Readonly<Record<string, string>>;
  readonly ports: readonly PortRequest[];
  /** The ports as the file writes them (Docker's -p forms). */
  readonly publish: readonly string[];
  readonly sysctls: Readonly<Record<string, string>>;
  readonly exec: readonly { readonly argv: readonly [string, ...string[]]; readonly path: string }[];
  readonly networks: readonly AttachSpec[];
  readonly rootfs?: string;
  readonly workdir?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly hash: string;
}

export interface SwitchSpec {
  readonly key: string;
  readonly bridge: string;
  readonly mtu?: number;
  readonly hash: string;
}

export interface EndSpec {
  readonly node: string;
  readonly kind: 'linux' | 'bridge';
  readonly ifName: string;
  readonly addresses: readonly string[];
  /** Given, or derived from the lab, node and interface (stable across re-creation). */
  readonly mac: string;
}

export interface LinkSpec {
  /** Stable: from the lab's name and both endpoints. */
  readonly id: string;
  /** "r1:eth1 -- r2:eth1". */
  readonly label: string;
  readonly path: string;
  readonly ends: readonly [EndSpec, EndSpec];
  readonly mtu?: number;
  /** Applied on both ends; changed in place. */
  readonly impair?: Impairment;
  /** Everything but the impairment. */
  readonly hash: string;
}

export interface LabSpec {
  readonly name: string;
  readonly networks: readonly NetSpec[];
  readonly nodes: readonly NodeSpec[];
  readonly switches: readonly SwitchSpec[];
  readonly links: readonly LinkSpec[];
  /** Paths of the fields that need netem (delay, jitter, loss). */
  readonly netemFields: readonly string[];
}

/** The spec of a lab with nothing in it (what a new lab rolls back to). */
export const emptyLab = (name: string): LabSpec => ({ name, networks: [], nodes: [], switches: [], links: [], netemFields: [] });

/** `["nodes","r2","ports",0]` → `nodes.r2.ports[0]`. */
export function pathText(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out === '' ? '(file)' : out;
}

const hashOf = (v: unknown): string => createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);

/**
 * A node's MAC on a network or link, unless the file gives one: derived from the lab, node and
 * network (or link end), so a re-created node keeps its MACs and its neighbours' ARP caches stay
 * right (a router re-made with a new MAC is unreachable until they expire). Locally administered.
 */
const macFor = (what: string): string => `02:${(createHash('sha256').update(what).digest('hex').slice(0, 10).match(/../g) ?? []).join(':')}`;

function invalidAll(problems: readonly { path: string; message: string }[], source: string): TsnetError {
  const lines = problems.map((p) => `${p.path}: ${p.message}`);
  return new TsnetError('INVALID_CONFIG', problems.length === 1 ? `${source}: ${lines[0] ?? ''}` : `${source}: ${problems.length} problems:\n  ${lines.join('\n  ')}`, {
    details: { field: problems[0]?.path ?? '(file)', problems: lines },
  });
}

/** The YAML text as a validated file object (shape only). */
export function parseLabFile(text: string, source = 'lab file'): LabFile {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw invalidAll(doc.errors.map((e) => ({ path: `line ${e.linePos?.[0]?.line ?? '?'}`, message: (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '') })), source);
  }
  const raw: unknown = doc.toJS();
  const r = LabFileSchema.safeParse(raw);
  if (!r.success) throw invalidAll(r.error.issues.map((i) => ({ path: pathText(i.path), message: issueMessage(i) })), source);
  return r.data;
}

function issueMessage(i: z.core.$ZodIssue): string {
  if (i.code === 'unrecognized_keys') return `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
  if (i.code === 'invalid_union') return 'has the wrong shape (see lab/lab.schema.json)';
  if (i.code === 'invalid_key') return `invalid name: ${i.issues.map((x) => x.message).join('; ')}`;
  return i.message;
}

/** Splits a command like a shell would, without running one: operators are refused. */
function argvOf(raw: string | readonly string[], path: string, problems: { path: string; message: string }[]): [string, ...string[]] | undefined {
  if (Array.isArray(raw)) return raw.length > 0 ? [...raw] as [string, ...string[]] : undefined;
  const parts = parseShell(raw as string, (k) => `$${k}`);
  const out: string[] = [];
  for (const p of parts) {
    if (typeof p === 'string') out.push(p);
    else if ('op' in p && p.op === 'glob') out.push(p.pattern);
    else {
      problems.push({ path, message: `${'op' in p ? `shell operator ${JSON.stringify(p.op)}` : 'a comment'}: no shell runs it; write ["sh", "-c", ${JSON.stringify(raw)}]` });
      return undefined;
    }
  }
  if (out.length === 0) {
    problems.push({ path, message: 'is empty' });
    return undefined;
  }
  return out as [string, ...string[]];
}

const HOSTNAME = /^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/;
const toStr = (v: string | number | boolean): string => String(v);

/** The file as a LabSpec, or INVALID_CONFIG listing every problem with its path. */
export function normalizeLab(file: LabFile, source = 'lab file'): LabSpec {
  const problems: { path: string; message: string }[] = [];
  const check = <T>(path: string, fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      // A parser that names a deeper field (impair.rate) is more precise than the caller's path.
      const field = err instanceof TsnetError ? err.details['field'] : undefined;
      const at = typeof field === 'string' && field.startsWith(`${path}.`) ? field : path;
      problems.push({ path: at, message: (err instanceof Error ? err.message : String(err)).replace(/^[^:]*: /, '') });
      return undefined;
    }
  };
  const lab = file.name;
  const mtuOk = (mtu: number | undefined, path: string): void => {
    if (mtu !== undefined && (mtu < 68 || mtu > 65535)) problems.push({ path, message: `MTU must be from 68 to 65535 (got ${mtu})` });
  };

  const networks: NetSpec[] = Object.entries(file.networks ?? {}).map(([key, n]) => {
    const p = `networks.${key}`;
    if (n.subnet !== undefined) check(`${p}.subnet`, () => parseSubnet(n.subnet as string));
    if (n.gateway !== undefined) check(`${p}.gateway`, () => parseIpAddr(n.gateway as string));
    if (n['ip-range'] !== undefined) check(`${p}.ip-range`, () => parsePrefix(n['ip-range'] as string));
    if (n.subnet6 !== undefined) check(`${p}.subnet6`, () => parseSubnet(n.subnet6 as string));
    if (n.gateway6 !== undefined) check(`${p}.gateway6`, () => parseIpAddr(n.gateway6 as string));
    if (n.subnet === undefined && (n.gateway !== undefined || n['ip-range'] !== undefined)) problems.push({ path: `${p}.gateway`, message: 'a gateway or ip-range needs a subnet' });
    if (n.subnet6 === undefined && n.gateway6 !== undefined) problems.push({ path: `${p}.gateway6`, message: 'needs subnet6' });
    mtuOk(n.mtu, `${p}.mtu`);
    const subnets = [
      ...(n.subnet !== undefined ? [{ subnet: n.subnet, ...(n.gateway !== undefined ? { gateway: n.gateway } : {}), ...(n['ip-range'] !== undefined ? { ipRange: n['ip-range'] } : {}) }] : []),
      ...(n.subnet6 !== undefined ? [{ subnet: n.subnet6, ...(n.gateway6 !== undefined ? { gateway: n.gateway6 } : {}) }] : []),
    ];
    const options = { ...(n.options ?? {}), ...(n.mtu !== undefined ? { mtu: String(n.mtu) } : {}) };
    const request: Omit<CreateNetworkRequest, 'labels'> = {
      name: `${lab}-${key}`, driver: 'bridge', subnets, ipv6: n.ipv6 === true || n.subnet6 !== undefined, internal: n.internal === true,
      options, ...(n.dns === false ? { dnsEnabled: false } : {}),
    };
    return { key, name: `${lab}-${key}`, request, hash: hashOf(request) };
  });
  const netKeys = new Set(networks.map((n) => n.key));

  const d = file.defaults ?? {};
  const nodes: NodeSpec[] = [];
  const switches: SwitchSpec[] = [];
  const kinds = new Map<string, 'linux' | 'bridge'>();
  const ethCount = new Map<string, number>();
  for (const [key, n] of Object.entries(file.nodes)) {
    const p = `nodes.${key}`;
    const kind = n.kind ?? d.kind ?? 'linux';
    kinds.set(key, kind);
    if (kind === 'bridge') {
      for (const f of ['cmd', 'env', 'ports', 'sysctls', 'exec', 'networks', 'rootfs', 'workdir', 'hostname'] as const satisfies readonly (keyof NodeFile)[]) {
        if (n[f] !== undefined) problems.push({ path: `${p}.${f}`, message: 'a bridge node is a Linux bridge, not a container: it has no such field' });
      }
      const bridge = n.bridge ?? `${lab}-${key}`;
      if (bridge.length > 15) problems.push({ path: `${p}.bridge`, message: `the default bridge name ${JSON.stringify(bridge)} is longer than 15 characters: set ${p}.bridge` });
      else check(`${p}.bridge`, () => parseIfName(bridge));
      mtuOk(n.mtu, `${p}.mtu`);
      switches.push({ key, bridge, ...(n.mtu !== undefined ? { mtu: n.mtu } : {}), hash: hashOf({ bridge, mtu: n.mtu }) });
      continue;
    }
    for (const f of ['bridge', 'mtu'] as const) if (n[f] !== undefined) problems.push({ path: `${p}.${f}`, message: 'only a bridge node (kind: bridge) has this field' });
    const attach = (n.networks ?? d.networks ?? []).map((a, i): AttachSpec | undefined => {
      const ap = `${p}.networks[${i}]`;
      const o = typeof a === 'string' ? { network: a } : a;
      if (!netKeys.has(o.network)) {
        problems.push({ path: ap, message: `no network ${JSON.stringify(o.network)} in networks` });
        return undefined;
      }
      if (o.ipv4 !== undefined) check(`${ap}.ipv4`, () => { if (addrFamily(parseIpAddr(o.ipv4 as string)) !== 4) throw new Error('x: not an IPv4 address'); });
      if (o.ipv6 !== undefined) check(`${ap}.ipv6`, () => { if (addrFamily(parseIpAddr(o.ipv6 as string)) !== 6) throw new Error('x: not an IPv6 address'); });
      if (o.mac !== undefined) check(`${ap}.mac`, () => parseMac(o.mac as string));
      for (const [j, al] of (o.aliases ?? []).entries()) if (!HOSTNAME.test(al)) problems.push({ path: `${ap}.aliases[${j}]`, message: `${JSON.stringify(al)} is not a DNS label` });
      return {
        network: o.network, aliases: [key, ...(o.aliases ?? [])],
        ...(o.ipv4 !== undefined ? { ip: o.ipv4 } : {}), ...(o.ipv6 !== undefined ? { ip6: o.ipv6 } : {}), mac: o.mac?.toLowerCase() ?? macFor(`${lab}\n${key}\n${o.network}`),
      };
    }).filter((a): a is AttachSpec => a !== undefined);
    const seen = new Set<string>();
    for (const [i, a] of attach.entries()) {
      if (seen.has(a.network)) problems.push({ path: `${p}.networks[${i}]`, message: `joins network ${JSON.stringify(a.network)} twice` });
      seen.add(a.network);
    }
    ethCount.set(key, attach.length);
    const ports = (n.ports ?? []).map((raw, i) => check(`${p}.ports[${i}]`, () => parsePublish(raw))).filter((x): x is PortRequest => x !== undefined);
    if ((n.ports ?? []).length > 0 && attach.length === 0) problems.push({ path: `${p}.ports`, message: 'the node joins no network to publish ports on' });
    const argv = argvOf(n.cmd ?? d.cmd ?? [...DEFAULT_CMD], `${n.cmd !== undefined ? p : 'defaults'}.cmd`, problems) ?? [...DEFAULT_CMD];
    const env = Object.fromEntries(Object.entries({ ...(d.env ?? {}), ...(n.env ?? {}) }).map(([k, v]) => [k, toStr(v)]));
    const sysctls = Object.fromEntries(Object.entries({ ...(d.sysctls ?? {}), ...(n.sysctls ?? {}) }).map(([k, v]) => [k, String(v)]));
    for (const [k, v] of Object.entries(sysctls)) if (!/^[A-Za-z0-9_.:-]+$/.test(v)) problems.push({ path: `${p}.sysctls.${k}`, message: `${JSON.stringify(v)} is not a plain value` });
    const execList = n.exec ?? d.exec ?? [];
    const execBase = n.exec !== undefined ? `${p}.exec` : 'defaults.exec';
    const exec = execList.map((raw, i) => ({ argv: argvOf(raw, `${execBase}[${i}]`, problems), path: `${execBase}[${i}]` }))
      .filter((x): x is { argv: [string, ...string[]]; path: string } => x.argv !== undefined);
    const hostname = n.hostname ?? key.replaceAll('_', '-');
    if (!HOSTNAME.test(hostname)) problems.push({ path: `${p}.hostname`, message: `${JSON.stringify(hostname)} is not a valid host name` });
    const rootfs = n.rootfs ?? d.rootfs;
    const workdir = n.workdir ?? d.workdir;
    const core = {
      argv, env, ports, sysctls, exec: exec.map((e) => e.argv), networks: attach, hostname,
      ...(rootfs !== undefined ? { rootfs } : {}), ...(workdir !== undefined ? { workdir } : {}), labels: n.labels ?? {},
    };
    nodes.push({ key, container: `${lab}-${key}`, ...core, publish: [...(n.ports ?? [])], exec, hash: hashOf(core) });
  }

  const ends = new Map<string, string>();
  const links: LinkSpec[] = (file.links ?? []).map((l: LinkFile, i): LinkSpec | undefined => {
    const p = `links[${i}]`;
    const parsed = l.endpoints.map((e, j): EndSpec | undefined => {
      const ep = `${p}.endpoints[${j}]`;
      const o = typeof e === 'string' ? { node: e.slice(0, e.indexOf(':')), interface: e.slice(e.indexOf(':') + 1) } : e;
      const kind = kinds.get(o.node);
      if (kind === undefined) {
        problems.push({ path: ep, message: `no node ${JSON.stringify(o.node)} in nodes` });
        return undefined;
      }
      const ifp = typeof e === 'string' ? ep : `${ep}.interface`;
      if (check(ifp, () => parseIfName(o.interface)) === undefined) return undefined;
      const m = /^eth(\d+)$/.exec(o.interface);
      if (kind === 'linux' && m && Number(m[1]) < (ethCount.get(o.node) ?? 0)) {
        problems.push({ path: ifp, message: `${o.node}'s ${o.interface} is its interface on network ${JSON.stringify([...(file.nodes[o.node]?.networks ?? file.defaults?.networks ?? [])].map((a) => (typeof a === 'string' ? a : a.network))[Number(m[1])])}` });
      }
      const key = `${o.node}:${o.interface}`;
      if (ends.has(key)) problems.push({ path: ifp, message: `${key} is already an endpoint of ${ends.get(key) ?? ''}` });
      ends.set(key, p);
      const ext: { ipv4?: string | undefined; ipv6?: string | undefined; mac?: string | undefined } = typeof e === 'string' ? {} : e;
      const addresses: string[] = [];
      if (kind === 'bridge' && (ext.ipv4 !== undefined || ext.ipv6 !== undefined || ext.mac !== undefined)) {
        problems.push({ path: ep, message: 'an endpoint on a bridge node is a bridge port: no ipv4, ipv6 or mac' });
      }
      if (ext.ipv4 !== undefined) {
        const pr = check(`${ep}.ipv4`, () => parsePrefix(ext.ipv4 as string));
        if (pr !== undefined && (addrFamily(pr) !== 4 || !(ext.ipv4 as string).includes('/'))) problems.push({ path: `${ep}.ipv4`, message: 'expected an IPv4 address with its prefix length, e.g. 10.0.12.1/30' });
        else if (pr !== undefined) addresses.push(pr);
      }
      if (ext.ipv6 !== undefined) {
        const pr = check(`${ep}.ipv6`, () => parsePrefix(ext.ipv6 as string));
        if (pr !== undefined && (addrFamily(pr) !== 6 || !(ext.ipv6 as string).includes('/'))) problems.push({ path: `${ep}.ipv6`, message: 'expected an IPv6 address with its prefix length, e.g. fd00:12::1/64' });
        else if (pr !== undefined) addresses.push(pr);
      }
      if (ext.mac !== undefined) check(`${ep}.mac`, () => parseMac(ext.mac as string));
      return { node: o.node, kind, ifName: o.interface, addresses, mac: ext.mac?.toLowerCase() ?? macFor(`${lab}\n${o.node}\n${o.interface}`) };
    });
    const [a, b] = parsed;
    mtuOk(l.mtu, `${p}.mtu`);
    const impair = l.impair !== undefined ? check(`${p}.impair`, () => parseImpairment(l.impair as ImpairInput, `${p}.impair`)) : undefined;
    if (!a || !b) return undefined;
    if (a.kind === 'bridge' && b.kind === 'bridge' && a.node === b.node) problems.push({ path: `${p}.endpoints`, message: 'both ends are on the same bridge' });
    const core = { ends: [a, b], mtu: l.mtu };
    const id = createHash('sha256').update(`${lab}\n${a.node}:${a.ifName}\n${b.node}:${b.ifName}`).digest('hex').slice(0, 24);
    return {
      id, label: `${a.node}:${a.ifName} -- ${b.node}:${b.ifName}`, path: p, ends: [a, b], ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
      ...(impair !== undefined && Object.keys(impair).length > 0 ? { impair } : {}), hash: hashOf(core),
    };
  }).filter((x): x is LinkSpec => x !== undefined);

  const netem = (file.links ?? []).flatMap((l, i) => (l.impair ? netemFields(l.impair, `links[${i}].impair`) : []));
  if (problems.length > 0) throw invalidAll(problems, source);
  return { name: lab, networks, nodes, switches, links, netemFields: netem };
}

/** Text → LabSpec: YAML, shape, meaning. */
export function parseLab(text: string, source = 'lab file'): LabSpec {
  return normalizeLab(parseLabFile(text, source), source);
}
