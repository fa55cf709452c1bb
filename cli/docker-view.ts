/**
 * Docker's output contract for containers and networks: the `docker ps` fields (table, templates,
 * `--format json` keys), the `docker inspect` shape (State, Config, HostConfig, NetworkSettings,
 * tsnet's own fields beside them), `docker network ls` fields, and Docker's human durations
 * ("Up 5 seconds", "Exited (1) 2 minutes ago"). Pure: records in, plain objects out.
 */
import type { EndpointRecord, NetworkRecord, SandboxRecord } from '../cnm/model.js';
import type { ContainerRecord } from '../runtime/spec.js';
import { portBindings } from './ports.js';
import { goMap } from './template.js';

/** go-units HumanDuration, as Docker's CLI prints ages. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(ms / 60_000);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(ms / 3_600_000);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(ms / 3_600_000 / 24 / 365)} years`;
}

/** Docker's STATUS column. */
export function statusText(r: ContainerRecord, now: Date): string {
  if (r.status === 'running') return `Up ${humanDuration(now.getTime() - Date.parse(r.startedAt ?? r.createdAt))}`;
  if (r.status === 'exited') {
    if (r.startedAt === null && r.exitCode === null) return 'Created';
    return `Exited (${r.exitCode ?? 255}) ${humanDuration(now.getTime() - Date.parse(r.finishedAt ?? r.createdAt))} ago`;
  }
  return 'Created';
}

/** Docker's State.Status. */
export const stateOf = (r: ContainerRecord): 'created' | 'running' | 'exited' => (r.status === 'exited' && r.startedAt === null && r.exitCode === null ? 'created' : r.status);

