/**
 * The iptables backend, for hosts that standardise on iptables. Docker-compatible layout, per
 * family (iptables and ip6tables), with the owner name upper-cased as chain prefix (TSNET):
 *
 *   filter FORWARD     -j TSNET-USER (first; created if absent, never flushed or edited by tsnet)
 *                      -j TSNET-FORWARD (second)
 *   filter TSNET-FORWARD   established/related ACCEPT, -j TSNET-INTERNAL, -j TSNET-FWD-IN,
 *                          -j TSNET-FWD-OUT: a verdict for every packet in or out of a tsnet bridge
 *   filter TSNET-INTERNAL  per internal network, `-i BRIDGE ! -o BRIDGE` DROP: first, so nothing
 *                          leaves an internal bridge, not even DNATed to another network's port
 *   filter TSNET-FWD-IN    per network, `-o BRIDGE`: same bridge (icc), DNATed ACCEPT, else DROP
 *   filter TSNET-FWD-OUT   per network, `-i BRIDGE`: ACCEPT (egress)
 *   filter DOCKER-USER     where Docker's FORWARD policy drops: per network `-i/-o BRIDGE -j
 *                          TSNET-FORWARD` (host-chains.ts), since Docker puts its user chain first
 *   nat PREROUTING/OUTPUT  -m addrtype --dst-type LOCAL -j TSNET-DNAT
 *   nat TSNET-DNAT         per mapping DNAT (a range is ONE rule, shifted ranges use the DNAT
 *                          port offset `ip:9000-9100/8000`)
 *   nat POSTROUTING        -j TSNET-POSTROUTING (first; masquerade, hairpin, 127.0.0.0/8)
 *   raw PREROUTING         -j TSNET-PREROUTING (drop packets to loopback not from lo)
 *
 * Every rule tsnet writes carries `-m comment --comment OWNER`: "tsnet" for the skeleton,
 * "tsnet:net:<id>", "tsnet:ep:<id>". Each call reads the kernel once (`iptables-save`) and then
 * applies everything in one `iptables-restore --noflush` per family. Chains are created with
 * `-N` (never a `:CHAIN` line, which would flush an existing chain under --noflush); a concurrent
 * creator makes the batch fail as a whole ("Chain already exists"), and the call re-reads and
 * retries. Rules are removed with `-D` + the exact spec read back from the kernel.
 */
import { isCode, TsnetError, wrap, type ErrorCode } from '../../core/errors.js';
import { nullLogger, type Logger } from '../../core/log.js';
import {
  addrFamily,
  netnsLabel,
  parseIpAddr,
  prefixesOverlap,
  type EndpointId,
  type Family,
  type IfName,
  type IpAddr,
  type NetworkId,
  type Port,
  type Prefix,
} from '../../core/net.js';
import { execDetails, inNetns, run } from '../exec.js';
import type { EndpointPorts, Firewall, FirewallCallOptions, FirewallDeps, FirewallExec, FirewallListing, NetworkPolicy } from './api.js';
import {
  checkFirewallName,
  conflictError,
  indexAtoms,
  dnatAtoms,
  dnatShape,
  planBase,
  planNetwork,
  preparePorts,
  validateNetworkPolicy,
  type BaseRule,
  type DnatRule,
  type EndpointNatRule,
  type NetworkRule,
} from './plan.js';
import { createFirewalld } from './firewalld.js';
import { blockedIn, hostForward, letThroughFix, wantedLetThrough } from './host-chains.js';

const MAX_ATTEMPTS = 6;

export type IptTable = 'raw' | 'filter' | 'nat';
const TABLE_ORDER = ['raw', 'filter', 'nat'] as const satisfies readonly IptTable[];

/** A rule: table, chain and the spec tokens after `-A CHAIN`, in iptables-save's canonical order. */
export interface IptRule {
  readonly table: IptTable;
  readonly chain: string;
  readonly spec: readonly string[];
}

export interface IptNames {
  readonly comment: string;
  readonly user: string;
  readonly forward: string;
  readonly fwdIn: string;
  readonly fwdOut: string;
  readonly internal: string;
  readonly dnat: string;
  readonly post: string;
  readonly raw: string;
}

