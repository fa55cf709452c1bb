/**
 * Crash recovery and kernel restoration. `reconcile` finishes or undoes what a crash interrupted:
 * records still "creating" whose creator is gone, endpoints whose sandbox record is gone, addresses
 * whose owner has no record; then restores missing bridges and rules. It never waits for work in
 * progress: a record's creator holds its lock for the whole creation, and locks are released by the
 * kernel when their holder dies, so a lock that is held means a live creator, and that object is
 * skipped (`tryLock`), never mistaken for a leftover and never waited for.
 */
import type { EndpointId } from '../core/net.js';
import { reconcileLinks } from './links.js';
import type { ControllerDeps } from './deps.js';
import { releaseLeftoverAddresses, teardownEndpoint } from './endpoints.js';
import { mappingOf, netnsOf, specOf } from './lookup.js';
import { DOOR_SANDBOX, type NetworkRecord } from './model.js';
import { removeNetworkEverywhere } from './networks.js';
import { deleteSandboxLocked } from './sandboxes.js';

/** The lock a live creator or remover of this endpoint holds. */
const endpointLock = (e: { readonly id: string; readonly sandboxId: string }): string => (e.sandboxId === DOOR_SANDBOX ? `endpoint:${e.id}` : `sandbox:${e.sandboxId}`);

interface Restored {
  readonly networks: string[];
  readonly endpoints: string[];
}

/** Re-creates missing (or, forced, all) networks and published ports, one driver call per driver type. */
export async function restoreKernel(deps: ControllerDeps, ready: readonly NetworkRecord[], force: boolean): Promise<Restored> {
  const eps = (await deps.state.endpoints.list()).filter((e) => e.status === 'ready' && e.ports.length > 0);
  const out = { networks: [] as string[], endpoints: [] as string[] };
  for (const type of new Set(ready.map((n) => n.driver))) {
    const mine = ready.filter((n) => n.driver === type);
    const byId = new Map(mine.map((n) => [n.id as string, n]));
    const ports = eps.flatMap((e) => {
      const n = byId.get(e.networkId);
      return n ? [{ network: specOf(deps, n), config: n.config, endpointId: e.id, mappings: e.ports.map(mappingOf) }] : [];
    });
    const r = await deps.drivers(type).restore({ networks: mine.map((n) => ({ spec: specOf(deps, n), config: n.config })), ports, force });
    out.networks.push(...mine.filter((n) => r.networks.includes(n.id)).map((n) => n.name));
    out.endpoints.push(...r.endpoints);
  }
  // An endpoint being removed meanwhile (its teardown holds its lock from unpublish to the
  // record's deletion) may just have had its ports put back: take them away again.
  const byEp = new Map(eps.map((e) => [e.id as string, e]));
  for (const id of out.endpoints) {
    const e = byEp.get(id);
    const net = e === undefined ? undefined : ready.find((n) => n.id === e.networkId);
    if (e === undefined || net === undefined) continue;
    await deps.state.withLock(endpointLock(e), async () => {
      if (!(await deps.state.endpoints.get(id))) await deps.drivers(net.driver).unpublish(id as EndpointId);
    });
  }
  return out;
}

export async function reloadFirewall(deps: ControllerDeps, opts: { readonly force?: boolean } = {}): Promise<Restored> {
  return deps.state.withLock('networks', async () => {
    // In creation order: the kernel then shows the same ruleset as before the flush.
    const ready = (await deps.state.networks.list()).filter((n) => n.status === 'ready').sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
    const r = await restoreKernel(deps, ready, opts.force ?? true);
    if (r.networks.length + r.endpoints.length > 0) deps.log.info('firewall restored', { networks: r.networks, endpoints: r.endpoints.length, force: opts.force ?? true });
    return r;
  });
}

export async function reconcile(deps: ControllerDeps): Promise<{ readonly cleaned: string[]; readonly restored: string[] }> {
  const { state, log } = deps;
  const cleaned: string[] = [];
  const restored: string[] = [];
  // A sandbox "creating" whose `sandbox:<id>` nobody holds was left by a crash.
  for (const sb of (await state.sandboxes.list()).filter((s) => s.status === 'creating')) {
    const r = await state.tryLock(`sandbox:${sb.id}`, async () => {
      const cur = await state.sandboxes.get(sb.id);
      if (cur?.status === 'creating') await deleteSandboxLocked(deps, cur);
      return cur?.status === 'creating';
    });
    if (r.ran && r.value) cleaned.push(`sandbox ${sb.name}`);
  }
  const sandboxIds = new Set((await state.sandboxes.list()).map((s) => s.id as string));
  const suspects = (await state.endpoints.list()).filter((e) => e.status === 'creating' || (e.sandboxId !== DOOR_SANDBOX && !sandboxIds.has(e.sandboxId)));
  for (const ep of suspects) {
    await state.tryLock(endpointLock(ep), async () => {
      const cur = await state.endpoints.get(ep.id);
      if (!cur) return;
      const sb = cur.sandboxId === DOOR_SANDBOX ? undefined : await state.sandboxes.get(cur.sandboxId);
      if (cur.status === 'creating' || (cur.sandboxId !== DOOR_SANDBOX && !sb)) {
        await teardownEndpoint(deps, cur, sb ? netnsOf(sb) : deps.hostNs);
        cleaned.push(`endpoint ${cur.id.slice(0, 12)}`);
      }
    });
  }
  await state.tryLock('networks', async () => {
    const ready: NetworkRecord[] = [];
    for (const n of await state.networks.list()) {
      if (n.status === 'creating') {
        await removeNetworkEverywhere(deps, n);
        cleaned.push(`network ${n.name}`);
      } else ready.push(n);
    }
    const r = await restoreKernel(deps, ready, false);
    restored.push(...r.networks, ...r.endpoints.map((e) => `ports of ${e.slice(0, 12)}`));
    const freed = await releaseLeftoverAddresses(deps, ready.filter((x) => deps.drivers(x.driver).hasDataPath && x.externalIpam !== true));
    cleaned.push(...freed.map((a) => `address ${a}`));
  });
  cleaned.push(...(await reconcileLinks(deps)));
  if (cleaned.length > 0) log.info('reconciled', { cleaned });
  return { cleaned, restored };
}
