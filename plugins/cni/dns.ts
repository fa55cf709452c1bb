/**
 * tsnet-bridge's side of tsnet's embedded DNS: the `aliases` capability and the attachment records
 * the daemon's resolver answers from (sys/store/cni-attachments.ts, merged with the CNM records by
 * cnm/dns.ts). Parsing is pure; the rest goes through `CniDeps.dnsRegistry`.
 *
 * `runtimeConfig.aliases` comes in two shapes, both accepted:
 * - `{"<network name>": ["name1", "name2"]}`: what runtimes send. Podman's CNI backend sets
 *   `CapabilityArgs["aliases"] = map[string][]string{networkName: opts.Aliases}` "for the dnsname
 *   plugin" (containers/podman libpod/network/cni/run.go, getRuntimeConfig), and dnsname reads
 *   `RuntimeConfig.Aliases[netConf.Name]` (containers/dnsname plugins/meta/dnsname/main.go, cmdAdd).
 *   Only this network's entry is used; the entries of other networks are checked for shape only.
 * - `["name1", "name2"]`: the plain list of the capability's summary in CNI's CONVENTIONS.md.
 * Podman also passes the container's name as `K8S_POD_NAME` in CNI_ARGS (for dnsname, which
 * registers it with the aliases): it becomes the attachment's first (canonical) name when it is a
 * valid DNS name, and is skipped otherwise (it is not the plugin's input to judge).
 */
import { TsnetError } from '../../core/errors.js';
import { addrFamily, type IpAddr, type Prefix } from '../../core/net.js';
import type { UndoStack } from '../../core/undo.js';
import type { CniDnsRegistry } from '../../sys/store/api.js';
import type { CniDeps } from './deps.js';
import { goField, goPath, isJsonObject as isObj } from './go-json.js';
import { cniEndpointId, cniEndpointPrefix, cniNetworkId } from './names.js';
import type { Attachment, Request } from './skel.js';
import type { Dns } from './spec.js';

/** How long ADD/DEL/GC wait for the daemon's reload ack; beyond it they go on (never fail). */
export const RELOAD_TIMEOUT_MS = 1000;
/** Names per attachment at most (a bound on the record's size). */
export const MAX_NAMES = 64;

/** One or more dot-separated labels of letters, digits, '_' and '-' (not at a label's ends), ≤ 253 bytes. */
const LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
const DNS_NAME = new RegExp(`^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})*$`);
export const isDnsName = (s: string): boolean => DNS_NAME.test(s);

export interface DnsDirs {
  /** tsnet's state directory (`tsnetStateDir`; default: the plugin's, TSNET_STATE_DIR or /var/lib/tsnet). */
  readonly stateDir: string | undefined;
  /** tsnet's run directory, where the daemon's socket is (`tsnetRunDir`; default /run/tsnet). */
  readonly runDir: string | undefined;
}

export interface DnsConf extends DnsDirs {
  /** Register the attachment with tsnet's DNS (and name the gateway as its nameserver). */
  readonly enabled: boolean;
  /** This network's aliases, validated. */
  readonly aliases: readonly string[];
}


