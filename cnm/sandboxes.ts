/**
 * Sandboxes: a network namespace of its own (loopback up, IPv6 off by default), the host's, or
 * another sandbox's; its /etc/hosts and resolv.conf; joined to its first network at once.
 * Names are unique by an exclusive claim (state.sandboxNames), so creation takes no global lock and
 * lists no other sandbox: it holds only its own `sandbox:<id>` while the record ("creating"), its
 * name and the namespace are made, then again for the join. Sandboxes are created in parallel, each at the same
 * cost whatever the number of others.
 */
import { TsnetError, isCode, wrap } from '../core/errors.js';
import { parseIfName, parseIpAddr, type IfName, type SandboxId } from '../core/net.js';
import { teardownAll } from '../core/teardown.js';
import { UndoStack } from '../core/undo.js';
import type { ControllerDeps, CreateSandboxRequest, SandboxHandle } from './deps.js';
import { resolverAddress } from './dns.js';
import { connect, teardownEndpoint, writeHostsFile } from './endpoints.js';
import { forgetLinksOfSandbox } from './links.js';
import { conflict, endpointsOf, findSandbox, invalid, netnsOf, newId, notify, nowText } from './lookup.js';
import { checkName, type EndpointRecord, type SandboxRecord } from './model.js';
import { isHostname } from './names.js';
import { findOrAdoptNetwork } from './networks.js';
import { purgeSandbox, removeUnreadableEndpoint, unreadableEndpointsOf } from './unreadable.js';

function checkHostname(raw: string, field: string): string {
  if (!isHostname(raw)) throw invalid(field, `invalid hostname ${JSON.stringify(raw)}`);
  return raw;
}

