/**
 * A container's network settings as the CLI keeps them in its record (the runtime's opaque
 * `config`): the flags of `run`, replayed by `start` and `restart` to make a new sandbox, as Docker
 * recreates a stopped container's sandbox from its HostConfig and NetworkingConfig. Static
 * addresses, aliases and published ports come back; dynamic addresses and ephemeral host ports are
 * chosen anew.
 */
import { z } from 'zod';
import type { CreateSandboxRequest, NetworkMode } from '../cnm/controller.js';
import { TsnetError } from '../core/errors.js';
import { parseExpose, parsePublish } from './ports.js';
import type { HostConfigView } from './docker-view.js';

const NetworkAttachment = z.strictObject({
  name: z.string(),
  ip: z.string().optional(),
  ip6: z.string().optional(),
  mac: z.string().optional(),
  aliases: z.array(z.string()).default([]),
});

export const RunConfigSchema = z.strictObject({
  /** The first --network: a network's name, host, none or container:NAME. */
  mode: z.string().default('bridge'),
  /** Every network to attach to, the first one carrying the published ports (empty unless mode is a network). */
  networks: z.array(NetworkAttachment).default([]),
  publish: z.array(z.string()).default([]),
  expose: z.array(z.string()).default([]),
  publishAll: z.boolean().default(false),
  hostname: z.string().optional(),
  dns: z.array(z.string()).default([]),
  dnsSearch: z.array(z.string()).default([]),
  dnsOptions: z.array(z.string()).default([]),
  addHost: z.array(z.string()).default([]),
});
export type RunConfig = z.output<typeof RunConfigSchema>;

export function parseRunConfig(raw: unknown): RunConfig {
  const r = RunConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw new TsnetError('INTERNAL', `container network settings: ${z.prettifyError(r.error)}`);
  return r.data;
}

export function networkMode(raw: string): NetworkMode {
  if (raw === 'default' || raw === 'bridge') return { kind: 'network', network: 'bridge' };
  if (raw === 'host') return { kind: 'host' };
  if (raw === 'none') return { kind: 'none' };
  if (raw.startsWith('container:')) {
    const target = raw.slice('container:'.length);
    if (target === '') throw new TsnetError('INVALID_CONFIG', 'network: container: needs a container name', { details: { field: 'network' } });
    return { kind: 'container', target };
  }
  return { kind: 'network', network: raw };
}

function addHosts(items: readonly string[]): { ip: string; names: string[] }[] {
  return items.map((item) => {
    const i = item.indexOf(':'); // HOST:IP; the IP may be IPv6 and contain ':'
    if (i <= 0 || i === item.length - 1) throw new TsnetError('INVALID_CONFIG', `add-host: expected HOST:IP, got ${JSON.stringify(item)}`, { details: { field: 'add-host' } });
    return { names: [item.slice(0, i)], ip: item.slice(i + 1).replace(/^\[|\]$/g, '') };
  });
}

/** The published ports the settings ask for (`-p`, and `--expose` with `-P`). */
export function portsOf(cfg: RunConfig): ReturnType<typeof parsePublish>[] {
  return [...cfg.publish.map(parsePublish), ...(cfg.publishAll ? cfg.expose.map(parseExpose) : [])];
}

/** The sandbox request of the settings; `extra`: the further networks to connect once it exists. */
export function sandboxRequest(id: string, name: string, cfg: RunConfig): { req: CreateSandboxRequest; extra: RunConfig['networks'] } {
  const mode = networkMode(cfg.mode);
  const [first, ...extra] = cfg.networks;
  return {
    req: {
      id, name, mode, forContainer: true,
      ...(cfg.hostname !== undefined ? { hostname: cfg.hostname } : {}),
      extraHosts: addHosts(cfg.addHost), dns: cfg.dns, dnsSearch: cfg.dnsSearch, dnsOptions: cfg.dnsOptions,
      ...(mode.kind === 'network' ? {
        connect: {
          ...(first?.ip !== undefined ? { ip: first.ip } : {}), ...(first?.ip6 !== undefined ? { ip6: first.ip6 } : {}),
          ...(first?.mac !== undefined ? { mac: first.mac } : {}), aliases: first?.aliases ?? [], ports: portsOf(cfg),
        },
      } : {}),
    },
    extra: mode.kind === 'network' ? extra : [],
  };
}

/** The settings as `inspect` shows them in HostConfig. */
export function hostConfigView(cfg: RunConfig): HostConfigView {
  const publish = portsOf(cfg).flatMap((p) => {
    const n = p.containerPort.end - p.containerPort.start;
    return Array.from({ length: n + 1 }, (_x, i) => ({
      key: `${p.containerPort.start + i}/${p.proto}`,
      hostIp: p.hostIp ?? '',
      hostPort: p.hostPort === undefined ? '' : p.hostPort.start === p.hostPort.end || n > 0 ? String(p.hostPort.start + (n > 0 ? i : 0)) : `${p.hostPort.start}-${p.hostPort.end}`,
    }));
  });
  return {
    networkMode: cfg.mode,
    publish,
    dns: cfg.dns, dnsSearch: cfg.dnsSearch, dnsOptions: cfg.dnsOptions, extraHosts: cfg.addHost,
    aliases: Object.fromEntries(cfg.networks.map((n) => [n.name, n.aliases])),
    staticIps: Object.fromEntries(cfg.networks.map((n) => [n.name, { ...(n.ip !== undefined ? { ip: n.ip } : {}), ...(n.ip6 !== undefined ? { ip6: n.ip6 } : {}) }])),
  };
}

/** The networks a container is configured for, as `ps` lists them while it is stopped. */
export function configuredNetworks(cfg: RunConfig): string[] {
  const mode = networkMode(cfg.mode);
  if (mode.kind !== 'network') return [cfg.mode];
  return cfg.networks.map((n) => n.name);
}