function invalid(field: string, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${why}`, { details: { field } });
}

function dir(config: Readonly<Record<string, unknown>>, key: string): string | undefined {
  const v = goField(config, key);
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !v.startsWith('/') || v.includes('\0')) throw invalid(key, `must be an absolute path, got ${JSON.stringify(v)}`);
  return v;
}

/** `tsnetStateDir` and `tsnetRunDir` (all DEL and GC need). */
export function parseDnsDirs(config: Readonly<Record<string, unknown>>): DnsDirs {
  return { stateDir: dir(config, 'tsnetStateDir'), runDir: dir(config, 'tsnetRunDir') };
}

function nameList(raw: unknown, field: string, check: boolean): string[] {
  if (!Array.isArray(raw)) throw invalid(field, 'must be a list of names');
  if (raw.length > MAX_NAMES) throw invalid(field, `at most ${MAX_NAMES} names, got ${raw.length}`);
  return raw.map((n: unknown, i) => {
    if (typeof n !== 'string') throw invalid(`${field}[${i}]`, `must be a string, got ${JSON.stringify(n)}`);
    if (check && !isDnsName(n)) throw invalid(`${field}[${i}]`, `${JSON.stringify(n)} is not a DNS name (labels of letters, digits, '_', '-', at most 63 bytes each, 253 in all)`);
    return n;
  });
}

/** `runtimeConfig.aliases` for network `network` (either shape; see the header). */
export function parseAliases(config: Readonly<Record<string, unknown>>, network: string): string[] | undefined {
  const raw = goPath(config, ['runtimeConfig', 'aliases'], 'nullable');
  if (raw === undefined) return undefined;
  const field = 'runtimeConfig.aliases';
  if (Array.isArray(raw)) return nameList(raw, field, true);
  if (!isObj(raw)) throw invalid(field, 'must be an object {"<network name>": [names]} or a list of names');
  let mine: string[] = [];
  for (const [net, list] of Object.entries(raw)) {
    const names = nameList(list, `${field}.${net}`, net === network);
    if (net === network) mine = names;
  }
  return mine;
}

/**
 * Whether and how the attachment is registered. `tsnetDns` (boolean) decides when given; otherwise
 * DNS is on when the configuration declares the `aliases` capability or the runtime passed
 * `runtimeConfig.aliases` (Podman does so only for networks with DNS enabled). The resolver listens
 * on the bridge's gateway, so DNS needs `isGateway`.
 */
export function parseDnsConf(config: Readonly<Record<string, unknown>>, network: string, isGateway: boolean): DnsConf {
  const flag = goField(config, 'tsnetDns');
  if (flag !== undefined && typeof flag !== 'boolean') throw invalid('tsnetDns', `must be true or false, got ${JSON.stringify(flag)}`);
  // capabilities is a map: its keys (capability names) match exactly, as in libcni
  const caps = goField(config, 'capabilities', 'nullable');
  const declared = isObj(caps) && caps['aliases'] === true;
  const aliases = parseAliases(config, network);
  const enabled = flag ?? (declared || aliases !== undefined);
  if (enabled && !isGateway) throw invalid(flag === true ? 'tsnetDns' : 'runtimeConfig.aliases', 'tsnet\'s DNS answers on the bridge\'s gateway address: set isGateway (or isDefaultGateway) to true, or tsnetDns to false');
  return { ...parseDnsDirs(config), enabled, aliases: aliases ?? [] };
}

/** The attachment's names: the container name (K8S_POD_NAME, when a DNS name), the aliases, the short container id. */
export function attachmentNames(req: Pick<Request, 'args' | 'containerId'>, aliases: readonly string[]): string[] {
  const pod = req.args.get('K8S_POD_NAME');
  const names = [...(pod !== undefined && isDnsName(pod) ? [pod] : []), ...aliases, req.containerId.slice(0, 12)];
  const seen = new Set<string>();
  return names.filter((n) => {
    const k = n.toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** The resolver address a container on the network is told about: the first IPv4 gateway, else the first. */
export function resolverOf(gateways: readonly IpAddr[]): IpAddr | undefined {
  return gateways.find((g) => addrFamily(g) === 4) ?? gateways[0];
}

/** The result's `dns` with the resolver first among the nameservers (as dnsname does). */
export function withResolver(dns: Dns | undefined, resolver: IpAddr | undefined): Dns | undefined {
  if (resolver === undefined) return dns;
  return { ...dns, nameservers: [resolver, ...(dns?.nameservers ?? []).filter((n) => n !== resolver)] };
}

/** Has a running daemon reload: false if none runs; true if one acked, or is there but did not ack in time (logged). */
async function reload(reg: CniDnsRegistry, deps: Pick<CniDeps, 'log'>, why: string): Promise<boolean> {
  try {
    return await reg.reload(RELOAD_TIMEOUT_MS);
  } catch (err) {
    deps.log.warn(`the tsnet daemon did not ack the reload after ${why} (names follow at its next reload)`, { err: err instanceof Error ? err.message : String(err) });
    return true;
  }
}

/**
 * ADD: writes the attachment's record (undone by `undo`) and has a running daemon reload, waiting
 * for its ack: the resolver answers only sources it knows, so a container that asked before the
 * reload would be ignored and wait for its resolver's retry (5 s with glibc). The daemon re-reads
 * only changed records, so the wait stays small and flat in the number of containers. Returns
 * the resolver address for the result: undefined when DNS is off, and also when no daemon runs (the
 * record stays and is served once one starts, but a container is not pointed at a gateway where
 * nothing answers: it keeps the runtime's default resolvers).
 */
export async function dnsAdd(
  deps: Pick<CniDeps, 'dnsRegistry' | 'log'>,
  req: Request,
  conf: DnsConf,
  o: { readonly addresses: readonly IpAddr[]; readonly subnets: readonly { readonly subnet: Prefix; readonly gateway: IpAddr }[]; readonly undo: UndoStack },
): Promise<IpAddr | undefined> {
  if (!conf.enabled) return undefined;
  const gateways = [...new Set(o.subnets.map((s) => s.gateway))];
  if (gateways.length === 0) throw invalid('ipam', 'tsnet\'s DNS needs a gateway address on the network, and the IPAM result has none');
  const reg = deps.dnsRegistry(conf);
  const id = cniEndpointId(req.name, req.containerId, req.ifName);
  await reg.put(id, {
    networkId: cniNetworkId(req.name),
    network: req.name,
    gateways,
    subnets: [...new Set(o.subnets.map((s) => s.subnet))],
    containerId: req.containerId,
    ifName: req.ifName,
    addresses: [...o.addresses],
    names: attachmentNames(req, conf.aliases),
  });
  o.undo.push('dns record', async () => {
    if (await reg.remove(id)) await reload(reg, deps, 'a failed ADD');
  });
  return (await reload(reg, deps, 'ADD')) ? resolverOf(gateways) : undefined;
}

/** CHECK: with DNS on, the attachment's record must be there (NOT_FOUND naming it otherwise). */
export async function dnsCheck(deps: Pick<CniDeps, 'dnsRegistry'>, req: Request, conf: DnsConf): Promise<void> {
  if (!conf.enabled) return;
  const id = cniEndpointId(req.name, req.containerId, req.ifName);
  if (!(await deps.dnsRegistry(conf).ids(id)).includes(id)) {
    throw new TsnetError('NOT_FOUND', `tsnet DNS record of ${req.containerId}/${req.ifName} is missing (names not served)`, { details: { field: 'runtimeConfig.aliases' } });
  }
}

/** DEL: removes the attachment's record if there is one (idempotent); a running daemon reloads. */
export async function dnsDel(deps: Pick<CniDeps, 'dnsRegistry' | 'log'>, req: Request): Promise<void> {
  const reg = deps.dnsRegistry(parseDnsDirs(req.config));
  if (await reg.remove(cniEndpointId(req.name, req.containerId, req.ifName))) await reload(reg, deps, 'DEL');
}

/** GC: removes the records of this network's attachments that are not in `valid`. */
export async function dnsGc(deps: Pick<CniDeps, 'dnsRegistry' | 'log'>, req: Request, valid: readonly Attachment[]): Promise<string[]> {
  const reg = deps.dnsRegistry(parseDnsDirs(req.config));
  const keep = new Set<string>(valid.map((a) => cniEndpointId(req.name, a.containerId, a.ifName)));
  const prefix = cniEndpointPrefix(req.name);
  const stale = (await reg.ids(prefix)).filter((id) => !keep.has(id));
  const removed: string[] = [];
  for (const id of stale) if (await reg.remove(id)) removed.push(id);
  await reg.removeStaleTemps((id) => !id.startsWith(prefix) || keep.has(id));
  if (removed.length > 0) await reload(reg, deps, 'GC');
  return removed;
}