export async function createSandbox(deps: ControllerDeps, req: CreateSandboxRequest): Promise<SandboxHandle> {
  const { state, log } = deps;
  const name = checkName(req.name, 'name');
  const id = (req.id ?? newId(deps)) as SandboxId;
  const mode = req.mode;
  if (mode.kind === 'container') {
    const forbidden = [
      ['hostname', req.hostname], ['dns', req.dns?.length ? req.dns : undefined], ['dns-search', req.dnsSearch?.length ? req.dnsSearch : undefined],
      ['dns-option', req.dnsOptions?.length ? req.dnsOptions : undefined], ['add-host', req.extraHosts?.length ? req.extraHosts : undefined],
    ] as const;
    for (const [field, v] of forbidden) if (v !== undefined) throw invalid(field, `conflicting options: ${field} and the container type network mode`);
  }
  const extraHosts = (req.extraHosts ?? []).map((h, i) => ({ ip: parseIpAddr(h.ip, `add-host[${i}]`), names: h.names.map((nm) => checkHostname(nm, `add-host[${i}]`)) }));
  const dns = (req.dns ?? []).map((d, i) => parseIpAddr(d, `dns[${i}]`));
  const hostname = checkHostname(req.hostname ?? id.slice(0, 12), 'hostname');
  const external = req.netnsPath;
  if (external !== undefined) {
    if (mode.kind !== 'network' && mode.kind !== 'none') throw invalid('netns', `a namespace of another runtime joins a network (or none), not mode ${mode.kind}`);
    if (typeof external !== 'string' || !external.startsWith('/')) throw invalid('netns', `must be an absolute path, got ${JSON.stringify(external)}`);
  }
  const cni = req.cni !== undefined ? { network: req.cni.network, containerId: req.cni.containerId, ifName: parseIfName(req.cni.ifName, 'ifName') } : undefined;
  await ensureNameIndex(deps);
  // Before the sandbox's lock: a cluster network first seen here is adopted under `networks`, which
  // ranks before `sandbox:<id>`; connect re-reads it under the lock.
  const network = mode.kind === 'network' ? await findOrAdoptNetwork(deps, mode.network) : undefined;
  // Under the sandbox's own lock (a creation never waits for another): the record first, then its
  // name, so a name whose holder has no record is a leftover, never a creation in progress.
  const made = await state.withLock(`sandbox:${id}`, async () => {
    let target: SandboxRecord | undefined;
    if (mode.kind === 'container') {
      target = await findSandbox(deps, mode.target).catch(() => {
        throw new TsnetError('NOT_FOUND', `network container:${mode.target}: no such container: ${mode.target}`, { details: { field: 'network' } });
      });
    }
    const dir = deps.files.dirFor(id);
    const netnsName = `tsnet-${id.slice(0, 12)}`;
    const record: SandboxRecord = {
      schemaVersion: 1, id, name, hostname, created: nowText(deps), status: 'creating',
      netns: mode.kind === 'host' ? { kind: 'host' }
        : external !== undefined ? { kind: 'external', path: external }
        : target !== undefined ? (target.netns.kind === 'host' ? { kind: 'host' } : { kind: 'container', sandboxId: target.id, path: target.netns.path })
        : { kind: 'own', name: netnsName, path: deps.netns.pathOf(netnsName) },
      extraHosts, dns, dnsSearch: [...(req.dnsSearch ?? [])], dnsOptions: [...(req.dnsOptions ?? [])],
      hostsPath: target?.hostsPath ?? `${dir}/hosts`, resolvConfPath: target?.resolvConfPath ?? `${dir}/resolv.conf`,
      ...(req.forContainer === true ? { container: true } : {}),
      ...(cni !== undefined ? { cni } : {}),
    };
    const undo = new UndoStack();
    try {
      await state.sandboxes.create(record).catch((err: unknown) => {
        throw isCode(err, 'ALREADY_EXISTS') ? conflict(`container id ${id} is already in use`, { field: 'id' }) : err;
      });
      undo.push('sandbox record', () => state.sandboxes.delete(id));
      await claimName(deps, name, id);
      undo.push('sandbox name', () => state.sandboxNames.release(name, id));
      if (record.netns.kind === 'own') {
        const own = record.netns;
        undo.push('netns', () => deps.netns.remove(own.name));
        // IPv6 off by default: interfaces of IPv4-only networks then need no sysctl write.
        const ns = await deps.netns.create(own.name, { sysctls: { 'net.ipv6.conf.default.disable_ipv6': 1 } });
        undo.push('netlink handle', () => deps.netlink.release(ns)); // its ip process would keep the namespace alive
        await deps.netlink(ns).setLink('lo' as IfName, { up: true });
      }
      if (record.netns.kind === 'host' || record.netns.kind === 'own') {
        undo.push('files', () => deps.files.removeDir(dir));
        // `--dns` given: exactly those servers (Docker's explicit choice); else the embedded
        // resolver on the network's gateway when it serves the network.
        const embedded = network !== undefined && dns.length === 0 ? resolverAddress(network) : undefined;
        await deps.files.write(record.resolvConfPath, await deps.resolvConf({
          dns, dnsSearch: record.dnsSearch, dnsOptions: record.dnsOptions, ...(embedded !== undefined ? { embedded } : {}),
        }));
        await writeHostsFile(deps, record, []);
      }
      const ready: SandboxRecord = { ...record, status: 'ready' };
      await state.sandboxes.put(ready);
      undo.commit();
      return { ready, network };
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`create sandbox ${name}`, err);
    }
  });
  // After the creation's lock is released: connect takes it again.
  if (made.network) {
    await connect(deps, id, made.network.id, req.connect ?? {}).catch(async (err: unknown) => {
      await deleteSandbox(deps, id).catch((e: unknown) => log.warn('rollback of sandbox failed', { sandbox: id, err: e }));
      throw err;
    }).finally(async () => {
      // Another runtime's namespace: no ip process of tsnet's may keep it alive once it is removed.
      if (made.ready.netns.kind === 'external') await deps.netlink.release(netnsOf(made.ready)).catch(() => undefined);
    });
  }
  return { record: made.ready, netns: netnsOf(made.ready) };
}

/**
 * Takes `name` for sandbox `id`; ALREADY_EXISTS (details.holder: the other sandbox's id) when a
 * sandbox holds it. A name whose holder has no record any more (a removal cut short) is taken over.
 */