/** Go's time.Time String(): "2006-01-02 15:04:05 +0000 UTC". */
export function goTime(iso: string): string {
  const d = new Date(iso);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000 UTC`;
}

const ellipsis = (s: string, n: number): string => ([...s].length <= n ? s : `${[...s].slice(0, n - 1).join('')}…`);
const labelsText = (l: Readonly<Record<string, string>>): string => Object.entries(l).map(([k, v]) => `${k}=${v}`).join(',');

/** Docker's PORTS column: "0.0.0.0:8080->80/tcp, :::8080->80/tcp". */
export function portsText(eps: readonly EndpointRecord[]): string {
  const b = portBindings(eps.flatMap((e) => e.ports));
  return Object.keys(b)
    .sort((x, y) => Number.parseInt(x, 10) - Number.parseInt(y, 10) || x.localeCompare(y))
    .flatMap((k) => (b[k] ?? []).map((h) => `${h.HostIp === '::' ? '::' : h.HostIp.includes(':') ? `[${h.HostIp}]` : h.HostIp}:${h.HostPort}->${k}`))
    .join(', ');
}

export interface ContainerView {
  readonly record: ContainerRecord;
  readonly sandbox: SandboxRecord | undefined;
  readonly endpoints: readonly EndpointRecord[];
  /** Network names of the container (attached now, or configured while it is stopped). */
  readonly networks: readonly string[];
}

/** The object `docker ps --format` templates see (and `--format json` prints). */
export function psFields(v: ContainerView, now: Date, trunc: boolean): Record<string, unknown> {
  const r = v.record;
  const command = r.argv.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ');
  const fields: Record<string, unknown> = {
    Command: JSON.stringify(trunc ? ellipsis(command, 20) : command),
    CreatedAt: goTime(r.createdAt),
    ID: trunc ? r.id.slice(0, 12) : r.id,
    Image: r.rootfs ?? '',
    Labels: labelsText(r.labels),
    LocalVolumes: '0',
    Mounts: '',
    Names: r.name,
    Networks: v.networks.join(','),
    Ports: portsText(v.endpoints),
    RunningFor: `${humanDuration(now.getTime() - Date.parse(r.createdAt))} ago`,
    Size: '0B',
    State: stateOf(r),
    Status: statusText(r, now),
  };
  Object.defineProperty(fields, 'Label', { value: (k: string) => r.labels[k] ?? '', enumerable: false });
  return fields;
}

/** Column names of the `ps` table (Docker's). */
export const PS_HEADERS: Readonly<Record<string, string | (() => string)>> = {
  ID: 'CONTAINER ID', Image: 'IMAGE', Command: 'COMMAND', CreatedAt: 'CREATED AT', RunningFor: 'CREATED', Ports: 'PORTS',
  State: 'STATE', Status: 'STATUS', Size: 'SIZE', Names: 'NAMES', Labels: 'LABELS', Label: () => 'LABEL', Mounts: 'MOUNTS',
  Networks: 'NETWORKS', LocalVolumes: 'LOCAL VOLUMES',
};
export const PS_TABLE = '{{.ID}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Networks}}\t{{.Names}}';

const ZERO_TIME = '0001-01-01T00:00:00Z';

/** The network settings the CLI keeps in a container's record (its `config`), as HostConfig shows them. */
export interface HostConfigView {
  readonly networkMode: string;
  readonly publish: readonly { readonly key: string; readonly hostIp: string; readonly hostPort: string }[];
  readonly dns: readonly string[];
  readonly dnsSearch: readonly string[];
  readonly dnsOptions: readonly string[];
  readonly extraHosts: readonly string[];
  readonly aliases: Readonly<Record<string, readonly string[]>>;
  readonly staticIps: Readonly<Record<string, { readonly ip?: string; readonly ip6?: string }>>;
}

/** The `docker inspect` object of a container. */
export function inspectContainer(v: ContainerView, nets: ReadonlyMap<string, NetworkRecord>, hc: HostConfigView, paths: { readonly logPath: string }): Record<string, unknown> {
  const r = v.record;
  const sb = v.sandbox;
  const state = stateOf(r);
  const first = v.endpoints[0];
  const addr = (e: EndpointRecord | undefined, fam: 4 | 6): { ip: string; len: number } => {
    const a = e?.addresses.find((x) => x.includes(':') === (fam === 6));
    return a === undefined ? { ip: '', len: 0 } : { ip: a.split('/')[0] ?? '', len: Number(a.split('/')[1]) };
  };
  const gateway = (e: EndpointRecord | undefined, fam: 4 | 6): string => {
    const n = e === undefined ? undefined : nets.get(e.networkId);
    return n?.subnets.find((s) => s.subnet.includes(':') === (fam === 6))?.gateway ?? '';
  };
  const endpointView = (name: string, e: EndpointRecord | undefined): Record<string, unknown> => {
    const n = e === undefined ? [...nets.values()].find((x) => x.name === name) : nets.get(e.networkId);
    const st = hc.staticIps[name];
    return {
      IPAMConfig: st !== undefined && (st.ip !== undefined || st.ip6 !== undefined) ? { ...(st.ip !== undefined ? { IPv4Address: st.ip } : {}), ...(st.ip6 !== undefined ? { IPv6Address: st.ip6 } : {}) } : null,
      Links: null,
      Aliases: e?.aliases ?? hc.aliases[name] ?? [],
      MacAddress: e?.mac ?? '',
      NetworkID: n?.id ?? '',
      EndpointID: e?.id ?? '',
      Gateway: e === undefined ? '' : gateway(e, 4),
      IPAddress: addr(e, 4).ip,
      IPPrefixLen: addr(e, 4).len,
      IPv6Gateway: e === undefined ? '' : gateway(e, 6),
      GlobalIPv6Address: addr(e, 6).ip,
      GlobalIPv6PrefixLen: addr(e, 6).len,
      DNSNames: e === undefined ? null : [r.name, r.id.slice(0, 12), r.hostname, ...e.aliases].filter((x, i, a) => a.indexOf(x) === i),
      // tsnet's own: the interface names on both sides.
      Interface: e?.ifName ?? '',
      HostInterface: e?.hostIf ?? '',
    };
  };
  const byName = new Map(v.endpoints.map((e) => [nets.get(e.networkId)?.name ?? e.networkId, e] as const));
  const networkNames = [...new Set([...byName.keys(), ...v.networks.filter((n) => !['host', 'none'].includes(n) && !n.startsWith('container:'))])];
  const portMap = goMap(portBindings(v.endpoints.flatMap((e) => e.ports)) as Record<string, unknown>);
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const b of hc.publish) (bindings[b.key] ??= []).push({ HostIp: b.hostIp, HostPort: b.hostPort });
  return {
    Id: r.id,
    Created: r.createdAt,
    Path: r.argv[0],
    Args: r.argv.slice(1),
    State: {
      Status: state,
      Running: r.status === 'running',
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: r.status === 'running' ? r.pid ?? 0 : 0,
      ExitCode: r.exitCode ?? 0,
      Error: r.error ?? '',
      StartedAt: r.startedAt ?? ZERO_TIME,
      FinishedAt: r.finishedAt ?? ZERO_TIME,
    },
    Image: r.rootfs ?? '',
    ResolvConfPath: sb?.resolvConfPath ?? '',
    HostnamePath: '',
    HostsPath: sb?.hostsPath ?? '',
    LogPath: paths.logPath,
    Name: `/${r.name}`,
    RestartCount: r.restartCount,
    Driver: 'tsnet',
    Platform: 'linux',
    HostConfig: {
      NetworkMode: hc.networkMode,
      PortBindings: goMap(bindings),
      AutoRemove: r.autoRemove,
      Dns: hc.dns,
      DnsOptions: hc.dnsOptions,
      DnsSearch: hc.dnsSearch,
      ExtraHosts: hc.extraHosts.length > 0 ? hc.extraHosts : null,
      Init: r.init,
    },
    Config: {
      Hostname: r.hostname,
      Domainname: '',
      User: '',
      AttachStdin: r.openStdin && r.foreground !== null,
      AttachStdout: r.foreground !== null,
      AttachStderr: r.foreground !== null,
      Tty: r.tty,
      OpenStdin: r.openStdin,
      StdinOnce: r.openStdin && r.foreground !== null,
      Env: Object.entries(r.env).map(([k, x]) => `${k}=${x}`),
      Cmd: r.argv,
      Image: r.rootfs ?? '',
      WorkingDir: r.cwd,
      Entrypoint: null,
      Labels: goMap({ ...r.labels }),
    },
    NetworkSettings: {
      SandboxID: sb?.id ?? '',
      SandboxKey: sb?.netns.kind === 'host' ? 'host' : sb?.netns.path ?? '',
      // tsnet's own: the files bind-mounted as /etc/hosts and /etc/resolv.conf.
      HostsPath: sb?.hostsPath ?? '',
      ResolvConfPath: sb?.resolvConfPath ?? '',
      Ports: portMap,
      Gateway: gateway(first, 4),
      IPAddress: addr(first, 4).ip,
      IPPrefixLen: addr(first, 4).len,
      IPv6Gateway: gateway(first, 6),
      GlobalIPv6Address: addr(first, 6).ip,
      GlobalIPv6PrefixLen: addr(first, 6).len,
      MacAddress: first?.mac ?? '',
      Networks: goMap(Object.fromEntries(networkNames.map((n) => [n, endpointView(n, byName.get(n))]))),
    },
    // tsnet's own fields.
    Tsnet: { Status: r.status, Error: r.error, Hostname: r.hostname, Rootfs: r.rootfs, Labels: r.labels },
  };
}

/** The object `docker network ls --format` templates see (and `--format json` prints). */
export function networkFields(n: NetworkRecord, trunc: boolean): Record<string, unknown> {
  const f: Record<string, unknown> = {
    CreatedAt: goTime(n.created),
    Driver: n.driver,
    ID: trunc ? n.id.slice(0, 12) : n.id,
    IPv6: String(n.ipv6),
    Internal: String(n.internal),
    Labels: labelsText(n.labels),
    Name: n.name,
    Scope: n.scope === 'cluster' ? 'swarm' : 'local', // as `network inspect` (and Docker for overlay networks)
  };
  Object.defineProperty(f, 'Label', { value: (k: string) => n.labels[k] ?? '', enumerable: false });
  return f;
}
export const NETWORK_HEADERS: Readonly<Record<string, string | (() => string)>> = {
  ID: 'NETWORK ID', Name: 'NAME', Driver: 'DRIVER', Scope: 'SCOPE', IPv6: 'IPV6', Internal: 'INTERNAL', Labels: 'LABELS', Label: () => 'LABEL', CreatedAt: 'CREATED AT',
};
export const NETWORK_TABLE = '{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}';
