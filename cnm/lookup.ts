/** Reads and small shared helpers of the controller's modules: lookups by id or name, specs, errors. */
import { TsnetError } from '../core/errors.js';
import type { EndpointId, NetnsRef, NetworkId, SandboxId } from '../core/net.js';
import type { NetworkSpec } from '../drivers/api.js';
import type { PortMapping } from '../sys/firewall/api.js';
import type { CnmChange, ControllerDeps } from './deps.js';
import { networkHasDns, type EndpointRecord, type NetworkRecord, type SandboxRecord } from './model.js';

const FULL_ID = /^[0-9a-f]{64}$/;

export function conflict(msg: string, details: Record<string, unknown> = {}): TsnetError {
  return new TsnetError('ALREADY_EXISTS', msg, { details });
}
export function notFound(what: string, name: string, field: string): TsnetError {
  return new TsnetError('NOT_FOUND', `${what} ${name} not found`, { details: { field, value: name } });
}
export function invalid(field: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${msg}`, { details: { field } });
}

export function netnsOf(sb: SandboxRecord): NetnsRef {
  return sb.netns.kind === 'host' ? { kind: 'host' } : { kind: 'path', path: sb.netns.path };
}

/** A mapping record (validated on read) as the firewall's type. */
export function mappingOf(m: EndpointRecord['ports'][number]): PortMapping {
  return {
    proto: m.proto, ...(m.hostIp !== undefined ? { hostIp: m.hostIp } : {}), containerIp: m.containerIp,
    hostPort: m.hostPort as PortMapping['hostPort'], containerPort: m.containerPort as PortMapping['containerPort'],
  };
}

/** A network as its driver sees it, with the owner tag of this store. */
export function specOf(deps: Pick<ControllerDeps, 'owner'>, n: Pick<NetworkRecord, 'id' | 'name' | 'subnets' | 'internal' | 'options'>): NetworkSpec {
  return {
    id: n.id,
    name: n.name,
    subnets: n.subnets.map((s) => ({ subnet: s.subnet, gateway: s.gateway })),
    internal: n.internal,
    options: n.options,
    owner: { scope: deps.owner.scope, network: n.id.slice(0, 12), ...(deps.owner.where !== undefined ? { where: deps.owner.where } : {}) },
  };
}

export async function findNetwork(deps: ControllerDeps, idOrName: string): Promise<NetworkRecord> {
  if (FULL_ID.test(idOrName)) {
    const byId = await deps.state.networks.get(idOrName);
    if (byId) return byId;
  }
  const all = await deps.state.networks.list();
  const hit = all.find((n) => n.name === idOrName) ?? all.find((n) => n.id === idOrName) ?? all.filter((n) => idOrName.length >= 3 && n.id.startsWith(idOrName)).at(0);
  if (!hit) throw notFound('network', idOrName, 'network');
  return hit;
}

export async function findSandbox(deps: ControllerDeps, idOrName: string): Promise<SandboxRecord> {
  if (FULL_ID.test(idOrName)) {
    const byId = await deps.state.sandboxes.get(idOrName);
    if (byId) return byId;
  }
  // By name through the index (one lookup); an id prefix, or a name the index lacks, the slow way.
  const holder = await deps.state.sandboxNames.owner(idOrName).catch(() => undefined);
  if (holder !== undefined) {
    const byName = await deps.state.sandboxes.get(holder);
    if (byName?.name === idOrName) return byName;
  }
  const all = await deps.state.sandboxes.list();
  const hit = all.find((s) => s.name === idOrName) ?? all.find((s) => s.id === idOrName) ?? all.filter((s) => idOrName.length >= 3 && s.id.startsWith(idOrName)).at(0);
  if (!hit) throw notFound('container', idOrName, 'container');
  return hit;
}

// Endpoint ids start with their sandbox's id prefix, so a sandbox's endpoints are listed without
// reading every endpoint record.
export const endpointPrefix = (sandboxId: SandboxId): string => sandboxId.slice(0, 16);

export async function endpointsOf(deps: ControllerDeps, sandboxId: SandboxId): Promise<EndpointRecord[]> {
  return (await deps.state.endpoints.list(endpointPrefix(sandboxId)))
    .filter((e) => e.sandboxId === sandboxId)
    .sort((a, b) => a.ifName.localeCompare(b.ifName, 'en', { numeric: true }));
}

export const newId = (deps: ControllerDeps): string => deps.randomHex(32);
export const nowText = (deps: ControllerDeps): string => deps.now().toISOString();

/** Tells listeners (the DNS daemon); never fails the mutation, which is done. */
export async function notify(deps: ControllerDeps, kind: CnmChange['kind'], nets: readonly NetworkRecord[], ids: { readonly endpoints?: readonly string[]; readonly sandboxes?: readonly string[] } = {}): Promise<void> {
  if (!deps.onChange) return;
  const change: CnmChange = {
    kind, networkIds: nets.map((n) => n.id as NetworkId), dns: nets.some(networkHasDns),
    ...(ids.endpoints !== undefined ? { endpointIds: ids.endpoints } : {}), ...(ids.sandboxes !== undefined ? { sandboxIds: ids.sandboxes } : {}),
  };
  await deps.onChange(change).catch((err: unknown) => {
    deps.log.warn('change notification failed', { kind, err: err instanceof Error ? err.message : String(err) });
  });
}

export type { EndpointId };
