/**
 * The CNI plugin skeleton: environment and stdin parsing, version negotiation, verb dispatch, the
 * spec's error JSON and the exit status. Pure apart from the injected I/O, so it is unit-tested
 * without root. Every plugin binary (bridge, ipam, portmap) runs through `dispatch`.
 *
 * Strictness, as libcni and the reference skel do it (summary in ../shared/reference/protocols.md §4.1):
 * - CNI_COMMAND missing or unknown, a required variable missing, a bad container id or interface
 *   name, a malformed CNI_ARGS: code 4 naming the variable.
 * - stdin not JSON (or not an object): 6. Network name missing or malformed, cniVersion missing: 7.
 * - A cniVersion tsnet does not speak, or a verb the version does not have (CHECK < 0.4.0,
 *   STATUS/GC < 1.1.0): 1.
 * CNI_PATH is optional (the spec requires it only for GC; lenient as a plugin), CNI_NETNS optional
 * for DEL.
 */
import { CNI_ERR, CniError, errorJson, toCniError } from './errors.js';
import { goField, isJsonObject as isObj } from './go-json.js';
import { compareVersions, isSupported, LATEST, SUPPORTED_VERSIONS, toWire, type CniVersion, type Result } from './spec.js';

export type Verb = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';
const VERBS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'] as const satisfies readonly Verb[];

/** The least configuration version that has the verb. */
const MIN_VERSION = { ADD: '0.3.0', DEL: '0.3.0', CHECK: '0.4.0', STATUS: '1.1.0', GC: '1.1.0', VERSION: '0.3.0' } as const satisfies Record<Verb, string>;

const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const IFNAME = /^[^/:\s]{1,15}$/;

export interface Attachment {
  readonly containerId: string;
  readonly ifName: string;
}

export interface Request {
  readonly verb: Exclude<Verb, 'VERSION'>;
  /** ADD/DEL/CHECK only. */
  readonly containerId: string;
  readonly ifName: string;
  /** Absent for DEL without a namespace, STATUS and GC. */
  readonly netns: string | undefined;
  /** CNI_ARGS as key/value pairs. */
  readonly args: ReadonlyMap<string, string>;
  /** CNI_PATH, split. */
  readonly path: readonly string[];
  readonly cniVersion: CniVersion;
  readonly name: string;
  /** The whole configuration object from stdin (unknown keys preserved, as the spec wants). */
  readonly config: Readonly<Record<string, unknown>>;
  /** stdin verbatim, handed to delegated plugins. */
  readonly stdin: string;
  /** The process environment (CNI_*), handed to delegated plugins. */
  readonly env: Readonly<Record<string, string>>;
}

export interface Plugin {
  add(req: Request): Promise<Result>;
  del(req: Request): Promise<void>;
  check(req: Request): Promise<void>;
  status(req: Request): Promise<void>;
  /** `valid`: the attachments listed in `cni.dev/valid-attachments`. */
  gc(req: Request, valid: readonly Attachment[]): Promise<void>;
}

export interface CniIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readStdin(): Promise<string>;
  /** stdout: the result or the error object, nothing else. */
  write(text: string): void;
}

function envError(name: string, why: string): CniError {
  return new CniError(CNI_ERR.INVALID_ENV, `${name}: ${why}`, `invalid environment variable ${name}`);
}

/** CNI_ARGS `K=V;K2=V2` (empty pieces ignored). */
export function parseCniArgs(raw: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (raw === undefined || raw === '') return out;
  for (const piece of raw.split(';')) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    if (eq <= 0) throw envError('CNI_ARGS', `${JSON.stringify(piece)} is not KEY=VALUE`);
    out.set(piece.slice(0, eq), piece.slice(eq + 1));
  }
  return out;
}

/**
 * The CNI_ARGS keys the plugins read or runtimes send by convention: the Kubernetes pod keys
 * (containerd and CRI-O send them, with IgnoreUnknown=1), the `ips`/`mac` conventions, Podman's.
 */
export const KNOWN_CNI_ARGS = ['IgnoreUnknown', 'IP', 'MAC', 'K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID'] as const;

