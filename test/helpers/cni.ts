/**
 * A libcni-style runtime for tests and benchmarks: drives CNI plugin binaries as separate processes
 * exactly as libcni does (CNI_* environment, the derived per-plugin request on stdin: `name`,
 * `cniVersion`, `runtimeConfig` from declared capabilities, `prevResult`; ADD in list order with the
 * result chained, DEL in reverse order with the cached final ADD result, CHECK in order, GC to
 * every plugin with `cni.dev/valid-attachments` after DEL of cached attachments not listed, STATUS
 * to every plugin), with libcni's result cache at `<cacheDir>/results/<net>-<cid>-<ifname>`.
 *
 * Plugins run in the test's "host" namespace (nsenter), found on `cniPath` (a directory holding
 * tsnet's bundled binaries as `tsnet-*` and the reference plugins of /usr/lib/cni).
 */
import { mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NetnsRef } from '../../core/net.js';
import { execDetails, inNetns, run } from '../../sys/exec.js';
import type { IsolatedHost } from './isolated-host.js';

export const DIST = fileURLToPath(new URL('../../dist/', import.meta.url));
export const REFERENCE_DIR = '/usr/lib/cni';
export const TSNET_PLUGINS = ['tsnet-bridge', 'tsnet-ipam', 'tsnet-portmap', 'tsnet-macvlan'] as const;

export interface ExecResult {
  readonly exit: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed, if it is JSON. */
  readonly json: Record<string, unknown> | undefined;
}

/** A CNI_PATH directory with tsnet's bundles (as `tsnet-*`) and links to the reference plugins. */
export async function makeCniPath(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const p of TSNET_PLUGINS) await symlink(join(DIST, `${p}.cjs`), join(dir, p)).catch(() => undefined);
  for (const p of await readdir(REFERENCE_DIR).catch(() => [] as string[])) await symlink(join(REFERENCE_DIR, p), join(dir, p)).catch(() => undefined);
  return dir;
}

