/**
 * `Netlink` over long-lived iproute2 processes: one `ip -force -json -details -batch -` per
 * namespace (`nsenter --net=PATH ip ...` for a namespace file), fed lines on stdin. Reads go through
 * the same process (`addr show`, `route show`), so a handle is one ordered stream: a read sees every
 * write issued before it on the same handle.
 *
 * Completion protocol (measured on iproute2 6.1; see the notes at `IpProcess`):
 *  - stderr is unbuffered. With -force, every failing line prints its message(s) and then
 *    `Command failed -:N`, N being the cumulative line number, and ip carries on.
 *  - After each operation's lines we write a sentinel line, `tsnet-sentinel-<N>`, an unknown ip
 *    "object" that always fails at once, without a syscall: `Object "tsnet-sentinel-N" is unknown`
 *    + `Command failed -:N`. When the sentinel's failure arrives, every line before it has run, and
 *    the `Command failed -:K` lines seen since the previous sentinel say exactly which lines failed
 *    and why. (A failing `link show dev X`, the obvious sentinel, must not be used: it sets ip's
 *    static `do_link` flag, after which every `addr show` in the same process prints links only.)
 *  - With -json, each successful read prints exactly one JSON document on one line and flushes it
 *    before the next line runs; a read that fails prints nothing. Mutations print nothing on stdout.
 *    So stdout is a queue of lines consumed in order by the successful reads. stdout and stderr are
 *    separate pipes, so the sentinel may be seen before the output it follows: an operation whose
 *    sentinel has arrived completes once its output lines have arrived too.
 *  - Operations issued in the same tick are written together (one write, one wake-up of ip), each
 *    with its own sentinel, so each gets its own result and a failure is never attributed to the
 *    wrong caller. Operations on one handle run in the order they were called.
 *  - If ip dies (killed, or a fatal parse error, which validation prevents), the operation it was
 *    running and every later one written to it reject with UNAVAILABLE (or the code of ip's last
 *    message, for the one it died on); the next operation starts a new process.
 *  - iproute2 before 6.12 never closes the file it opens for `netns PATH` (fixed upstream by
 *    "iplink: fix fd leak when playing with netns"). In a long-lived process that descriptor keeps
 *    the container's namespace, and so its veth pair, alive after the namespace is deleted.
 *    Retiring the process after every such line costs a process start per veth (measured: the
 *    container sequence went from 1.7 to 4.7 ms), so instead each process remembers the namespace
 *    files it opened and their identity (device:inode); a periodic check (leakCheckMs) retires the
 *    process, once nothing is in flight, as soon as one of them was deleted or replaced, or when it
 *    holds too many. A fresh process is started at once in the background.
 */
import { stat } from 'node:fs/promises';
// zod/mini (the tree-shakable API): this module is in the CNI plugin bundle, where full zod was
// 80% of the bytes and of the start-up snapshot.
import * as z from 'zod/mini';
import { isCode, TsnetError, type ErrorCode } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { nullLogger } from '../../core/log.js';
import {
  netnsLabel, parseMac, parsePrefix,
  type Family, type IfName, type IpAddr, type MacAddr, type NetnsRef, type Prefix,
} from '../../core/net.js';
import { execDetails, inNetns, run, spawnLongLived, type Argv, type LongLived } from '../exec.js';
import { checkNetns } from '../netns.js';
import type {
  Addr, AddrOptions, BatchResult, BridgeOptions, FdbEntry, Link, LinkChanges, Neigh, Netlink, NetlinkCache, NetlinkOp,
  MacvlanSpec, Route, RouteSpec, VethSpec, VxlanSpec,
} from './api.js';
import { checkIfName, describeOp, isFdbOp, isRemove, validateOp, validateOps } from './ops.js';

// ---------------------------------------------------------------------------------------------
// Error mapping: the one place where ip's and the kernel's messages become codes.

const ERROR_RULES: readonly (readonly [RegExp, ErrorCode])[] = [
  [/File exists|already assigned|already exists/i, 'ALREADY_EXISTS'],
  [/Cannot find device|does not exist|No such device|No such process|address not found|Invalid "netns" value|No such file or directory|Cannot open network namespace/i, 'NOT_FOUND'],
  [/No buffer space|Cannot allocate memory|No space left|Too many/i, 'EXHAUSTED'],
  [/Operation not permitted|Permission denied/i, 'UNAVAILABLE'],
  [/Invalid argument|out of range|mtu (greater|less) than|not supported|nexthop|gateway|No route to host|Network is unreachable|Cannot assign requested address|Can not enslave|Device or resource busy|Invalid prefix|Egress device|is not up|disabled|invalid/i, 'INVALID_CONFIG'],
];

/** Maps an ip/kernel error message ("RTNETLINK answers: File exists") to an error code. */
export function classifyIpError(message: string): ErrorCode {
  for (const [re, code] of ERROR_RULES) if (re.test(message)) return code;
  return 'INTERNAL';
}

// ---------------------------------------------------------------------------------------------
// ip -json output. ip's JSON is external input: parse only the fields we use (z.object drops the
// rest, so a newer iproute2 adding fields does not break us).

const IpAddrInfoSchema = z.object({
  family: z.string(),
  local: z.optional(z.string()),
  prefixlen: z.optional(z.int()),
  scope: z.optional(z.string()),
});
const IpLinkSchema = z.object({
  ifindex: z.int(),
  ifname: z.string(),
  flags: z._default(z.array(z.string()), []),
  mtu: z.int(),
  address: z.optional(z.string()),
  master: z.optional(z.string()),
  ifalias: z.optional(z.string()),
  link: z.optional(z.nullable(z.string())),
  linkinfo: z.optional(z.object({ info_kind: z.optional(z.string()), info_data: z.optional(z.object({ id: z.optional(z.int()) })) })),
  addr_info: z.optional(z.array(IpAddrInfoSchema)),
});
const IpLinksSchema = z.array(IpLinkSchema);
type IpLink = z.infer<typeof IpLinkSchema>;
const IpRoutesSchema = z.array(
  z.object({
    type: z.optional(z.string()),
    dst: z.string(),
    gateway: z.optional(z.string()),
    dev: z.optional(z.string()),
    table: z.optional(z.string()),
    protocol: z.optional(z.string()),
    scope: z.optional(z.string()),
    metric: z.optional(z.number()),
    prefsrc: z.optional(z.string()),
    pref: z.optional(z.string()),
  }),
);