export function iptNames(name: string): IptNames {
  const P = name.toUpperCase();
  return {
    comment: name,
    user: `${P}-USER`,
    forward: `${P}-FORWARD`,
    fwdIn: `${P}-FWD-IN`,
    fwdOut: `${P}-FWD-OUT`,
    internal: `${P}-INTERNAL`,
    dnat: `${P}-DNAT`,
    post: `${P}-POSTROUTING`,
    raw: `${P}-PREROUTING`,
  };
}

const netComment = (n: IptNames, id: NetworkId): string => `${n.comment}:net:${id}`;
const epComment = (n: IptNames, id: EndpointId): string => `${n.comment}:ep:${id}`;
const comment = (c: string): string[] => ['-m', 'comment', '--comment', c];
const VERDICT = { accept: 'ACCEPT', drop: 'DROP' } as const;

/** Chains tsnet owns in each table (the user chain is created by tsnet but owned by the user). */
function ownChains(n: IptNames): readonly (readonly [IptTable, string])[] {
  return [
    ['filter', n.forward],
    ['filter', n.fwdIn],
    ['filter', n.fwdOut],
    ['filter', n.internal],
    ['nat', n.dnat],
    ['nat', n.post],
    ['raw', n.raw],
  ];
}

// ---------------------------------------------------------------------------------------------
// rules (pure; golden-tested)