/** Runs one plugin binary once in namespace `ns` with `env` and `stdin`. */
export async function execPlugin(ns: NetnsRef, bin: string, env: Readonly<Record<string, string>>, stdin: string, timeoutMs = 60_000): Promise<ExecResult> {
  const parse = (s: string): Record<string, unknown> | undefined => {
    try {
      return JSON.parse(s) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  try {
    const r = await run(inNetns(ns, [bin]), { env, input: stdin, timeoutMs });
    return { exit: 0, stdout: r.stdout, stderr: r.stderr, json: parse(r.stdout) };
  } catch (err) {
    const d = execDetails(err);
    if (!d || d.exitCode === null) throw err;
    return { exit: d.exitCode, stdout: d.stdout, stderr: d.stderr, json: parse(d.stdout) };
  }
}

export interface Conflist {
  readonly cniVersion: string;
  /** Versions the list may be run at; the runtime picks the highest it supports (libcni 1.2). */
  readonly cniVersions?: readonly string[];
  readonly name: string;
  readonly plugins: readonly Record<string, unknown>[];
}

export interface Attachment {
  readonly containerId: string;
  readonly netns: string;
  readonly ifName: string;
  /** Capability arguments offered by the runtime (portMappings, ips, mac, ...). */
  readonly capabilityArgs?: Readonly<Record<string, unknown>>;
  /** CNI_ARGS. */
  readonly args?: string;
}

export class CniError extends Error {
  readonly result: ExecResult;
  readonly plugin: string;
  constructor(plugin: string, verb: string, r: ExecResult) {
    super(`${plugin} ${verb} exited ${r.exit}: ${r.stdout.trim()} ${r.stderr.trim().split('\n').slice(-2).join(' ')}`);
    this.result = r;
    this.plugin = plugin;
  }
  get code(): number | undefined {
    const c = this.result.json?.['code'];
    return typeof c === 'number' ? c : undefined;
  }
}

export class Libcni {
  readonly ns: NetnsRef;
  readonly cniPath: string;
  readonly cacheDir: string;
  /** Per plugin process (the benchmark raises it: the reference chain needs minutes at 200 in parallel). */
  readonly timeoutMs: number;
  /** More environment for every plugin process (a runtime's own environment is inherited by its plugins: e.g. TSNET_CNI_SOCKET). */
  readonly extraEnv: Readonly<Record<string, string>>;
  constructor(opts: { readonly ns: NetnsRef; readonly cniPath: string; readonly cacheDir: string; readonly timeoutMs?: number; readonly extraEnv?: Readonly<Record<string, string>> }) {
    this.ns = opts.ns;
    this.extraEnv = opts.extraEnv ?? {};
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.cniPath = opts.cniPath;
    this.cacheDir = opts.cacheDir;
  }

  private cachePath(net: string, a: { containerId: string; ifName: string }): string {
    return join(this.cacheDir, 'results', `${net}-${a.containerId}-${a.ifName}`);
  }

  /** The version a list runs at: the highest of `cniVersions` this runtime speaks, else `cniVersion`. */
  static version(list: Conflist): string {
    const mine = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
    const num = (v: string): number => v.split('.').reduce((acc, p) => acc * 1000 + Number(p), 0);
    const ok = (list.cniVersions ?? []).filter((v) => mine.includes(v)).sort((a, b) => num(b) - num(a));
    return ok[0] ?? list.cniVersion;
  }

  /** The request libcni derives for one plugin of a list. */
  static request(list: Conflist, plugin: Record<string, unknown>, a: Attachment | undefined, prevResult: unknown): Record<string, unknown> {
    const { capabilities, ...rest } = plugin as { capabilities?: Record<string, boolean> };
    const req: Record<string, unknown> = { ...rest, cniVersion: Libcni.version(list), name: list.name };
    if (a !== undefined) {
      const rc: Record<string, unknown> = {};
      for (const [cap, on] of Object.entries(capabilities ?? {})) if (on && a.capabilityArgs?.[cap] !== undefined) rc[cap] = a.capabilityArgs[cap];
      if (Object.keys(rc).length > 0) req['runtimeConfig'] = rc;
    }
    if (prevResult !== undefined) req['prevResult'] = prevResult;
    return req;
  }

  env(verb: string, a: Attachment | undefined): Record<string, string> {
    return {
      ...this.extraEnv,
      CNI_COMMAND: verb,
      CNI_PATH: this.cniPath,
      ...(a ? { CNI_CONTAINERID: a.containerId, CNI_IFNAME: a.ifName, ...(a.netns !== '' ? { CNI_NETNS: a.netns } : {}), ...(a.args ? { CNI_ARGS: a.args } : {}) } : {}),
    };
  }

  async exec(type: string, verb: string, a: Attachment | undefined, req: Record<string, unknown>): Promise<ExecResult> {
    return execPlugin(this.ns, join(this.cniPath, type), this.env(verb, a), JSON.stringify(req), this.timeoutMs);
  }

  async addList(list: Conflist, a: Attachment): Promise<Record<string, unknown>> {
    let prev: unknown;
    for (const p of list.plugins) {
      const r = await this.exec(String(p['type']), 'ADD', a, Libcni.request(list, p, a, prev));
      if (r.exit !== 0) throw new CniError(String(p['type']), 'ADD', r);
      prev = r.json;
    }
    const result = prev as Record<string, unknown>;
    await mkdir(join(this.cacheDir, 'results'), { recursive: true });
    await writeFile(
      this.cachePath(list.name, a),
      JSON.stringify({ kind: 'cniCacheV1', containerId: a.containerId, config: Buffer.from(JSON.stringify(list)).toString('base64'), ifName: a.ifName, networkName: list.name, netns: a.netns, cniArgs: [], capabilityArgs: a.capabilityArgs ?? {}, result }),
    );
    return result;
  }

  async cached(net: string, a: { containerId: string; ifName: string }): Promise<Record<string, unknown> | undefined> {
    try {
      return (JSON.parse(await readFile(this.cachePath(net, a), 'utf8')) as { result: Record<string, unknown> }).result;
    } catch {
      return undefined;
    }
  }

  async delList(list: Conflist, a: Attachment): Promise<void> {
    const prev = await this.cached(list.name, a);
    for (const p of [...list.plugins].reverse()) {
      const r = await this.exec(String(p['type']), 'DEL', a, Libcni.request(list, p, a, prev));
      if (r.exit !== 0) throw new CniError(String(p['type']), 'DEL', r);
    }
    await rm(this.cachePath(list.name, a), { force: true });
  }

  async checkList(list: Conflist, a: Attachment): Promise<void> {
    const prev = await this.cached(list.name, a);
    if (prev === undefined) throw new Error(`no cached result for ${a.containerId}/${a.ifName}`);
    for (const p of list.plugins) {
      const r = await this.exec(String(p['type']), 'CHECK', a, Libcni.request(list, p, a, prev));
      if (r.exit !== 0) throw new CniError(String(p['type']), 'CHECK', r);
    }
  }

  async statusList(list: Conflist): Promise<void> {
    for (const p of list.plugins) {
      const r = await this.exec(String(p['type']), 'STATUS', undefined, Libcni.request(list, p, undefined, undefined));
      if (r.exit !== 0) throw new CniError(String(p['type']), 'STATUS', r);
    }
  }

  /** GCNetworkList: only the plugin GC part (cached-attachment DELs are the caller's choice). */
  async gcList(list: Conflist, valid: readonly { containerId: string; ifName: string }[]): Promise<void> {
    const errors: string[] = [];
    for (const p of list.plugins) {
      const req = { ...Libcni.request(list, p, undefined, undefined), 'cni.dev/valid-attachments': valid.map((v) => ({ containerID: v.containerId, ifname: v.ifName })) };
      const r = await this.exec(String(p['type']), 'GC', undefined, req);
      if (r.exit !== 0) errors.push(new CniError(String(p['type']), 'GC', r).message);
    }
    if (errors.length > 0) throw new Error(errors.join('; '));
  }
}

// ---------------------------------------------------------------------------------------------
// The world the CNI tests share.

export function bridgeList(version: string, dataDir: string, extra: Record<string, unknown> = {}): Conflist {
  return {
    cniVersion: version,
    name: 'tnet',
    plugins: [
      {
        type: 'tsnet-bridge',
        bridge: 'tcni0',
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: true,
        hairpinMode: true,
        capabilities: { portMappings: true, ips: true, mac: true },
        ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.77.0.0/24' }]], dataDir },
        ...extra,
      },
    ],
  };
}

export interface World {
  readonly host: IsolatedHost;
  readonly cni: Libcni;
  readonly dataDir: string;
}

export async function world(host: IsolatedHost): Promise<World> {
  const cniPath = await makeCniPath(join(host.runDir, 'cni-bin'));
  return { host, cni: new Libcni({ ns: host.ns, cniPath, cacheDir: join(host.stateDir, 'cni-cache') }), dataDir: join(host.stateDir, 'ipam') };
}

/** A neighbour on a link of its own to the host (192.168.77.2 → host 192.168.77.1). */
export async function neighbour(host: IsolatedHost): Promise<NetnsRef> {
  const n = await host.newNetns('nbr');
  await host.exec(['ip', 'link', 'add', 'vn0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nsPath(n)]);
  await host.exec(['ip', 'addr', 'add', '192.168.77.1/24', 'dev', 'vn0']);
  await host.exec(['ip', 'link', 'set', 'vn0', 'up']);
  await host.execIn(n, ['ip', 'addr', 'add', '192.168.77.2/24', 'dev', 'eth0']);
  await host.execIn(n, ['ip', 'link', 'set', 'eth0', 'up']);
  return n;
}

export const nsPath = (ns: NetnsRef): string => (ns.kind === 'path' ? ns.path : '/proc/self/ns/net');

export async function links(host: IsolatedHost): Promise<string[]> {
  const out = (await host.exec(['ip', '-json', 'link', 'show'])).stdout;
  return (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname).sort();
}

export async function reservations(dir: string, network = 'tnet'): Promise<string[]> {
  return (await readdir(join(dir, network)).catch(() => [] as string[])).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip')).sort();
}

/** CNI attachments' port elements in tsnet's nft maps (its masquerade sets left out). */
export async function nftElements(host: IsolatedHost): Promise<number> {
  const out = (await host.exec(['nft', 'list', 'ruleset'])).stdout;
  return out.split(/\n\t(?=map |set |chain )/).filter((b) => b.startsWith('map ')).reduce((n, b) => n + (b.match(/comment "cni-/g) ?? []).length, 0);
}