function badOutput(what: string, detail: string): TsnetError {
  return new TsnetError('INTERNAL', `unexpected output of ip ${what}: ${detail}`, { details: { what } });
}

/** Parses one line of `ip -json -details addr show` output. */
export function parseIpLinks(line: string): IpLink[] {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw badOutput('addr show', `not JSON: ${line.slice(0, 200)}`);
  }
  const r = IpLinksSchema.safeParse(raw);
  if (!r.success) throw badOutput('addr show', z.prettifyError(r.error));
  return r.data;
}

function macOf(raw: string | undefined): MacAddr | undefined {
  if (raw === undefined) return undefined;
  try {
    return parseMac(raw);
  } catch {
    return undefined; // e.g. tunnels without an Ethernet address
  }
}

// Names and addresses reported by the kernel are trusted as they are (a kernel name may use
// characters our stricter IfName pattern refuses; such a name is still refused as an input).
export function toLink(l: IpLink): Link {
  return {
    name: l.ifname as IfName,
    index: l.ifindex,
    kind: l.linkinfo?.info_kind,
    up: l.flags.includes('UP'),
    carrier: l.flags.includes('LOWER_UP'),
    mtu: l.mtu,
    mac: macOf(l.address),
    master: l.master as IfName | undefined,
    ...(l.ifalias !== undefined && l.ifalias !== '' ? { alias: l.ifalias } : {}),
    ...(typeof l.link === 'string' ? { parent: l.link as IfName } : {}),
    ...(l.linkinfo?.info_kind === 'vxlan' && l.linkinfo.info_data?.id !== undefined ? { vni: l.linkinfo.info_data.id } : {}),
  };
}

/** One JSON document printed by ip or bridge, checked against `schema`. */
function parseJsonOutput<T>(what: string, text: string, schema: z.ZodMiniType<T>): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw badOutput(what, `not JSON: ${text.slice(0, 200)}`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw badOutput(what, z.prettifyError(r.error));
  return r.data;
}

const IpNeighsSchema = z.array(z.object({ dst: z.string(), lladdr: z.optional(z.string()), state: z._default(z.array(z.string()), []) }));
/** Parses one line of `ip -json neigh show dev DEV`: the permanent entries. */
export function parseIpNeighs(line: string, dev: IfName): Neigh[] {
  return parseJsonOutput('neigh show', line, IpNeighsSchema).flatMap((e) => {
    const mac = macOf(e.lladdr);
    return e.state.includes('PERMANENT') && mac !== undefined ? [{ dev, ip: e.dst as IpAddr, mac }] : [];
  });
}

const BridgeFdbSchema = z.array(z.object({ mac: z.string(), dst: z.optional(z.string()), flags: z._default(z.array(z.string()), []) }));
/** Parses `bridge -json fdb show dev DEV`: the device's own entries with a destination. */
export function parseBridgeFdb(text: string, dev: IfName): FdbEntry[] {
  if (text.trim() === '') return [];
  return parseJsonOutput('fdb show', text, BridgeFdbSchema).flatMap((e) => {
    const mac = macOf(e.mac);
    return e.dst !== undefined && e.flags.includes('self') && mac !== undefined ? [{ dev, mac, dst: e.dst as IpAddr }] : [];
  });
}

/** The `bridge` batch line of an FDB op (validated). */
export function fdbLine(op: Extract<NetlinkOp, { op: 'ensureFdb' | 'removeFdb' }>): string {
  return `fdb ${op.op === 'ensureFdb' ? 'replace' : 'del'} ${op.mac} dev ${op.dev} dst ${op.dst} self${op.op === 'ensureFdb' ? ' permanent' : ''}`;
}

/**
 * Per-line outcomes of a `bridge -force -batch -` run from its stderr: each failing line prints its
 * message(s) then `Command failed -:N` (N counted from 1), and the others print nothing.
 */
export function batchFailures(stderr: string): Map<number, string> {
  const out = new Map<number, string>();
  let pending: string[] = [];
  for (const line of stderr.split('\n')) {
    const m = COMMAND_FAILED.exec(line);
    if (m) {
      out.set(Number(m[2]), pending.join('; ') || 'failed (no message)');
      pending = [];
    } else if (line.trim() !== '') pending.push(line.trim());
  }
  return out;
}

export function toAddrs(l: IpLink): Addr[] {
  const out: Addr[] = [];
  for (const a of l.addr_info ?? []) {
    if ((a.family !== 'inet' && a.family !== 'inet6') || a.local === undefined || a.prefixlen === undefined) continue;
    out.push({
      dev: l.ifname as IfName,
      prefix: parsePrefix(`${a.local}/${a.prefixlen}`),
      family: a.family === 'inet' ? 4 : 6,
      scope: a.scope ?? 'global',
    });
  }
  return out;
}

