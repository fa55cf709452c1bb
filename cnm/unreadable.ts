/**
 * Removing what a record that could not be read described. The store sets such a record aside
 * (kept under STATE/corrupt/ for inspection) and every listing skips it, so it never blocks
 * commands on other objects; `tsnet rm -f ID` and `tsnet network rm ID` then come here. Without the
 * record, the kernel objects are found by what identifies them anyway: a sandbox's namespace by its
 * name (`tsnet-<id>`), a network's bridge and host interfaces by their owner tag (drivers/owner.ts),
 * firewall rules by their owner id, addresses by their owner; the endpoints' and the sandbox's own
 * records where they still read.
 */
import { TsnetError } from '../core/errors.js';
import type { EndpointId, NetworkId, SandboxId } from '../core/net.js';
import { teardownAll } from '../core/teardown.js';
import { DRIVER_TYPES } from '../drivers/api.js';
import type { ControllerDeps } from './deps.js';
import { teardownEndpoint } from './endpoints.js';
import { conflict, endpointPrefix } from './lookup.js';

/** The one set-aside record `ref` names (an id or an id prefix of at least 3), if any. */
async function setAsideMatch(records: readonly { readonly id: string }[], ref: string, what: string): Promise<string | undefined> {
  const hits = records.filter((r) => r.id === ref || (ref.length >= 3 && r.id.startsWith(ref)));
  if (hits.length > 1) throw new TsnetError('INVALID_CONFIG', `${what} id prefix ${ref} is ambiguous (${hits.length} unreadable records)`, { details: { field: what } });
  return hits[0]?.id;
}

/** Firewall ports and addresses of an endpoint whose record could not be read, and that record. */
export async function removeUnreadableEndpoint(deps: ControllerDeps, id: string): Promise<void> {
  const eid = id as EndpointId;
  await teardownAll([
    ...DRIVER_TYPES.filter((t) => deps.drivers(t).hasDataPath).map((t) => ({ label: `ports of ${id} (${t})`, run: () => deps.drivers(t).unpublish(eid) })),
    { label: `addresses of ${id}`, run: async () => void (await deps.ipam.releaseOwner(id)) },
    { label: `record ${id}`, run: () => deps.state.endpoints.discardSetAside(id) },
  ]);
}

/** The unreadable endpoint records of a sandbox (endpoint ids start with the sandbox's). */
export async function unreadableEndpointsOf(deps: ControllerDeps, sandboxId: SandboxId): Promise<string[]> {
  return (await deps.state.endpoints.listSetAside()).map((r) => r.id).filter((id) => id.startsWith(endpointPrefix(sandboxId)));
}

/**
 * A sandbox whose record could not be read: its endpoints (their records where they read), its
 * namespace (which takes the veth pairs with it), its files, its name and the record. Resolves with
 * its id, or undefined when no set-aside sandbox matches `ref`.
 */
export async function purgeSandbox(deps: ControllerDeps, ref: string): Promise<SandboxId | undefined> {
  const found = await setAsideMatch(await deps.state.sandboxes.listSetAside(), ref, 'container');
  if (found === undefined) return undefined;
  const id = found as SandboxId;
  await deps.state.withLock(`sandbox:${id}`, async () => {
    const nsName = `tsnet-${id.slice(0, 12)}`;
    const ns = await deps.netns.open(nsName).catch(() => undefined);
    const eps = (await deps.state.endpoints.list(endpointPrefix(id))).filter((e) => e.sandboxId === id);
    await teardownAll([
      ...eps.map((ep) => ({ label: `endpoint ${ep.id}`, run: () => teardownEndpoint(deps, ep, ns ?? deps.hostNs) })),
      ...(await unreadableEndpointsOf(deps, id)).map((eid) => ({ label: `endpoint ${eid}`, run: () => removeUnreadableEndpoint(deps, eid) })),
      ...(ns !== undefined ? [{ label: 'netlink handle', run: () => deps.netlink.release(ns) }] : []),
      { label: 'netns', run: () => deps.netns.remove(nsName) },
      { label: 'files', run: () => deps.files.removeDir(deps.files.dirFor(id)) },
      { label: 'name', run: () => deps.state.sandboxNames.releaseId(id) },
      { label: 'record', run: () => deps.state.sandboxes.discardSetAside(id) },
    ]);
    deps.log.info('removed a sandbox whose record could not be read', { sandbox: id, endpoints: eps.length });
  });
  return id;
}

/**
 * A network whose record could not be read: refused while endpoints that read name it; else its
 * interfaces (by owner tag), firewall policy, address pools and the record. Resolves with its id, or
 * undefined when no set-aside network matches `ref`.
 */
export async function purgeNetwork(deps: ControllerDeps, ref: string): Promise<NetworkId | undefined> {
  const found = await setAsideMatch(await deps.state.networks.listSetAside(), ref, 'network');
  if (found === undefined) return undefined;
  const id = found as NetworkId;
  await deps.state.withLock('networks', async () => {
    const eps = (await deps.state.endpoints.list()).filter((e) => e.networkId === id);
    if (eps.length > 0) throw conflict(`error while removing network: network ${id} (its record could not be read) has active endpoints (${eps.length})`, { field: 'network' });
    const owner = { scope: deps.owner.scope, network: id.slice(0, 12) };
    const links: string[] = [];
    await teardownAll([
      ...DRIVER_TYPES.map((t) => deps.drivers(t)).filter((d) => d.removeLeftovers !== undefined).map((d) => ({
        label: `${d.type} leftovers of ${id}`,
        run: async () => void links.push(...((await d.removeLeftovers?.(id, owner)) ?? [])),
      })),
      { label: `pools of ${id}`, run: () => deps.ipam.releasePool(id) },
      { label: `record ${id}`, run: () => deps.state.networks.discardSetAside(id) },
    ]);
    deps.log.info('removed a network whose record could not be read', { network: id, links });
  });
  return id;
}