function baseRules(n: IptNames, family: Family, r: BaseRule): IptRule[] {
  switch (r.kind) {
    case 'forward-established':
      return [{ table: 'filter', chain: n.forward, spec: ['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...comment(n.comment), '-j', 'ACCEPT'] }];
    case 'loopback-guard':
      if (r.family !== family) return [];
      return [{ table: 'raw', chain: n.raw, spec: ['-d', family === 4 ? '127.0.0.0/8' : '::1/128', '!', '-i', 'lo', ...comment(n.comment), '-j', 'DROP'] }];
  }
}

/** The rules inside tsnet's own skeleton chains, in order. */
export function skeletonChainRules(n: IptNames, family: Family): IptRule[] {
  const base = planBase();
  return [
    ...base.filter((r) => r.kind === 'forward-established').flatMap((r) => baseRules(n, family, r)),
    { table: 'filter', chain: n.forward, spec: [...comment(n.comment), '-j', n.internal] },
    { table: 'filter', chain: n.forward, spec: [...comment(n.comment), '-j', n.fwdIn] },
    { table: 'filter', chain: n.forward, spec: [...comment(n.comment), '-j', n.fwdOut] },
    ...base.filter((r) => r.kind === 'loopback-guard').flatMap((r) => baseRules(n, family, r)),
  ];
}

/**
 * The jumps from built-in chains. The two FORWARD jumps must be first, user chain first. IPv6
 * OUTPUT skips ::1: Linux cannot route a packet from ::1 out of `lo` (there is no route_localnet
 * for IPv6), so a DNAT'd ::1 connection would hang instead of being refused.
 */
export function builtinJumps(n: IptNames, family: Family): { readonly forward: readonly IptRule[]; readonly other: readonly IptRule[] } {
  return {
    forward: [
      { table: 'filter', chain: 'FORWARD', spec: [...comment(n.comment), '-j', n.user] },
      { table: 'filter', chain: 'FORWARD', spec: [...comment(n.comment), '-j', n.forward] },
    ],
    other: [
      { table: 'nat', chain: 'PREROUTING', spec: ['-m', 'addrtype', '--dst-type', 'LOCAL', ...comment(n.comment), '-j', n.dnat] },
      { table: 'nat', chain: 'OUTPUT', spec: [...(family === 6 ? ['!', '-d', '::1/128'] : []), '-m', 'addrtype', '--dst-type', 'LOCAL', ...comment(n.comment), '-j', n.dnat] },
      { table: 'nat', chain: 'POSTROUTING', spec: [...comment(n.comment), '-j', n.post] },
      { table: 'raw', chain: 'PREROUTING', spec: [...comment(n.comment), '-j', n.raw] },
    ],
  };
}

/** A network rule as iptables rules of `family` (forwarding rules exist in both families). */
export function networkRuleToIpt(n: IptNames, family: Family, r: NetworkRule): IptRule[] {
  const c = comment(netComment(n, r.owner));
  switch (r.kind) {
    case 'forward-in': {
      const match =
        r.match === 'same-bridge' ? ['-i', r.bridge, '-o', r.bridge] : r.match === 'published' ? ['-o', r.bridge, '-m', 'conntrack', '--ctstate', 'DNAT'] : ['-o', r.bridge];
      return [{ table: 'filter', chain: n.fwdIn, spec: [...match, ...c, '-j', VERDICT[r.verdict]] }];
    }
    case 'forward-out':
      return r.verdict === 'drop'
        ? [{ table: 'filter', chain: n.internal, spec: ['-i', r.bridge, '!', '-o', r.bridge, ...c, '-j', 'DROP'] }]
        : [{ table: 'filter', chain: n.fwdOut, spec: ['-i', r.bridge, ...c, '-j', 'ACCEPT'] }];

    case 'masquerade':
      return r.family !== family ? [] : [{ table: 'nat', chain: n.post, spec: ['-s', r.from, '!', '-o', r.notOut, ...c, '-j', 'MASQUERADE'] }];
    case 'masquerade-hairpin':
      return r.family !== family ? [] : [{ table: 'nat', chain: n.post, spec: ['-s', r.from, '-o', r.out, '-m', 'conntrack', '--ctstate', 'DNAT', ...c, '-j', 'MASQUERADE'] }];
    case 'masquerade-loopback':
      return family !== 4 ? [] : [{ table: 'nat', chain: n.post, spec: ['-s', '127.0.0.0/8', '-o', r.out, ...c, '-j', 'MASQUERADE'] }];
  }
}

/** An endpoint's own masquerade (foreign bridge), after the networks' rules in TSNET-POSTROUTING. */
export function endpointNatToIpt(n: IptNames, r: EndpointNatRule): IptRule {
  return { table: 'nat', chain: n.post, spec: ['-s', r.from, '-d', hostAddr(r.to), '-m', 'conntrack', '--ctstate', 'DNAT', ...comment(epComment(n, r.owner)), '-j', 'MASQUERADE'] };
}

function hostAddr(ip: IpAddr): string {
  return `${ip}/${addrFamily(ip) === 4 ? 32 : 128}`;
}

function destination(r: DnatRule): string {
  const ip = r.family === 6 ? `[${r.to}]` : r.to;
  switch (dnatShape(r)) {
    case 'port':
    case 'range-to-port':
      return `${ip}:${r.toPorts.start}`;
    case 'range':
      return `${ip}:${r.toPorts.start}-${r.toPorts.end}`;
    case 'shifted':
      return `${ip}:${r.toPorts.start}-${r.toPorts.end}/${r.hostPorts.start}`;
  }
}

/** One DNAT rule per mapping (ranges included). */
export function dnatRuleToIpt(n: IptNames, r: DnatRule): IptRule {
  const dport = r.hostPorts.start === r.hostPorts.end ? String(r.hostPorts.start) : `${r.hostPorts.start}:${r.hostPorts.end}`;
  return {
    table: 'nat',
    chain: n.dnat,
    spec: [
      ...(r.hostIp === undefined ? [] : ['-d', hostAddr(r.hostIp)]),
      '-p', r.proto, '-m', r.proto, '--dport', dport,
      ...comment(epComment(n, r.owner)),
      '-j', 'DNAT', '--to-destination', destination(r),
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// iptables-save parsing

/** Splits a save/restore line into tokens; double quotes group, backslash escapes inside them. */
export function tokenize(line: string): string[] {
  if (!line.includes('"')) return line.split(/[ \t]+/).filter((x) => x !== '');
  const out: string[] = [];
  let cur = '';
  let inTok = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i] as string;
    if (quoted) {
      if (ch === '\\' && i + 1 < line.length) cur += line[++i];
      else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') {
      quoted = true;
      inTok = true;
    } else if (ch === ' ' || ch === '\t') {
      if (inTok) out.push(cur);
      cur = '';
      inTok = false;
    } else {
      cur += ch;
      inTok = true;
    }
  }
  if (inTok) out.push(cur);
  return out;
}

function quoteToken(t: string): string {
  return /^[A-Za-z0-9_.:/,!@%+=\-[\]]+$/.test(t) ? t : `"${t.replace(/(["\\])/g, '\\$1')}"`;
}

export interface SavedRule extends IptRule {
  /** The owner comment, if any. */
  readonly comment?: string;
}

export interface SavedState {
  readonly chains: ReadonlyMap<IptTable, ReadonlySet<string>>;
  /** Built-in chains' policies per table (`:FORWARD DROP [0:0]`). */
  readonly policies: ReadonlyMap<IptTable, ReadonlyMap<string, string>>;
  /** Rules in kernel order. */
  readonly rules: readonly SavedRule[];
}

const TABLES = new Set<string>(TABLE_ORDER);

/** Parses `iptables-save` output (tables other than raw/filter/nat are ignored). */
export function parseSave(text: string): SavedState {
  const chains = new Map<IptTable, Set<string>>();
  const policies = new Map<IptTable, Map<string, string>>();
  const rules: SavedRule[] = [];
  let table: IptTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      const t = line.slice(1);
      table = TABLES.has(t) ? (t as IptTable) : undefined;
      if (table && !chains.has(table)) {
        chains.set(table, new Set());
        policies.set(table, new Map());
      }
      continue;
    }
    if (!table || line === 'COMMIT') continue;
    if (line.startsWith(':')) {
      const [name = '', policy] = line.slice(1).split(' ');
      chains.get(table)?.add(name);
      if (policy !== undefined && policy !== '-') policies.get(table)?.set(name, policy);
      continue;
    }
    const tokens = tokenize(line);
    if (tokens[0] !== '-A' || tokens[1] === undefined) continue;
    const spec = tokens.slice(2);
    const ci = spec.indexOf('--comment');
    const c = ci >= 0 ? spec[ci + 1] : undefined;
    rules.push({ table, chain: tokens[1], spec, ...(c === undefined ? {} : { comment: c }) });
  }
  return { chains, policies, rules };
}

const specKey = (r: IptRule): string => `${r.table}|${r.chain}|${r.spec.join(' ')}`;

/** Parses a saved DNAT rule of ours back into the DnatRule it came from. */
export function parseDnat(n: IptNames, family: Family, r: SavedRule, cache: Map<string, IpAddr> = new Map()): DnatRule | undefined {
  const prefix = `${n.comment}:ep:`;
  if (r.table !== 'nat' || r.chain !== n.dnat || !r.comment?.startsWith(prefix)) return undefined;
  const s = r.spec;
  const opt = (name: string): string | undefined => {
    const i = s.indexOf(name);
    return i >= 0 ? s[i + 1] : undefined;
  };
  const addr = (text: string): IpAddr => {
    let ip = cache.get(text);
    if (ip === undefined) {
      ip = parseIpAddr(text, 'saved rule');
      cache.set(text, ip);
    }
    return ip;
  };
  const proto = opt('-p');
  const dport = opt('--dport');
  const dest = opt('--to-destination');
  if ((proto !== 'tcp' && proto !== 'udp' && proto !== 'sctp') || !dport || !dest) return undefined;
  const d = opt('-d');
  const hostIp = d === undefined ? undefined : addr(d.replace(/\/\d+$/, ''));
  const [a, b] = dport.split(':');
  const hostPorts = { start: Number(a) as Port, end: Number(b ?? a) as Port };
  const m = /^\[?([0-9a-fA-F.:]+?)\]?:(\d+)(?:-(\d+))?(?:\/(\d+))?$/.exec(dest);
  if (!m) return undefined;
  const to = addr(m[1] ?? '');
  const toPorts = { start: Number(m[2]) as Port, end: Number(m[3] ?? m[2]) as Port };
  const owner = r.comment.slice(prefix.length) as EndpointId;
  // network and bridge are not recorded in the kernel
  const network = '' as NetworkId;
  const bridge = '' as DnatRule['bridge'];
  return hostIp === undefined
    ? { kind: 'dnat', owner, network, bridge, family, proto, hostPorts, to, toPorts }
    : { kind: 'dnat', owner, network, bridge, family, proto, hostIp, hostPorts, to, toPorts };
}

// ---------------------------------------------------------------------------------------------
// restore batches

/** One line of a restore batch. */
export interface RestoreLine {
  readonly table: IptTable;
  readonly line: string;
}

export const lineOf = (op: '-A' | '-D' | '-I', r: IptRule, pos?: number): RestoreLine => ({
  table: r.table,
  line: [op, r.chain, ...(pos === undefined ? [] : [String(pos)]), ...r.spec.map(quoteToken)].join(' '),
});

/** Renders a restore batch (tables in a fixed order, lines in order within a table). */
export function renderRestore(lines: readonly RestoreLine[]): string {
  let out = '';
  for (const t of TABLE_ORDER) {
    const mine = lines.filter((l) => l.table === t);
    if (mine.length > 0) out += `*${t}\n${mine.map((l) => l.line).join('\n')}\nCOMMIT\n`;
  }
  return out;
}

/**
 * The lines that bring the skeleton of one family to the wanted state: missing chains (-N),
 * the FORWARD jumps first and in order, one jump from each other built-in chain, and the exact
 * content of tsnet's skeleton chains. Nothing when it is complete.
 */
export function skeletonFix(n: IptNames, family: Family, saved: SavedState): RestoreLine[] {
  const out: RestoreLine[] = [];
  const has = (t: IptTable, c: string): boolean => saved.chains.get(t)?.has(c) ?? false;
  if (!has('filter', n.user)) out.push({ table: 'filter', line: `-N ${n.user}` });
  for (const [t, c] of ownChains(n)) if (!has(t, c)) out.push({ table: t, line: `-N ${c}` });
  const jumps = builtinJumps(n, family);
  // FORWARD: [user jump, forward jump] must be the first two rules.
  const fwd = saved.rules.filter((r) => r.table === 'filter' && r.chain === 'FORWARD');
  const wantKeys = jumps.forward.map(specKey);
  const firstTwo = fwd.slice(0, 2).map(specKey);
  const fwdOk = firstTwo.length === 2 && firstTwo[0] === wantKeys[0] && firstTwo[1] === wantKeys[1] && fwd.filter((r) => wantKeys.includes(specKey(r))).length === 2;
  if (!fwdOk) {
    for (const r of fwd) if (wantKeys.includes(specKey(r))) out.push(lineOf('-D', r));
    const [userJump, fwdJump] = jumps.forward;
    if (fwdJump) out.push(lineOf('-I', fwdJump, 1));
    if (userJump) out.push(lineOf('-I', userJump, 1));
  }
  for (const j of jumps.other) {
    const present = saved.rules.filter((r) => specKey(r) === specKey(j));
    // POSTROUTING: first, as the reference portmap puts its masquerade chain, since an ACCEPT
    // before it (the reference bridge plugin's ipMasq chain accepts traffic inside its subnet)
    // would end the nat table there and skip tsnet's hairpin and 127.0.0.1 masquerades.
    const head = j.chain === 'POSTROUTING';
    const first = saved.rules.find((r) => r.table === j.table && r.chain === j.chain);
    if (head && (first === undefined || specKey(first) !== specKey(j))) {
      for (const r of present) out.push(lineOf('-D', r));
      out.push(lineOf('-I', j, 1));
      continue;
    }
    if (present.length === 0) out.push(lineOf('-A', j));
    for (const extra of present.slice(1)) out.push(lineOf('-D', extra));
  }
  // tsnet's skeleton chains hold exactly their skeleton rules
  const want = skeletonChainRules(n, family);
  for (const [t, c] of [['filter', n.forward], ['raw', n.raw]] as const) {
    const wanted = want.filter((r) => r.table === t && r.chain === c).map(specKey);
    const got = saved.rules.filter((r) => r.table === t && r.chain === c).map(specKey);
    if (wanted.join('\n') !== got.join('\n')) {
      if (got.length > 0) out.push({ table: t, line: `-F ${c}` });
      for (const r of want.filter((x) => x.table === t && x.chain === c)) out.push(lineOf('-A', r));
    }
  }
  return out;
}

/**
 * Lines that make `owner`'s rules of one family in tsnet's own chains exactly `wanted` (no-op when
 * they already are). Its rules in other firewalls' chains are host-chains.ts's business.
 */
export function replaceOwned(saved: SavedState, owner: string, wanted: readonly IptRule[], n?: IptNames): RestoreLine[] {
  const own = n === undefined ? undefined : new Set(ownChains(n).map(([t, c]) => `${t}|${c}`));
  const mine = saved.rules.filter((r) => r.comment === owner && (own === undefined || own.has(`${r.table}|${r.chain}`)));
  if (mine.map(specKey).join('\n') === wanted.map(specKey).join('\n')) return [];
  return [...mine.map((r) => lineOf('-D', r)), ...wanted.map((r) => lineOf('-A', r))];
}

export function removeOwned(saved: SavedState, owner: string): RestoreLine[] {
  return saved.rules.filter((r) => r.comment === owner).map((r) => lineOf('-D', r));
}

/** Everything tsnet owns in one family: its jumps and its chains (never the user chain). */
export function removeAllLines(n: IptNames, saved: SavedState): RestoreLine[] {
  const out: RestoreLine[] = [];
  const own = new Set(ownChains(n).map(([t, c]) => `${t}|${c}`));
  for (const r of saved.rules) {
    const isOwnChain = own.has(`${r.table}|${r.chain}`);
    const ours = r.comment === n.comment || r.comment?.startsWith(`${n.comment}:`) === true;
    if (!isOwnChain && r.chain !== n.user && ours) out.push(lineOf('-D', r));
  }
  for (const [t, c] of ownChains(n)) if (saved.chains.get(t)?.has(c)) out.push({ table: t, line: `-F ${c}` });
  for (const [t, c] of ownChains(n)) if (saved.chains.get(t)?.has(c)) out.push({ table: t, line: `-X ${c}` });
  return out;
}

/** The network rules of one family, in order. */
export function networkRules(n: IptNames, family: Family, rules: readonly NetworkRule[]): IptRule[] {
  return rules.flatMap((r) => networkRuleToIpt(n, family, r));
}

// ---------------------------------------------------------------------------------------------
// errors: the one place iptables' messages become codes

const IPT_ERRORS: readonly (readonly [RegExp, ErrorCode])[] = [
  [/Chain already exists|File exists/i, 'ALREADY_EXISTS'],
  [/Couldn't load (match|target)|can't initialize|Table does not exist|Permission denied|Operation not permitted|not supported|holding the xtables lock|Resource temporarily unavailable/i, 'UNAVAILABLE'],
  [/does a matching rule exist|No chain\/target\/match by that name|doesn't exist|does not exist|No such file or directory/i, 'NOT_FOUND'],
  [/Cannot allocate memory|No space left|Too many/i, 'EXHAUSTED'],
];

export function classifyIptablesError(stderr: string): ErrorCode {
  for (const [re, code] of IPT_ERRORS) if (re.test(stderr)) return code;
  return 'INTERNAL';
}

export function mapIptError(err: unknown): TsnetError {
  const d = execDetails(err);
  if (!d || !(err instanceof TsnetError) || err.code !== 'INTERNAL') return err instanceof TsnetError ? err : wrap('iptables', err);
  const msg = d.stderr.trim().split('\n').filter(Boolean).slice(0, 2).join('; ') || err.message;
  return new TsnetError(classifyIptablesError(d.stderr), `${d.argv[d.argv.indexOf('--') + 1] ?? d.argv[0]}: ${msg}`, { cause: err, details: d });
}

/** A concurrent writer changed what we read (or holds the legacy xtables lock): re-read and retry. */
export const retryable = (err: unknown): boolean =>
  isCode(err, 'ALREADY_EXISTS') || isCode(err, 'NOT_FOUND') || /xtables lock|temporarily unavailable/i.test(execDetails(err)?.stderr ?? '');

// ---------------------------------------------------------------------------------------------
// the backend

export function createIptablesFirewall(deps: FirewallDeps): Firewall {
  const name = checkFirewallName(deps.name);
  const n = iptNames(name);
  const exec: FirewallExec = deps.exec ?? run;
  const log: Logger = (deps.log ?? nullLogger).child({ component: 'firewall', backend: 'iptables', netns: netnsLabel(deps.netns) });
  const BIN = { 4: { save: 'iptables-save', restore: 'iptables-restore' }, 6: { save: 'ip6tables-save', restore: 'ip6tables-restore' } } as const;
  const firewalld = createFirewalld({ netns: deps.netns, name, exec, log, ...(deps.systemBus !== undefined ? { systemBus: deps.systemBus } : {}) });
  /** The bridge of each network, from its forward-in rules (`-o BRIDGE`). */
  const bridgesOf = (s: SavedState): Map<NetworkId, IfName> => {
    const out = new Map<NetworkId, IfName>();
    for (const r of s.rules) {
      if (r.chain !== n.fwdIn || !r.comment?.startsWith(`${n.comment}:net:`)) continue;
      const id = r.comment.slice(n.comment.length + 5) as NetworkId;
      const o = r.spec.indexOf('-o');
      if (o >= 0 && r.spec[o - 1] !== '!' && !out.has(id)) out.set(id, r.spec[o + 1] as IfName);
    }
    return out;
  };

  const runIpt = async (argv: readonly [string, ...string[]], input: string | undefined, opts: FirewallCallOptions): Promise<string> => {
    const full = inNetns(deps.netns, argv);
    const t0 = performance.now();
    try {
      const r = await exec(full, { ...(input === undefined ? {} : { input }), ...(opts.signal ? { signal: opts.signal } : {}) });
      return r.stdout;
    } catch (err) {
      throw mapIptError(err);
    } finally {
      log.debug('exec', { argv: full.join(' '), ms: Math.round((performance.now() - t0) * 10) / 10, bytes: input?.length ?? 0 });
    }
  };
  const save = async (family: Family, opts: FirewallCallOptions): Promise<SavedState> => parseSave(await runIpt([BIN[family].save], undefined, opts));
  const restore = async (family: Family, lines: readonly RestoreLine[], opts: FirewallCallOptions): Promise<void> => {
    if (lines.length === 0) return;
    await runIpt([BIN[family].restore, '--noflush', '--wait=10'], renderRestore(lines), opts);
  };

  /**
   * Read both families, compute one batch per family, apply; on a concurrent change (chain
   * created/removed meanwhile, rule already deleted) re-read and recompute. If the second family
   * fails, the first family's batch is undone when `undo` can compute it.
   */
  const transact = async (
    what: string,
    families: readonly Family[],
    compute: (family: Family, saved: SavedState) => RestoreLine[],
    opts: FirewallCallOptions,
  ): Promise<number> => {
    for (let attempt = 1; ; attempt++) {
      const saved = await Promise.all(families.map((f) => save(f, opts)));
      let batches: { f: Family; lines: RestoreLine[] }[];
      try {
        batches = families.map((f, i) => ({ f, lines: compute(f, saved[i] as SavedState) }));
      } catch (err) {
        throw wrap(what, err); // a conflict found in the kernel state: not retried
      }
      let applied = 0;
      try {
        for (const b of batches) {
          await restore(b.f, b.lines, opts);
          applied++;
        }
        return batches.reduce((s, b) => s + b.lines.length, 0);
      } catch (err) {
        if (applied > 0) {
          log.warn('partial apply; the next call converges', { what, applied, error: err });
        }
        if (attempt < MAX_ATTEMPTS && retryable(err)) continue;
        throw wrap(what, err);
      }
    }
  };

  return {
    backend: 'iptables',

    async ensureNetwork(p: NetworkPolicy, opts = {}) {
      const v = validateNetworkPolicy(p);
      const rules = planNetwork(v);
      const owner = netComment(n, v.networkId);
      const masq = rules.flatMap((r) => (r.kind === 'masquerade' ? [r.from] : []));
      const changed = await transact(
        `ensure network ${v.networkId}`,
        [4, 6],
        (family, saved) => {
          for (const r of saved.rules) {
            if (!r.comment?.startsWith(`${n.comment}:net:`) || r.comment === owner) continue;
            const other = r.comment.slice(`${n.comment}:net:`.length);
            if (r.chain === n.fwdIn && r.spec.includes('-o') && r.spec[r.spec.indexOf('-o') + 1] === v.bridge && r.spec[r.spec.indexOf('-o') - 1] !== '!') {
              throw new TsnetError('ALREADY_EXISTS', `bridge ${v.bridge} is used by network ${other}`, { details: { field: 'bridge', value: v.bridge, owner: other } });
            }
            if (r.chain === n.post && r.spec.includes('!')) {
              const s = r.spec[r.spec.indexOf('-s') + 1] as Prefix | undefined;
              const clash = s === undefined ? undefined : masq.find((m) => addrFamily(m) === family && prefixesOverlap(m, s));
              if (clash) throw new TsnetError('ALREADY_EXISTS', `subnet ${clash} overlaps ${s} of network ${other}`, { details: { field: 'subnets', value: clash, owner: other } });
            }
          }
          return [
            ...skeletonFix(n, family, saved),
            ...replaceOwned(saved, owner, networkRules(n, family, rules), n),
            ...letThroughFix(n, saved, v.networkId, wantedLetThrough(n, v, hostForward(family, saved), 'tsnet')),
          ];
        },
        opts,
      );
      await firewalld.ensure(v.bridge, opts).catch((err: unknown) => {
        throw wrap(`ensure network ${v.networkId}`, err);
      });
      log.info('network rules applied', { network: v.networkId, bridge: v.bridge, lines: changed });
    },

    async removeNetwork(id, opts = {}) {
      let bridge: IfName | undefined;
      const changed = await transact(`remove network ${id}`, [4, 6], (_f, saved) => {
        bridge ??= bridgesOf(saved).get(id);
        return removeOwned(saved, netComment(n, id));
      }, opts);
      if (bridge !== undefined) {
        await firewalld.remove([bridge], opts).catch((err: unknown) => {
          throw wrap(`remove network ${id}`, err);
        });
      }
      if (changed > 0) log.info('network rules removed', { network: id, lines: changed });
    },

    async ensurePorts(p: EndpointPorts, opts = {}) {
      const { ports: v, rules, nat } = preparePorts(p);
      if (rules.length === 0) return;
      const families = [...new Set(rules.map((r) => r.family))].sort();
      const natOwner = epComment(n, v.endpointId);
      const changed = await transact(
        `ensure ports ${v.endpointId}`,
        families,
        (family, saved) => {
          const cache = new Map<string, IpAddr>();
          const existing = indexAtoms(
            saved.rules.flatMap((r) => {
              const d = parseDnat(n, family, r, cache);
              return d ? dnatAtoms(d) : [];
            }),
          );
          const adds: RestoreLine[] = [];
          for (const r of rules.filter((x) => x.family === family)) {
            const diff = existing.diff(dnatAtoms(r));
            const first = diff.conflicts[0];
            if (first) throw conflictError(first);
            if (diff.missing.length === 0) continue;
            const ipt = dnatRuleToIpt(n, r);
            // host-address-specific mappings before "any" ones
            adds.push(r.hostIp === undefined ? lineOf('-A', ipt) : lineOf('-I', ipt, 1));
          }
          // The endpoint's own masquerades (foreign bridge), each once.
          const have = new Set(saved.rules.filter((r) => r.comment === natOwner && r.chain === n.post).map(specKey));
          for (const r of nat.filter((x) => x.family === family)) {
            const ipt = endpointNatToIpt(n, r);
            if (!have.has(specKey(ipt))) adds.push(lineOf('-A', ipt));
          }
          return adds.length === 0 ? [] : [...skeletonFix(n, family, saved), ...adds];
        },
        opts,
      );
      if (changed > 0) log.info('ports published', { endpoint: v.endpointId, lines: changed });
    },

    async removePorts(id, opts = {}) {
      const changed = await transact(`remove ports ${id}`, [4, 6], (_f, saved) => removeOwned(saved, epComment(n, id)), opts);
      if (changed > 0) log.info('ports removed', { endpoint: id, lines: changed });
    },

    async list(opts = {}): Promise<FirewallListing> {
      const [saved4, saved6, fwd] = await Promise.all([save(4, opts), save(6, opts), firewalld.read(opts)]);
      const saved = [saved4, saved6];
      const networks = new Set<NetworkId>();
      const endpoints = new Set<EndpointId>();
      const blocked = new Set<NetworkId>();
      for (const [i, s] of saved.entries()) {
        for (const r of s.rules) {
          if (r.comment?.startsWith(`${n.comment}:net:`)) networks.add(r.comment.slice(n.comment.length + 5) as NetworkId);
          if (r.comment?.startsWith(`${n.comment}:ep:`)) endpoints.add(r.comment.slice(n.comment.length + 4) as EndpointId);
        }
        const bridges = bridgesOf(s);
        for (const id of blockedIn(n, s, hostForward(i === 0 ? 4 : 6, s), bridges, 'tsnet')) blocked.add(id);
        const cutOff = new Set(firewalld.blocked(fwd, [...bridges.values()]));
        for (const [id, b] of bridges) if (cutOff.has(b)) blocked.add(id);
      }
      return { networks: [...networks].sort(), endpoints: [...endpoints].sort(), ...(blocked.size > 0 ? { blocked: [...blocked].sort() } : {}) };
    },

    async removeAll(opts = {}) {
      const bridges = new Set<IfName>();
      const changed = await transact('remove all', [4, 6], (_f, saved) => {
        for (const b of bridgesOf(saved).values()) bridges.add(b);
        return removeAllLines(n, saved);
      }, opts);
      await firewalld.remove([...bridges], opts);
      if (changed > 0) log.info('all rules removed', { lines: changed });
    },
  };
}