/** Parses one line of `ip -json -details route show table all`: unicast routes of the main table. */
export function parseIpRoutes(line: string): Route[] {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw badOutput('route show', `not JSON: ${line.slice(0, 200)}`);
  }
  const r = IpRoutesSchema.safeParse(raw);
  if (!r.success) throw badOutput('route show', z.prettifyError(r.error));
  const out: Route[] = [];
  for (const e of r.data) {
    if ((e.table !== undefined && e.table !== 'main') || (e.type !== undefined && e.type !== 'unicast')) continue;
    // The JSON has no family field; "default" is either. IPv6 routes always carry a preference.
    const family: Family = e.pref !== undefined || [e.dst, e.gateway, e.prefsrc].some((s) => s?.includes(':')) ? 6 : 4;
    const dst = e.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : e.dst.includes('/') ? e.dst : `${e.dst}/${family === 4 ? 32 : 128}`;
    out.push({
      dst: parsePrefix(dst),
      family,
      via: e.gateway as IpAddr | undefined,
      dev: e.dev as IfName | undefined,
      metric: e.metric ?? 0,
      proto: e.protocol ?? 'boot',
      scope: e.scope ?? 'global',
      src: e.prefsrc as IpAddr | undefined,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Ops as batch lines. Every value was validated (validateOp), so it has no blanks, quotes or '#'.

/** The line(s) for one validated op. `selfNetns` is the path of the process's own namespace. */
export function opLines(op: NetlinkOp, ns: NetnsRef, selfNetns: string): string[] {
  const opt = (key: string, v: string | number | undefined): string => (v === undefined ? '' : ` ${key} ${v}`);
  switch (op.op) {
    case 'addBridge':
    case 'ensureBridge': {
      const add = `link add name ${op.name}${opt('mtu', op.mtu)}${opt('address', op.mac)} type bridge`;
      // ensure: if the add fails with "File exists", the read says whether the link is a bridge.
      return op.op === 'addBridge' ? [add] : [add, `addr show dev ${op.name}`];
    }
    case 'addVeth': {
      const peerNs = op.peerNetns;
      let netns = '';
      if (peerNs !== undefined && netnsLabel(peerNs) !== netnsLabel(ns)) {
        netns = ` netns ${peerNs.kind === 'path' ? peerNs.path : selfNetns}`;
      }
      return [
        `link add name ${op.name}${opt('mtu', op.mtu)}${opt('address', op.mac)} type veth` +
          ` peer name ${op.peer}${opt('mtu', op.mtu)}${opt('address', op.peerMac)}${netns}`,
        // `link add` ignores an alias: a line of its own. It would also run if the add failed on a
        // name someone else holds; veth names are tsnet's (random or hashed), so none does.
        ...(op.alias !== undefined ? [`link set dev ${op.name} alias ${op.alias}`] : []),
      ];
    }
    case 'addMacvlan': {
      const target = op.netns;
      const netns = target !== undefined && netnsLabel(target) !== netnsLabel(ns) ? ` netns ${target.kind === 'path' ? target.path : selfNetns}` : '';
      return [`link add link ${op.parent} name ${op.name}${netns}${opt('mtu', op.mtu)}${opt('address', op.mac)} type macvlan mode ${op.mode}`];
    }
    case 'addVxlan':
      return [
        `link add name ${op.name}${opt('mtu', op.mtu)}${opt('address', op.mac)} type vxlan id ${op.vni} local ${op.local} dstport ${op.port ?? 4789}${opt('dev', op.dev)} nolearning proxy`,
      ];
    case 'ensureNeigh':
      return [`neigh replace ${op.ip} lladdr ${op.mac} dev ${op.dev} nud permanent`];
    case 'removeNeigh':
      return [`neigh del ${op.ip} dev ${op.dev}`];
    case 'ensureFdb':
    case 'removeFdb':
      // Run by the `bridge` tool (Iproute2Handle routes them there); never an `ip` line.
      throw new TsnetError('INTERNAL', `${describeOp(op)}: not an ip batch line`);
    case 'removeLink':
      return [`link del dev ${op.name}`];
    case 'setLink': {
      const c = op.changes;
      let args = '';
      if (c.name !== undefined) args += ` name ${c.name}`;
      if (c.mac !== undefined) args += ` address ${c.mac}`;
      if (c.mtu !== undefined) args += ` mtu ${c.mtu}`;
      if (c.alias !== undefined) args += ` alias ${c.alias}`;
      if (c.master === null) args += ' nomaster';
      else if (c.master !== undefined) args += ` master ${c.master}`;
      if (c.up !== undefined) args += c.up ? ' up' : ' down';
      const dev = c.name ?? op.name;
      // Port options need the master set first: a second line, after the main one.
      const portOpts = `${c.isolated === undefined ? '' : ` isolated ${c.isolated ? 'on' : 'off'}`}${c.hairpin === undefined ? '' : ` hairpin ${c.hairpin ? 'on' : 'off'}`}`;
      const port = portOpts === '' ? [] : [`link set dev ${dev} type bridge_slave${portOpts}`];
      return [...(args === '' ? [] : [`link set dev ${op.name}${args}`]), ...port];
    }
    case 'addAddr':
    case 'ensureAddr': {
      const nodad = op.nodad === true && op.prefix.includes(':') ? ' nodad' : '';
      return [`addr ${op.op === 'addAddr' ? 'add' : 'replace'} ${op.prefix} dev ${op.dev}${nodad}`];
    }
    case 'removeAddr':
      return [`addr del ${op.prefix} dev ${op.dev}`];
    case 'addRoute':
    case 'ensureRoute':
    case 'removeRoute': {
      const verb = op.op === 'addRoute' ? 'add' : op.op === 'ensureRoute' ? 'replace' : 'del';
      return [`route ${verb} ${routeArgs(op.route)}`];
    }
  }
}

function routeArgs(r: RouteSpec): string {
  let s: string = r.dst;
  if (r.via !== undefined) s += ` via ${r.via}`;
  if (r.dev !== undefined) s += ` dev ${r.dev}`;
  if (r.metric !== undefined) s += ` metric ${r.metric}`;
  if (r.src !== undefined) s += ` src ${r.src}`;
  return s;
}

// ---------------------------------------------------------------------------------------------
// One ip process and its line protocol.

type LineOutcome = { readonly ok: true; readonly out: string | undefined } | { readonly ok: false; readonly message: string };

interface Job {
  readonly lines: readonly string[];
  /** Per line: does it print one JSON line on success? */
  readonly reads: readonly boolean[];
  /** Checks run before the job is written (e.g. that a veth's peer namespace exists). */
  readonly prepare: (() => Promise<void>) | undefined;
  readonly resolve: (outcomes: readonly LineOutcome[]) => void;
  readonly reject: (err: TsnetError) => void;
}

interface Flight {
  readonly job: Job;
  /** Line number of the job's first line (equal to `sentinel` for a job without lines). */
  readonly first: number;
  readonly sentinel: number;
  readonly failures: Map<number, string>;
  sentinelSeen: boolean;
  readonly t0: number;
}

const SENTINEL = 'tsnet-sentinel-';
const NETNS_ARG = / netns (\/\S*)/;
const COMMAND_FAILED = /^Command failed (.*):(\d+)$/;

function asTsnet(err: unknown): TsnetError {
  return err instanceof TsnetError ? err : new TsnetError('INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
}

/** Calls `onLine` for each complete line of `chunk`; `parts` carries an unfinished line across chunks. */
function splitLines(chunk: string, parts: string[], onLine: (line: string) => void): void {
  let start = 0;
  let i: number;
  while ((i = chunk.indexOf('\n', start)) >= 0) {
    const tail = chunk.slice(start, i);
    onLine(parts.length > 0 ? parts.splice(0).join('') + tail : tail);
    start = i + 1;
  }
  if (start < chunk.length) parts.push(chunk.slice(start));
}

/** Stdio of a child is a net.Socket; ref/unref keep or release Node's event loop. */
type Refable = { ref?: () => unknown; unref?: () => unknown };

class IpProcess {
  readonly pid: number;
  readonly #ll: LongLived;
  readonly #label: string;
  readonly #log: Logger;
  readonly #opTimeoutMs: number;
  readonly #onDeath: (p: IpProcess) => void;
  readonly #onIdle: (p: IpProcess) => void;
  #lineNo = 0;
  /** Namespace files named in `netns PATH` lines (ip < 6.12 keeps them open), with their identity then. */
  readonly leaked = new Map<string, Promise<string | undefined>>();
  /** Retire this process as soon as nothing is in flight. */
  retireWanted = false;
  readonly #identity: (path: string) => Promise<string | undefined>;
  #flights: Flight[] = [];
  /** Index in #flights of the first flight whose sentinel has not been seen (the one ip is running). */
  #running = 0;
  /** Pieces of the current, unfinished line of each stream (a JSON line can be megabytes). */
  #errParts: string[] = [];
  #outParts: string[] = [];
  /** stderr lines since the last `Command failed`. */
  #messages: string[] = [];
  /** Complete stdout lines not yet consumed. */
  #out: string[] = [];
  #dead = false;
  #closing = false;
  #killReason: string | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #refd = true;

  constructor(
    ll: LongLived,
    o: {
      label: string;
      log: Logger;
      opTimeoutMs: number;
      identity: (path: string) => Promise<string | undefined>;
      onDeath: (p: IpProcess) => void;
      onIdle: (p: IpProcess) => void;
    },
  ) {
    this.#ll = ll;
    this.#identity = o.identity;
    this.pid = ll.pid;
    this.#label = o.label;
    this.#log = o.log;
    this.#opTimeoutMs = o.opTimeoutMs;
    this.#onDeath = o.onDeath;
    this.#onIdle = o.onIdle;
    const { child } = ll;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => this.#onStdout(chunk));
    child.stderr.on('data', (chunk: string) => this.#onStderr(chunk));
    // 'close' comes after the process exited AND its stdio ended: every byte it wrote has been seen.
    child.once('close', (code: number | null, signal: string | null) => {
      this.#die(this.#killReason ?? (signal !== null ? `was killed by ${signal}` : `exited with code ${String(code)}`));
    });
    child.on('error', (err: Error) => {
      // A child that got a pid was spawned; its end is reported by 'close'. Without one, it never ran.
      if (this.pid > 0) this.#log.warn('ip process error', { pid: this.pid, err });
      else this.#die(`could not be started: ${err.message}`, true);
    });
    child.stdout.on('error', () => undefined); // a broken pipe shows up as the process's death
    child.stderr.on('error', () => undefined);
    this.#setRef(false);
  }

  /** Accepts work: not dead and not being closed. */
  get alive(): boolean {
    return !this.#dead && !this.#closing;
  }

  get busy(): boolean {
    return this.#flights.length > 0;
  }

  /** Writes the jobs; false (and nothing written) if this process no longer accepts work. */
  send(jobs: readonly Job[]): boolean {
    if (!this.alive) return false;
    let text = '';
    const t0 = performance.now();
    for (const job of jobs) {
      const first = this.#lineNo + 1;
      for (const line of job.lines) {
        text += `${line}\n`;
        this.#lineNo++;
        const leak = NETNS_ARG.exec(line)?.[1];
        if (leak !== undefined && !this.leaked.has(leak)) this.leaked.set(leak, this.#identity(leak).catch(() => undefined));
      }
      const sentinel = ++this.#lineNo;
      text += `${SENTINEL}${sentinel}\n`;
      this.#flights.push({ job, first, sentinel, failures: new Map(), sentinelSeen: false, t0 });
    }
    this.#setRef(true);
    this.#arm();
    this.#ll.child.stdin.write(text);
    return true;
  }

  /** Ends stdin: ip runs what it was sent, then exits. */
  async close(graceMs = 2_000): Promise<void> {
    this.#closing = true;
    this.#setRef(true); // whoever awaits this must not see Node exit under them
    await this.#ll.close(graceMs);
  }

  /** Kills it; from now on it takes no work (what is in flight fails when it is gone). */
  kill(reason: string): void {
    this.#killReason ??= reason;
    this.#closing = true;
    if (!this.#dead) this.#ll.child.kill('SIGKILL');
  }

  #setRef(on: boolean): void {
    if (this.#refd === on) return;
    this.#refd = on;
    const { child } = this.#ll;
    for (const h of [child, child.stdin, child.stdout, child.stderr] as Refable[]) {
      if (on) h.ref?.();
      else h.unref?.();
    }
  }

  /** The watchdog: a process that makes no progress for opTimeoutMs while work is pending is killed. */
  #arm(): void {
    if (this.#flights.length === 0) {
      clearTimeout(this.#watchdog);
      this.#watchdog = undefined;
      return;
    }
    if (this.#watchdog) this.#watchdog.refresh();
    else this.#watchdog = setTimeout(() => this.kill(`timed out (no progress for ${this.#opTimeoutMs} ms)`), this.#opTimeoutMs);
  }

  #onStdout(chunk: string): void {
    splitLines(chunk, this.#outParts, (line) => {
      if (line !== '') this.#out.push(line);
    });
    this.#arm();
    this.#drain();
  }

  #onStderr(chunk: string): void {
    splitLines(chunk, this.#errParts, (line) => this.#stderrLine(line));
    this.#arm();
    this.#drain();
  }

  #stderrLine(line: string): void {
    const m = COMMAND_FAILED.exec(line);
    if (!m) {
      if (line.trim() !== '') this.#messages.push(line.trim());
      return;
    }
    const n = Number(m[2]);
    const lines = this.#messages.splice(0);
    const message = lines.join('; ');
    const f = this.#flights[this.#running];
    if (!f || n < f.first || n > f.sentinel) {
      // Cannot happen while the protocol holds; if it does, nothing this process says can be trusted.
      this.kill(`lost track of its output (unexpected "${line}")`);
      return;
    }
    if (n === f.sentinel) {
      f.sentinelSeen = true;
      this.#running++;
      // Anything besides the sentinel's own complaint was printed by a line that succeeded.
      const extra = lines.filter((l) => !l.includes(`"${SENTINEL}`));
      if (extra.length > 0) this.#log.warn('ip printed warnings', { netns: this.#label, lines: f.job.lines, stderr: extra });
    } else {
      f.failures.set(n, message || 'failed (no message)');
    }
  }

  /** Completes, in order, every flight whose sentinel and output lines have all arrived. */
  #drain(): void {
    while (this.#flights.length > 0) {
      const f = this.#flights[0] as Flight;
      if (!f.sentinelSeen) break;
      const { lines, reads } = f.job;
      let need = 0;
      for (let i = 0; i < lines.length; i++) if (reads[i] === true && !f.failures.has(f.first + i)) need++;
      if (this.#out.length < need) break; // its output is still in the stdout pipe
      const outcomes: LineOutcome[] = lines.map((_, i) => {
        const message = f.failures.get(f.first + i);
        if (message !== undefined) return { ok: false, message };
        return { ok: true, out: reads[i] === true ? this.#out.shift() : undefined };
      });
      this.#flights.shift();
      this.#running--;
      this.#log.debug('ip batch', { netns: this.#label, lines, ms: Math.round((performance.now() - f.t0) * 1000) / 1000 });
      f.job.resolve(outcomes);
    }
    if (this.#flights.length === 0) {
      if (this.#out.length > 0) this.kill(`printed output nobody asked for: ${(this.#out[0] ?? '').slice(0, 100)}`);
      this.#arm();
      this.#setRef(false);
      if (!this.#dead) this.#onIdle(this);
    }
  }

  #die(reason: string, spawnFailed = false): void {
    if (this.#dead) return;
    this.#dead = true;
    clearTimeout(this.#watchdog);
    if (this.#errParts.length > 0) this.#stderrLine(this.#errParts.splice(0).join(''));
    this.#drain();
    const leftover = this.#messages.splice(0).join('; ');
    // nsenter failing to enter the namespace: no line ran; its message concerns every flight.
    const startup = leftover.startsWith('nsenter:');
    const flights = this.#flights.splice(0);
    this.#log.debug('ip process ended', { netns: this.#label, pid: this.pid, reason, pending: flights.length });
    flights.forEach((f, i) => {
      let err: TsnetError;
      if (spawnFailed) {
        err = new TsnetError('UNAVAILABLE', `ip process (netns ${this.#label}) ${reason}`);
      } else if (f.sentinelSeen) {
        err = new TsnetError('INTERNAL', `ip process (netns ${this.#label}) ${reason}; its output ended early`);
      } else if (leftover !== '' && (startup || i === 0)) {
        // The line ip was running when it died said why (e.g. a fatal argument error).
        const code = classifyIpError(leftover);
        err = new TsnetError(code === 'INTERNAL' ? 'UNAVAILABLE' : code, `ip process (netns ${this.#label}) ${reason}: ${leftover}`, {
          details: { netns: this.#label, stderr: leftover },
        });
      } else {
        err = new TsnetError('UNAVAILABLE', `ip process (netns ${this.#label}) ${reason} before the operation completed`, {
          details: { netns: this.#label },
        });
      }
      f.job.reject(err);
    });
    this.#setRef(false);
    this.#onDeath(this);
  }
}

// ---------------------------------------------------------------------------------------------
// The handle.

export interface Iproute2Deps {
  /** Starts the long-lived process (default: sys/exec spawnLongLived). */
  readonly spawn?: (argv: Argv) => LongLived;
  /** Checks that a namespace file exists (default: sys/netns checkNetns); NOT_FOUND if not. */
  readonly checkNetns?: (ns: NetnsRef, field: string) => Promise<unknown>;
  readonly log?: Logger;
  /** The `ip` binary (default `ip`, found on the fixed PATH). */
  readonly ip?: string;
  /** The `bridge` binary (FDB entries; default `bridge`). */
  readonly bridge?: string;
  /**
   * Ends a namespace's ip process after this long without work (it restarts on the next call).
   * A process inside a namespace keeps that namespace alive, so the default is 5 s for namespace
   * files and never for the process's own namespace.
   */
  readonly idleMs?: number;
  /** Kills the process (failing what is in flight with UNAVAILABLE) after this long without progress. Default 30 s. */
  readonly opTimeoutMs?: number;
  /** Start the process when the handle is created rather than at the first call (default true). */
  readonly eager?: boolean;
  /** Path of this process's own network namespace, for a veth peer placed in `{kind:'host'}`. */
  readonly selfNetns?: string;
  /** Identity of a namespace file (default `dev:ino` from stat), undefined if it is gone. */
  readonly netnsIdentity?: (path: string) => Promise<string | undefined>;
  /** How often to check whether a namespace file an ip process holds open was deleted (default 250 ms). */
  readonly leakCheckMs?: number;
  /** Retire an ip process once it holds this many namespace files open (default 128). */
  readonly maxLeakedNetns?: number;
}

async function fileIdentity(path: string): Promise<string | undefined> {
  try {
    const s = await stat(path);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/** The iproute2 handle; `pid` is the current ip process (for tests and diagnostics). */
export interface Iproute2Netlink extends Netlink {
  readonly pid: number | undefined;
}

interface Plan<T> {
  readonly lines: readonly string[];
  readonly reads: readonly boolean[];
  readonly prepare?: () => Promise<void>;
  readonly finish: (outcomes: readonly LineOutcome[]) => T;
}

class Iproute2Handle implements Iproute2Netlink {
  readonly ns: NetnsRef;
  readonly #label: string;
  readonly #spawn: (argv: Argv) => LongLived;
  readonly #checkNetns: (ns: NetnsRef, field: string) => Promise<unknown>;
  readonly #log: Logger;
  readonly #ip: string;
  readonly #bridge: string;
  readonly #idleMs: number;
  readonly #opTimeoutMs: number;
  readonly #selfNetns: string;
  readonly #identity: (path: string) => Promise<string | undefined>;
  readonly #leakCheckMs: number;
  readonly #maxLeaks: number;
  readonly #onClosed: () => void;
  #leakTimer: NodeJS.Timeout | undefined;
  #checkingLeaks = false;
  #queue: Job[] = [];
  #flushing = false;
  #flushDone: Promise<void> = Promise.resolve();
  #proc: IpProcess | undefined;
  #starting: Promise<IpProcess> | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #closeDone: Promise<void> | undefined;

  constructor(ns: NetnsRef, deps: Iproute2Deps, onClosed: () => void) {
    this.ns = ns;
    this.#label = netnsLabel(ns);
    this.#spawn = deps.spawn ?? ((argv) => spawnLongLived(argv));
    this.#checkNetns = deps.checkNetns ?? checkNetns;
    this.#log = (deps.log ?? nullLogger).child({ component: 'netlink', netns: this.#label });
    this.#ip = deps.ip ?? 'ip';
    this.#bridge = deps.bridge ?? 'bridge';
    this.#idleMs = deps.idleMs ?? (ns.kind === 'path' ? 5_000 : Infinity);
    this.#opTimeoutMs = deps.opTimeoutMs ?? 30_000;
    this.#selfNetns = deps.selfNetns ?? `/proc/${process.pid}/ns/net`;
    this.#identity = deps.netnsIdentity ?? fileIdentity;
    this.#leakCheckMs = deps.leakCheckMs ?? 250;
    this.#maxLeaks = deps.maxLeakedNetns ?? 128;
    this.#onClosed = onClosed;
    if (deps.eager ?? true) this.#process().catch(() => undefined); // errors surface on first use
  }

  get pid(): number | undefined {
    return this.#proc?.alive === true ? this.#proc.pid : undefined;
  }

  // -- plumbing ------------------------------------------------------------------------------

  #submit<T>(plan: Plan<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new TsnetError('UNAVAILABLE', `netlink handle for netns ${this.#label} is closed`));
    return new Promise<readonly LineOutcome[]>((resolve, reject) => {
      this.#queue.push({ lines: plan.lines, reads: plan.reads, prepare: plan.prepare, resolve, reject });
      clearTimeout(this.#idleTimer);
      this.#idleTimer = undefined;
      if (!this.#flushing) {
        this.#flushing = true;
        this.#flushDone = this.#flush();
      }
    }).then(plan.finish);
  }

  /** Writes queued jobs, in order; everything queued in the same tick goes in one write. Never throws. */
  async #flush(): Promise<void> {
    await Promise.resolve(); // let the rest of this tick's operations join the write
    let jobs: Job[] = [];
    try {
      while (this.#queue.length > 0) {
        jobs = this.#queue.splice(0);
        let ready = jobs;
        if (jobs.some((j) => j.prepare !== undefined)) {
          const ok = await Promise.all(
            jobs.map((j) => (j.prepare ? j.prepare().then(() => true, (e: unknown) => (j.reject(asTsnet(e)), false)) : true)),
          );
          ready = jobs.filter((_, i) => ok[i]);
        }
        if (ready.length === 0) continue;
        // A process may be retired between being handed out and used: then take the next one.
        for (let attempt = 0; ; attempt++) {
          let proc: IpProcess;
          try {
            proc = await this.#process();
          } catch (err) {
            for (const j of ready) j.reject(asTsnet(err));
            break;
          }
          if (proc.send(ready)) {
            this.#watchLeaks();
            break;
          }
          if (attempt >= 3) {
            for (const j of ready) j.reject(new TsnetError('UNAVAILABLE', `ip process (netns ${this.#label}) keeps going away`));
            break;
          }
        }
      }
    } catch (err) {
      // Defensive: nothing above throws, but a job must never be left hanging (rejecting a job that
      // was already written and settled is a no-op).
      for (const j of [...jobs, ...this.#queue.splice(0)]) j.reject(asTsnet(err));
    } finally {
      this.#flushing = false; // synchronously after the last empty-queue check: no job is stranded
    }
  }

  #process(): Promise<IpProcess> {
    const p = this.#proc;
    if (p?.alive === true) return Promise.resolve(p);
    this.#starting ??= this.#start().finally(() => {
      this.#starting = undefined;
    });
    return this.#starting;
  }

  async #start(): Promise<IpProcess> {
    if (this.ns.kind === 'path') await this.#checkNetns(this.ns, 'netns');
    const argv = inNetns(this.ns, [this.#ip, '-force', '-json', '-details', '-batch', '-']);
    const ll = this.#spawn(argv);
    const proc = new IpProcess(ll, {
      label: this.#label,
      log: this.#log,
      opTimeoutMs: this.#opTimeoutMs,
      identity: this.#identity,
      onDeath: (dead) => {
        if (this.#proc === dead) this.#proc = undefined;
      },
      onIdle: (p) => this.#onProcessIdle(p),
    });
    this.#proc = proc;
    this.#log.debug('ip process started', { pid: proc.pid, argv });
    return proc;
  }

  #onProcessIdle(p: IpProcess): void {
    if (p.leaked.size >= this.#maxLeaks) p.retireWanted = true;
    if (p.retireWanted && this.#proc === p && !this.#closed) {
      this.#retire(p);
      return;
    }
    this.#maybeIdle();
  }

  /** Ends `p` (its leaked namespace descriptors go with it) and has a fresh process ready. */
  #retire(p: IpProcess): void {
    this.#log.debug('retiring ip process', { pid: p.pid, leaked: [...p.leaked.keys()] });
    this.#proc = undefined;
    p.close().catch(() => undefined);
    this.#process().catch(() => undefined);
  }

  #watchLeaks(): void {
    if (this.#leakTimer !== undefined || (this.#proc?.leaked.size ?? 0) === 0) return;
    this.#leakTimer = setInterval(() => void this.#checkLeaks(), this.#leakCheckMs);
    this.#leakTimer.unref();
  }

  /** Wants the current process retired if a namespace file it holds open was deleted or replaced. Never throws. */
  async #checkLeaks(): Promise<void> {
    const p = this.#proc;
    if (p === undefined || p.leaked.size === 0 || this.#closed) {
      clearInterval(this.#leakTimer);
      this.#leakTimer = undefined;
      return;
    }
    if (this.#checkingLeaks || p.retireWanted) return;
    this.#checkingLeaks = true;
    try {
      for (const [path, then] of p.leaked) {
        const [before, now] = await Promise.all([then, this.#identity(path)]);
        if (before === undefined || before !== now) {
          p.retireWanted = true;
          break;
        }
      }
    } catch {
      p.retireWanted = true; // cannot tell: err on the side of releasing namespaces
    } finally {
      this.#checkingLeaks = false;
    }
    if (p.retireWanted && !p.busy && this.#proc === p && !this.#closed) this.#retire(p);
  }

  #maybeIdle(): void {
    if (!Number.isFinite(this.#idleMs) || this.#closed || this.#idleTimer) return;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      const p = this.#proc;
      if (p && !p.busy && this.#queue.length === 0 && !this.#flushing) p.close().catch(() => undefined);
    }, this.#idleMs);
    this.#idleTimer.unref();
  }

  /**
   * FDB ops of one tick, run by one `bridge -force -batch -` process: iproute2's `ip` has no FDB
   * object, and entries are written in bursts (a peer's endpoints), so a process per burst is cheap.
   */
  #fdbQueue: { readonly op: Extract<NetlinkOp, { op: 'ensureFdb' | 'removeFdb' }>; readonly resolve: () => void; readonly reject: (e: TsnetError) => void }[] = [];

  #fdb(op: Extract<NetlinkOp, { op: 'ensureFdb' | 'removeFdb' }>): Promise<void> {
    if (this.#closed) return Promise.reject(new TsnetError('UNAVAILABLE', `netlink handle for netns ${this.#label} is closed`));
    return new Promise<void>((resolve, reject) => {
      this.#fdbQueue.push({ op, resolve, reject });
      if (this.#fdbQueue.length === 1) queueMicrotask(() => void this.#flushFdb());
    });
  }

  async #flushFdb(): Promise<void> {
    const jobs = this.#fdbQueue.splice(0);
    const lines = jobs.map((j) => fdbLine(j.op));
    let failures = new Map<number, string>();
    try {
      await run(inNetns(this.ns, [this.#bridge, '-force', '-batch', '-']), { input: `${lines.join('\n')}\n`, timeoutMs: this.#opTimeoutMs });
    } catch (err) {
      const d = execDetails(err);
      if (d === undefined || d.exitCode === null) {
        for (const j of jobs) j.reject(new TsnetError('UNAVAILABLE', `bridge fdb (netns ${this.#label}): ${err instanceof Error ? err.message : String(err)}`));
        return;
      }
      failures = batchFailures(d.stderr);
      if (failures.size === 0) failures = new Map(jobs.map((_, i) => [i + 1, d.stderr.trim() || `exited ${String(d.exitCode)}`]));
    }
    jobs.forEach((j, i) => {
      const message = failures.get(i + 1);
      if (message === undefined) return j.resolve();
      const code = classifyIpError(message);
      if (j.op.op === 'removeFdb' && code === 'NOT_FOUND') return j.resolve();
      j.reject(this.#fail(j.op, lines[i], message, code));
    });
  }

  /** Runs one validated mutation. */
  #mutate(op: NetlinkOp): Promise<void> {
    if (isFdbOp(op)) {
      return this.#fdb(op).catch((err: unknown) => {
        if (isCode(err, 'NOT_FOUND') && op.op === 'removeFdb') return;
        throw err;
      });
    }
    return this.#submit(this.#plan(op)).catch((err: unknown) => {
      // A namespace that is gone has none of the objects a remove targets.
      if (isRemove(op) && isCode(err, 'NOT_FOUND')) return;
      throw err;
    });
  }

  #fail(op: NetlinkOp, line: string | undefined, message: string, code = classifyIpError(message)): TsnetError {
    return new TsnetError(code, `${describeOp(op)} (netns ${this.#label}): ${message}`, {
      details: { netns: this.#label, command: line, stderr: message },
    });
  }

  #plan(op: NetlinkOp): Plan<void> {
    const lines = opLines(op, this.ns, this.#selfNetns);
    // ip exits (a fatal argument error) on a namespace path it cannot open: check first, so that a
    // missing peer namespace is a clean NOT_FOUND and the other operations in flight are unharmed.
    const peer = op.op === 'addVeth' ? op.peerNetns : op.op === 'addMacvlan' ? op.netns : undefined;
    const prepare =
      peer?.kind === 'path' && netnsLabel(peer) !== this.#label
        ? async (): Promise<void> => {
            await this.#checkNetns(peer, 'peerNetns');
          }
        : undefined;
    const reads = lines.map((l) => l.startsWith('addr show'));
    const finish = (outcomes: readonly LineOutcome[]): void => {
      // The first failed write line decides (an op may have several lines, e.g. setLink with port
      // options; read lines are answers, not failures).
      const first = outcomes.find((o, i) => !o.ok && !reads[i]);
      if (first === undefined || first.ok) return;
      const code = classifyIpError(first.message);
      if (op.op === 'ensureBridge' && code === 'ALREADY_EXISTS') {
        const read = outcomes[1];
        if (read?.ok === true && read.out !== undefined) {
          const link = parseIpLinks(read.out)[0];
          if (link?.ifname === op.name && link.linkinfo?.info_kind === 'bridge') return;
          throw this.#fail(op, lines[0], `${op.name} exists and is ${link?.linkinfo?.info_kind ? `a ${link.linkinfo.info_kind}` : 'not a bridge'}`, 'ALREADY_EXISTS');
        }
      }
      if (isRemove(op) && code === 'NOT_FOUND') return;
      throw this.#fail(op, lines[0], first.message, code);
    };
    return {
      lines,
      reads,
      ...(prepare ? { prepare } : {}),
      finish,
    };
  }

  /** One read line; NOT_FOUND (no such device) becomes undefined. */
  #read<T>(line: string, parse: (out: string) => T): Promise<T | undefined> {
    return this.#submit({
      lines: [line],
      reads: [true],
      finish: (outcomes) => {
        const o = outcomes[0];
        if (o === undefined) throw new TsnetError('INTERNAL', `ip ${line}: no outcome`);
        if (!o.ok) {
          const code = classifyIpError(o.message);
          if (code === 'NOT_FOUND') return undefined;
          // A dump that failed half-way may have left partial JSON in ip's stdout buffer: restart ip.
          this.#proc?.kill(`failed a read (${o.message})`);
          throw new TsnetError(code, `ip ${line} (netns ${this.#label}): ${o.message}`, { details: { netns: this.#label, command: line, stderr: o.message } });
        }
        try {
          return parse(o.out ?? '');
        } catch (err) {
          this.#proc?.kill('printed output that does not parse');
          throw err;
        }
      },
    });
  }

  // -- the API -------------------------------------------------------------------------------

  async getLink(name: IfName): Promise<Link | undefined> {
    const dev = checkIfName(name, 'name');
    const links = await this.#read(`addr show dev ${dev}`, parseIpLinks);
    const l = links?.[0];
    if (l === undefined) return undefined;
    if (l.ifname !== dev) throw badOutput('addr show', `asked for ${dev}, got ${l.ifname}`);
    return toLink(l);
  }

  async listLinks(): Promise<readonly Link[]> {
    const links = await this.#read('addr show', parseIpLinks);
    return (links ?? []).map(toLink);
  }

  async listAddrs(dev?: IfName): Promise<readonly Addr[]> {
    const d = dev === undefined ? undefined : checkIfName(dev, 'dev');
    const links = await this.#read(d === undefined ? 'addr show' : `addr show dev ${d}`, parseIpLinks);
    if (links === undefined) throw new TsnetError('NOT_FOUND', `list addresses (netns ${this.#label}): device ${String(d)} does not exist`, { details: { field: 'dev', value: d } });
    return links.flatMap(toAddrs);
  }

  async listRoutes(filter: { readonly family?: Family; readonly dev?: IfName } = {}): Promise<readonly Route[]> {
    const d = filter.dev === undefined ? undefined : checkIfName(filter.dev, 'dev');
    const routes = await this.#read(d === undefined ? 'route show table all' : `route show table all dev ${d}`, parseIpRoutes);
    if (routes === undefined) throw new TsnetError('NOT_FOUND', `list routes (netns ${this.#label}): device ${String(d)} does not exist`, { details: { field: 'dev', value: d } });
    return filter.family === undefined ? routes : routes.filter((r) => r.family === filter.family);
  }

  addBridge(name: IfName, opts: BridgeOptions = {}): Promise<void> {
    return this.#one({ op: 'addBridge', name, ...opts });
  }
  ensureBridge(name: IfName, opts: BridgeOptions = {}): Promise<void> {
    return this.#one({ op: 'ensureBridge', name, ...opts });
  }
  addVeth(spec: VethSpec): Promise<void> {
    return this.#one({ op: 'addVeth', ...spec });
  }
  addMacvlan(spec: MacvlanSpec): Promise<void> {
    return this.#one({ op: 'addMacvlan', ...spec });
  }
  addVxlan(spec: VxlanSpec): Promise<void> {
    return this.#one({ op: 'addVxlan', ...spec });
  }
  async listNeighs(dev: IfName): Promise<readonly Neigh[]> {
    const d = checkIfName(dev, 'dev');
    const got = await this.#read(`neigh show dev ${d}`, (out) => parseIpNeighs(out, d));
    if (got === undefined) throw new TsnetError('NOT_FOUND', `list neighbours (netns ${this.#label}): device ${d} does not exist`, { details: { field: 'dev', value: d } });
    return got;
  }
  ensureNeigh(n: Neigh): Promise<void> {
    return this.#one({ op: 'ensureNeigh', ...n });
  }
  removeNeigh(dev: IfName, ip: IpAddr): Promise<void> {
    return this.#one({ op: 'removeNeigh', dev, ip });
  }
  async listFdb(dev: IfName): Promise<readonly FdbEntry[]> {
    const d = checkIfName(dev, 'dev');
    if ((await this.getLink(d)) === undefined) throw new TsnetError('NOT_FOUND', `list fdb (netns ${this.#label}): device ${d} does not exist`, { details: { field: 'dev', value: d } });
    const { stdout } = await run(inNetns(this.ns, [this.#bridge, '-json', 'fdb', 'show', 'dev', d]), { timeoutMs: this.#opTimeoutMs }).catch((err: unknown) => {
      throw new TsnetError('UNAVAILABLE', `list fdb (netns ${this.#label}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    });
    return parseBridgeFdb(stdout, d);
  }
  ensureFdb(e: FdbEntry): Promise<void> {
    return this.#one({ op: 'ensureFdb', ...e });
  }
  removeFdb(e: FdbEntry): Promise<void> {
    return this.#one({ op: 'removeFdb', ...e });
  }
  removeLink(name: IfName): Promise<void> {
    return this.#one({ op: 'removeLink', name });
  }
  setLink(name: IfName, changes: LinkChanges): Promise<void> {
    return this.#one({ op: 'setLink', name, changes });
  }
  addAddr(dev: IfName, prefix: Prefix, opts: AddrOptions = {}): Promise<void> {
    return this.#one({ op: 'addAddr', dev, prefix, ...opts });
  }
  ensureAddr(dev: IfName, prefix: Prefix, opts: AddrOptions = {}): Promise<void> {
    return this.#one({ op: 'ensureAddr', dev, prefix, ...opts });
  }
  removeAddr(dev: IfName, prefix: Prefix): Promise<void> {
    return this.#one({ op: 'removeAddr', dev, prefix });
  }
  addRoute(route: RouteSpec): Promise<void> {
    return this.#one({ op: 'addRoute', route });
  }
  ensureRoute(route: RouteSpec): Promise<void> {
    return this.#one({ op: 'ensureRoute', route });
  }
  removeRoute(route: RouteSpec): Promise<void> {
    return this.#one({ op: 'removeRoute', route });
  }

  #one(op: NetlinkOp): Promise<void> {
    let valid: NetlinkOp;
    try {
      valid = validateOp(op);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#mutate(valid);
  }

  async batch(ops: readonly NetlinkOp[]): Promise<readonly BatchResult[]> {
    if (this.#closed) throw new TsnetError('UNAVAILABLE', `netlink handle for netns ${this.#label} is closed`);
    const valid = validateOps(ops); // throws before anything is queued
    return Promise.all(
      valid.map((op) =>
        this.#mutate(op).then(
          (): BatchResult => ({ ok: true }),
          (err: unknown): BatchResult => ({ ok: false, error: asTsnet(err) }),
        ),
      ),
    );
  }

  close(): Promise<void> {
    this.#closeDone ??= (async () => {
      this.#closed = true;
      clearTimeout(this.#idleTimer);
      clearInterval(this.#leakTimer);
      await this.#flushDone; // everything queued has been written
      const p = this.#proc ?? (await this.#starting?.catch(() => undefined));
      if (p) await p.close(); // EOF: ip runs what it was sent, reports it, and exits
      this.#onClosed();
    })();
    return this.#closeDone;
  }
}

/** A handle for one namespace. Prefer `createIproute2NetlinkFor`, which shares handles. */
export function createIproute2Netlink(ns: NetnsRef, deps: Iproute2Deps = {}): Iproute2Netlink {
  return new Iproute2Handle(ns, deps, () => undefined);
}

export interface Iproute2NetlinkCache extends NetlinkCache {
  (ns: NetnsRef): Iproute2Netlink;
}

/** One handle per namespace, created on first use; `closeAll` at exit. */
export function createIproute2NetlinkFor(deps: Iproute2Deps = {}): Iproute2NetlinkCache {
  const handles = new Map<string, Iproute2Handle>();
  const get = (ns: NetnsRef): Iproute2Netlink => {
    const key = netnsLabel(ns);
    let h = handles.get(key);
    if (h === undefined) {
      const handle: Iproute2Handle = new Iproute2Handle(ns, deps, () => {
        if (handles.get(key) === handle) handles.delete(key);
      });
      h = handle;
      handles.set(key, h);
    }
    return h;
  };
  return Object.assign(get, {
    async release(ns: NetnsRef): Promise<void> {
      await handles.get(netnsLabel(ns))?.close();
    },
    async closeAll(): Promise<void> {
      await Promise.all([...handles.values()].map((h) => h.close()));
    },
  });
}