/**
 * As the reference plugins' types.LoadArgs: an unknown key is an error unless IgnoreUnknown is "1"
 * or "true" (any case); IgnoreUnknown of another value is an error itself.
 */
export function checkCniArgs(args: Map<string, string>): Map<string, string> {
  const ignore = args.get('IgnoreUnknown');
  let lenient = false;
  if (ignore !== undefined) {
    const v = ignore.toLowerCase();
    if (v === '1' || v === 'true') lenient = true;
    else if (v !== '0' && v !== 'false') throw envError('CNI_ARGS', `IgnoreUnknown=${JSON.stringify(ignore)}: must be 1, 0, true or false`);
  }
  const unknown = [...args.keys()].filter((k) => !(KNOWN_CNI_ARGS as readonly string[]).includes(k));
  if (unknown.length > 0 && !lenient) throw envError('CNI_ARGS', `unknown argument${unknown.length === 1 ? '' : 's'} ${unknown.join(', ')} (known: ${KNOWN_CNI_ARGS.join(', ')}; IgnoreUnknown=1 ignores others)`);
  return args;
}

export interface ParsedEnv {
  readonly verb: Verb;
  readonly containerId: string;
  readonly ifName: string;
  readonly netns: string | undefined;
  readonly args: Map<string, string>;
  readonly path: string[];
}

export function parseEnv(env: Readonly<Record<string, string | undefined>>): ParsedEnv {
  const cmd = env['CNI_COMMAND'];
  if (cmd === undefined || cmd === '') throw envError('CNI_COMMAND', 'missing');
  if (!(VERBS as readonly string[]).includes(cmd)) throw envError('CNI_COMMAND', `unknown command ${JSON.stringify(cmd)} (expected ${VERBS.join(', ')})`);
  const verb = cmd as Verb;
  const perAttachment = verb === 'ADD' || verb === 'DEL' || verb === 'CHECK';
  let containerId = '';
  let ifName = '';
  let netns: string | undefined;
  if (perAttachment) {
    containerId = env['CNI_CONTAINERID'] ?? '';
    if (containerId === '') throw envError('CNI_CONTAINERID', 'missing');
    if (!CONTAINER_ID.test(containerId)) throw envError('CNI_CONTAINERID', `${JSON.stringify(containerId)}: must be letters, digits, '_', '.', '-', starting with a letter or digit`);
    ifName = env['CNI_IFNAME'] ?? '';
    if (ifName === '') throw envError('CNI_IFNAME', 'missing');
    if (!IFNAME.test(ifName) || Buffer.byteLength(ifName) > 15 || ifName === '.' || ifName === '..') {
      throw envError('CNI_IFNAME', `${JSON.stringify(ifName)}: must be 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'`);
    }
    const ns = env['CNI_NETNS'];
    if (ns !== undefined && ns !== '') {
      if (!ns.startsWith('/') || ns.includes('\0')) throw envError('CNI_NETNS', `${JSON.stringify(ns)}: must be an absolute path`);
      netns = ns;
    } else if (verb !== 'DEL') {
      throw envError('CNI_NETNS', 'missing');
    }
  }
  const args = perAttachment ? checkCniArgs(parseCniArgs(env['CNI_ARGS'])) : new Map<string, string>();
  const path = (env['CNI_PATH'] ?? '').split(':').filter((p) => p !== '');
  return { verb, containerId, ifName, netns, args, path };
}