async function claimName(deps: ControllerDeps, name: string, id: SandboxId): Promise<void> {
  const names = deps.state.sandboxNames;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await names.reserve(name, id)) return;
    const holder = await names.owner(name);
    if (holder === undefined) continue; // released meanwhile
    if ((await deps.state.sandboxes.get(holder))?.name === name) {
      throw conflict(`the container name "${name}" is already in use`, { field: 'name', holder });
    }
    await names.release(name, holder);
  }
  throw conflict(`the container name "${name}" is being taken and released repeatedly`, { field: 'name' });
}

/**
 * Indexes the names of sandboxes recorded before the name index existed; once per state directory
 * (under `sandboxes`, so two processes do not both do it).
 */
export async function ensureNameIndex(deps: ControllerDeps): Promise<void> {
  const names = deps.state.sandboxNames;
  if (await names.complete()) return;
  await deps.state.withLock('sandboxes', async () => {
    if (await names.complete()) return;
    for (const sb of await deps.state.sandboxes.list()) await names.reserve(sb.name, sb.id);
    await names.markComplete();
  });
}

/** Removes the sandbox with its endpoints, namespace, files and record; the caller holds nothing. */
export async function deleteSandbox(deps: ControllerDeps, idOrName: string): Promise<readonly EndpointRecord[]> {
  const found = await findSandbox(deps, idOrName).catch(async (err: unknown) => {
    // Its record may be one that could not be read: what it described is removed all the same.
    if (isCode(err, 'NOT_FOUND') && (await purgeSandbox(deps, idOrName)) !== undefined) return undefined;
    throw err;
  });
  if (found === undefined) return [];
  // Read again under its lock: two removers at once (a container's exit seen by `stop` and by the
  // daemon) both found it; the second finds it gone and removed nothing, so reports nothing.
  const left = await deps.state.withLock(`sandbox:${found.id}`, async () => {
    const sb = await deps.state.sandboxes.get(found.id);
    return sb === undefined ? [] : deleteSandboxLocked(deps, sb);
  });
  if (left.length > 0) {
    const nets = (await deps.state.networks.list()).filter((n) => left.some((e) => e.networkId === n.id));
    await notify(deps, 'sandbox-deleted', nets, { endpoints: left.map((e) => e.id), sandboxes: [found.id] });
  }
  return left;
}

/** The same, holding `sandbox:<id>` already; returns the endpoints it removed. */
export async function deleteSandboxLocked(deps: ControllerDeps, sb: SandboxRecord): Promise<Awaited<ReturnType<typeof endpointsOf>>> {
  const ns = netnsOf(sb);
  const eps = await endpointsOf(deps, sb.id);
  await teardownAll([
    // Records only: deleting the namespace (below) deletes the link pairs, their other ends too.
    ...(sb.netns.kind === 'own' ? [{ label: 'links', run: () => forgetLinksOfSandbox(deps, sb.id) }] : []),
    ...eps.map((ep) => ({ label: `endpoint ${ep.ifName}`, run: () => teardownEndpoint(deps, ep, ns) })),
    ...(await unreadableEndpointsOf(deps, sb.id)).map((id) => ({ label: `endpoint ${id}`, run: () => removeUnreadableEndpoint(deps, id) })),
    ...(sb.netns.kind === 'own' || sb.netns.kind === 'external' ? [{ label: 'netlink handle', run: () => deps.netlink.release(ns) }] : []),
    ...(sb.netns.kind === 'own' ? [{ label: 'netns', run: () => deps.netns.remove((sb.netns as { name: string }).name) }] : []),
    ...(sb.netns.kind === 'host' || sb.netns.kind === 'own' ? [{ label: 'files', run: () => deps.files.removeDir(deps.files.dirFor(sb.id)) }] : []),
    { label: 'record', run: () => deps.state.sandboxes.delete(sb.id) },
    { label: 'name', run: () => deps.state.sandboxNames.release(sb.name, sb.id) },
  ]).catch((err: unknown) => {
    throw wrap(`remove sandbox ${sb.name}`, err);
  });
  return eps;
}

export async function listSandboxes(deps: ControllerDeps): Promise<SandboxRecord[]> {
  return deps.state.sandboxes.list();
}