/** stdin → the configuration object, its version and network name. */
export function parseConfig(stdin: string, verb: Verb): { config: Record<string, unknown>; cniVersion: CniVersion; name: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(CNI_ERR.DECODE, `network configuration on stdin: not JSON: ${err instanceof Error ? err.message : String(err)}`, 'decoding failure');
  }
  if (!isObj(raw)) throw new CniError(CNI_ERR.DECODE, 'network configuration on stdin: must be a JSON object', 'decoding failure');
  const v = goField(raw, 'cniVersion');
  if (v === undefined || v === '') throw new CniError(CNI_ERR.INVALID_CONFIG, 'cniVersion: missing', 'invalid network configuration');
  if (typeof v !== 'string') throw new CniError(CNI_ERR.INVALID_CONFIG, 'cniVersion: must be a string', 'invalid network configuration');
  if (!isSupported(v)) {
    throw new CniError(CNI_ERR.INCOMPATIBLE_VERSION, `cniVersion: ${JSON.stringify(v)} is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`, 'incompatible CNI versions');
  }
  if (compareVersions(v, MIN_VERSION[verb]) < 0) {
    throw new CniError(CNI_ERR.INCOMPATIBLE_VERSION, `cniVersion: ${v} does not allow ${verb} (needs ${MIN_VERSION[verb]} or later)`, `config version does not allow ${verb}`);
  }
  const name = goField(raw, 'name');
  if (typeof name !== 'string' || name === '') throw new CniError(CNI_ERR.INVALID_CONFIG, 'name: missing network name', 'invalid network configuration');
  if (!NETWORK_NAME.test(name)) throw new CniError(CNI_ERR.INVALID_CONFIG, `name: ${JSON.stringify(name)}: must be letters, digits, '_', '.', '-', starting with a letter or digit`, 'invalid network configuration');
  // The name is a directory name (host-local's dataDir/<name>): a file name's limit.
  if (Buffer.byteLength(name) > 255) throw new CniError(CNI_ERR.INVALID_CONFIG, `name: ${Buffer.byteLength(name)} bytes: at most 255 (it names the network's IPAM directory)`, 'invalid network configuration');
  return { config: raw, cniVersion: v, name };
}

/** `cni.dev/valid-attachments` of a GC request. */
export function parseValidAttachments(config: Readonly<Record<string, unknown>>): Attachment[] {
  const raw = goField(config, 'cni.dev/valid-attachments', 'nullable');
  const field = 'cni.dev/valid-attachments';
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw new CniError(CNI_ERR.INVALID_CONFIG, `${field}: must be a list`, 'invalid network configuration');
  return raw.map((a: unknown, i) => {
    const containerId = goField(a, 'containerID');
    const ifName = goField(a, 'ifname');
    if (typeof containerId !== 'string' || typeof ifName !== 'string') {
      throw new CniError(CNI_ERR.INVALID_CONFIG, `${field}[${i}]: must be {"containerID": string, "ifname": string}`, 'invalid network configuration');
    }
    return { containerId, ifName };
  });
}

function versionReply(stdin: string): string {
  let v: string = LATEST;
  try {
    const raw: unknown = JSON.parse(stdin);
    const cv = goField(raw, 'cniVersion');
    if (typeof cv === 'string') v = cv;
  } catch {
    // VERSION without a configuration: answer for the latest
  }
  return `${JSON.stringify({ cniVersion: v, supportedVersions: [...SUPPORTED_VERSIONS] })}\n`;
}

/** Runs one plugin invocation; returns the exit status (0 success, 1 failure with the error JSON on stdout). */
export async function dispatch(io: CniIo, load: () => Promise<Plugin>): Promise<number> {
  let version: string = LATEST;
  let verb = 'UNKNOWN';
  try {
    const e = parseEnv(io.env);
    verb = e.verb;
    const stdin = await io.readStdin();
    if (e.verb === 'VERSION') {
      io.write(versionReply(stdin));
      return 0;
    }
    const { config, cniVersion, name } = parseConfig(stdin, e.verb);
    version = cniVersion;
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(io.env)) if (k.startsWith('CNI_') && v !== undefined) env[k] = v;
    const req: Request = { verb: e.verb, containerId: e.containerId, ifName: e.ifName, netns: e.netns, args: e.args, path: e.path, cniVersion, name, config, stdin, env };
    const plugin = await load();
    switch (req.verb) {
      case 'ADD':
        io.write(`${JSON.stringify(toWire(await plugin.add(req), cniVersion))}\n`);
        return 0;
      case 'DEL':
        await plugin.del(req);
        return 0;
      case 'CHECK':
        await plugin.check(req);
        return 0;
      case 'STATUS':
        await plugin.status(req);
        return 0;
      case 'GC':
        await plugin.gc(req, parseValidAttachments(config));
        return 0;
    }
  } catch (err) {
    io.write(errorJson(toCniError(err, verb), version));
    return 1;
  }
}
