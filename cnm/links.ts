/**
 * Point-to-point links and switches, as network-model operations: free functions over `LinkDeps`,
 * bound by the controller one line each.
 *
 * A link is a veth pair created straight between two namespaces: the first end's namespace makes
 * the pair with its peer directly in the other namespace (names, MACs, MTU), then each side sets
 * its addresses and brings its end up, one `ip` batch per namespace (an interface's addresses can
 * only be set from inside its namespace, and a moved interface would lose them). An end is either
 * an interface of a sandbox that has its own namespace, or a port of a switch: a plain Linux
 * bridge in the host namespace, with no address and no firewall policy (a lab's `kind: bridge`).
 *
 * The record ("creating", with both ends' names and MACs) is written before the kernel is touched
 * and marked "ready" after, so a crash in the middle leaves a record that says what to remove;
 * `reconcileLinks` removes such links and those whose sandbox or switch is gone. Removal is
 * idempotent: deleting either end deletes the pair, and a missing namespace means the pair is gone.
 *
 * Locks (locks.ts: `switch` and `link` rank last, leaves: nothing is taken inside them): creating
 * a link holds `link:<id>`, so that reconcile, which tries it without waiting, never mistakes a
 * link being made for a crashed one; changing its impairments holds it too (each end's change
 * rewrites the record); creating a switch holds `switch:<name>`. Deleting
 * takes no lock (every step succeeds if already done), so `deleteSandbox` may remove its links
 * while it holds its sandbox's lock.
 */
import { TsnetError, isCode, wrap } from '../core/errors.js';
import { IFNAME_PATTERN, addrFamily, parseIfName, parseMac, parsePrefix, type IfName, type MacAddr, type NetnsRef } from '../core/net.js';
import { teardownAll } from '../core/teardown.js';
import { UndoStack } from '../core/undo.js';
import type { Impairment } from '../sys/api.js';
import type { NetlinkOp } from '../sys/netlink/api.js';
import type { ControllerDeps } from './deps.js';
import { findSandbox } from './lookup.js';
import type { ImpairmentRecord, LinkEndRecord, LinkRecord, SwitchRecord } from './model.js';

/** Links work over the controller's deps: its state, kernel handles, and `sysctl`/`tc` when given. */
export type LinkDeps = ControllerDeps;

/** One end of a link to create: a sandbox's interface, or a port of a switch. */
export type LinkEndRequest =
  | {
    readonly sandbox: string;
    readonly ifName: string;
    /** Addresses with their prefix length ("10.0.12.1/30", "fd00::1/64"). */
    readonly addresses?: readonly string[];
    readonly mac?: string;
    readonly impair?: Impairment;
  }
  | { readonly switch: string; readonly mac?: string; readonly impair?: Impairment };

export interface CreateLinkRequest {
  /** Default: random. A caller that wants to find its link again (a lab) chooses it. */
  readonly id?: string;
  readonly ends: readonly [LinkEndRequest, LinkEndRequest];
  readonly mtu?: number;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface CreateSwitchRequest {
  /** The bridge's interface name (the record's id derives from it). */
  readonly name: string;
  readonly mtu?: number;
  readonly labels?: Readonly<Record<string, string>>;
}

const LINK_ID = /^[a-z0-9][a-z0-9_.-]{0,127}$/;

function invalid(field: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${msg}`, { details: { field } });
}

function randomMac(randomHex: (bytes: number) => string): MacAddr {
  return `02${randomHex(5)}`.match(/../g)?.join(':') as MacAddr;
}

function checkMtu(mtu: number | undefined, field: string): number | undefined {
  if (mtu !== undefined && (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535)) throw invalid(field, `MTU must be a whole number from 68 to 65535 (got ${mtu})`);
  return mtu;
}

/** Only the fields that are set: the record's shape of an impairment. */
export function impairmentRecord(imp: Impairment | undefined): ImpairmentRecord | undefined {
  if (imp === undefined) return undefined;
  const r: ImpairmentRecord = {
    ...(imp.rate !== undefined ? { rate: imp.rate } : {}),
    ...(imp.delayUs !== undefined ? { delayUs: imp.delayUs } : {}),
    ...(imp.jitterUs !== undefined ? { jitterUs: imp.jitterUs } : {}),
    ...(imp.lossPct !== undefined ? { lossPct: imp.lossPct } : {}),
  };
  return Object.keys(r).length > 0 ? r : undefined;
}

/** The namespace an end lives in, or undefined when its sandbox or switch is gone. */
async function nsOfEnd(deps: LinkDeps, end: LinkEndRecord): Promise<NetnsRef | undefined> {
  if (end.kind === 'switch') return deps.hostNs;
  const sb = await deps.state.sandboxes.get(end.sandboxId);
  if (!sb || sb.netns.kind !== 'own') return undefined;
  return { kind: 'path', path: sb.netns.path };
}

async function resolveEnd(deps: LinkDeps, req: LinkEndRequest, i: number, randomName: () => IfName): Promise<{ end: LinkEndRecord; ns: NetnsRef; bridge?: IfName }> {
  const field = `ends[${i}]`;
  const mac = req.mac !== undefined ? parseMac(req.mac, `${field}.mac`) : randomMac(deps.randomHex);
  const impair = impairmentRecord(req.impair);
  if ('switch' in req) {
    const sw = await findSwitch(deps, req.switch);
    if (sw.status !== 'ready') throw new TsnetError('UNAVAILABLE', `${field}: switch ${sw.name} is being created or removed`, { details: { field } });
    return { end: { kind: 'switch', switchId: sw.id, ifName: randomName(), mac, ...(impair ? { impair } : {}) }, ns: deps.hostNs, bridge: sw.name };
  }
  const sb = await findSandbox(deps, req.sandbox);
  if (sb.netns.kind !== 'own') throw invalid(`${field}.sandbox`, `container ${sb.name} shares another namespace (${sb.netns.kind}): a link needs a sandbox with a namespace of its own`);
  const ifName = parseIfName(req.ifName, `${field}.interface`);
  const addresses = (req.addresses ?? []).map((a, j) => parsePrefix(a, `${field}.addresses[${j}]`));
  return { end: { kind: 'sandbox', sandboxId: sb.id, ifName, mac, addresses: [...addresses], ...(impair ? { impair } : {}) }, ns: { kind: 'path', path: sb.netns.path } };
}

/** Makes the link, or undoes what it made and throws. */
export async function createLink(deps: LinkDeps, req: CreateLinkRequest): Promise<LinkRecord> {
  const id = req.id ?? deps.randomHex(16);
  if (!LINK_ID.test(id)) throw invalid('id', `invalid link id ${JSON.stringify(id)}`);
  const mtu = checkMtu(req.mtu, 'mtu');
  const randomName = (): IfName => `lk${deps.randomHex(5)}` as IfName;
  const [a, b] = await Promise.all(req.ends.map((e, i) => resolveEnd(deps, e, i, randomName)));
  if (!a || !b) throw invalid('ends', 'a link has two ends');
  if (a.end.kind === 'sandbox' && b.end.kind === 'sandbox' && a.end.sandboxId === b.end.sandboxId && a.end.ifName === b.end.ifName) {
    throw invalid('ends[1].interface', `both ends are ${a.end.ifName} of the same container`);
  }
  // The kernel decides whether an interface name is free in its namespace (another link's, an
  // endpoint's, or one tsnet did not make): the pair is refused with ALREADY_EXISTS, and nothing
  // that exists is ever removed by this link's undo, which is armed only once the pair is made.
  const record: LinkRecord = {
    schemaVersion: 1, id, created: deps.now().toISOString(), status: 'creating', ...(mtu !== undefined ? { mtu } : {}),
    ends: [a.end, b.end], labels: { ...(req.labels ?? {}) },
  };
  return deps.state.withLock(`link:${id}`, async () => {
    const undo = new UndoStack();
    try {
      await deps.state.links.create(record);
      undo.push('link record', () => deps.state.links.delete(id));
      // Made from the host's side when one end is there: its ip process is already running.
      const [first, second] = b.end.kind === 'switch' && a.end.kind !== 'switch' ? [b, a] : [a, b];
      const sameNs = first.ns.kind === second.ns.kind && (first.ns.kind === 'host' || (second.ns.kind === 'path' && first.ns.path === second.ns.path));
      const wantsV6 = (x: typeof a): boolean => x.end.kind === 'sandbox' && x.end.addresses.some((p) => addrFamily(p) === 6);
      const configure = (x: typeof a): NetlinkOp[] => [
        ...(x.end.kind === 'sandbox' ? x.end.addresses.map((prefix): NetlinkOp => ({ op: 'addAddr', dev: x.end.ifName, prefix, nodad: addrFamily(prefix) === 6 })) : []),
        { op: 'setLink', name: x.end.ifName, changes: { up: true, ...(x.bridge !== undefined ? { master: x.bridge } : {}) } },
      ];
      const pair: NetlinkOp = {
        op: 'addVeth', name: first.end.ifName, peer: second.end.ifName, ...(sameNs ? {} : { peerNetns: second.ns }),
        mac: first.end.mac, peerMac: second.end.mac, ...(mtu !== undefined ? { mtu } : {}),
      };
      const v6 = wantsV6(first) || wantsV6(second);
      // One round trip in the first namespace: the pair, then (IPv4 only) its end's configuration.
      const head = v6 ? [pair] : sameNs ? [pair, ...configure(first), ...configure(second)] : [pair, ...configure(first)];
      const results = await deps.netlink(first.ns).batch(head);
      const made = results[0];
      if (made && !made.ok) throw made.error;
      undo.push('veth pair', () => removeLinkKernel(deps, record));
      const failed = results.find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      if (v6) {
        // IPv6 must be on before an IPv6 address can be added (sandboxes start with it off).
        await Promise.all([first, second].filter(wantsV6).map((x) => enableV6(deps, x.ns, x.end.ifName)));
        await Promise.all(sameNs ? [runBatch(deps, first.ns, [...configure(first), ...configure(second)])] : [runBatch(deps, first.ns, configure(first)), runBatch(deps, second.ns, configure(second))]);
      } else if (!sameNs) {
        await runBatch(deps, second.ns, configure(second));
      }
      await Promise.all([first, second].map((x) => (x.end.impair !== undefined ? applyImpairment(deps, x.ns, x.end.ifName, x.end.impair) : Promise.resolve())));
      const ready: LinkRecord = { ...record, status: 'ready' };
      await deps.state.links.put(ready);
      undo.commit();
      deps.log.info('link created', { link: id, ends: ready.ends.map(describeEnd) });
      return ready;
    } catch (err) {
      await undo.unwind(deps.log);
      throw wrap(`create link ${id}`, err);
    }
  });
}

const describeEnd = (e: LinkEndRecord): string => (e.kind === 'sandbox' ? `${e.sandboxId.slice(0, 12)}:${e.ifName}` : `switch ${e.switchId.slice(0, 12)}:${e.ifName}`);

async function runBatch(deps: LinkDeps, ns: NetnsRef, ops: readonly NetlinkOp[]): Promise<void> {
  const results = await deps.netlink(ns).batch(ops);
  const failed = results.find((r) => !r.ok);
  if (failed && !failed.ok) throw failed.error;
}

async function enableV6(deps: LinkDeps, ns: NetnsRef, ifName: IfName): Promise<void> {
  if (!deps.sysctl) throw new TsnetError('UNAVAILABLE', 'IPv6 on a link end needs sysctl access, which this controller was not given');
  await deps.sysctl(ns).set({ [`net.ipv6.conf.${ifName.replaceAll('.', '/')}.disable_ipv6`]: 0 });
}

async function applyImpairment(deps: LinkDeps, ns: NetnsRef, ifName: IfName, imp: Impairment): Promise<void> {
  if (!deps.tc) throw new TsnetError('UNAVAILABLE', 'impairments need traffic control (tc), which this controller was not given');
  await deps.tc(ns).impair(ifName, imp);
}

/** Deletes the pair through whichever end is still reachable; succeeds if it is gone. */
async function removeLinkKernel(deps: LinkDeps, link: LinkRecord): Promise<void> {
  const errors: unknown[] = [];
  // The host's end first: its ip process runs already; a sandbox's may have to be started.
  for (const end of [...link.ends].sort((x, y) => (x.kind === 'switch' ? 0 : 1) - (y.kind === 'switch' ? 0 : 1))) {
    const ns = await nsOfEnd(deps, end);
    if (ns === undefined) continue; // its namespace is gone, and the pair with it
    try {
      await deps.netlink(ns).removeLink(end.ifName);
      return; // one end deleted: the pair is gone
    } catch (err) {
      if (!isCode(err, 'NOT_FOUND')) errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
}

/** Removes a link (kernel, then record); succeeds if it is already gone. */
export async function deleteLink(deps: LinkDeps, id: string): Promise<void> {
  const link = await deps.state.links.get(id);
  if (!link) return;
  await teardownAll([
    { label: `veth pair of link ${id}`, run: () => removeLinkKernel(deps, link) },
    { label: `link record ${id}`, run: () => deps.state.links.delete(id) },
  ]).catch((err: unknown) => {
    throw wrap(`delete link ${id}`, err);
  });
  deps.log.info('link removed', { link: id });
}

export async function listLinks(deps: LinkDeps): Promise<LinkRecord[]> {
  return (await deps.state.links.list()).sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
}

/** The links with an end in this sandbox. */
export async function linksOfSandbox(deps: LinkDeps, sandboxId: string): Promise<LinkRecord[]> {
  return (await listLinks(deps)).filter((l) => l.ends.some((e) => e.kind === 'sandbox' && e.sandboxId === sandboxId));
}

/**
 * Forgets the links of a sandbox whose namespace is being deleted: the kernel deletes every
 * interface of a namespace it destroys, veth peers elsewhere included, in one batch (one RCU
 * grace period for all of them instead of one per `ip link del`, which is what makes `lab down` of
 * many links slow). The namespace goes right after this, in the same teardown; the kernel destroys
 * it, and the pairs, once no process is left in it (the runtime kills a container before it
 * deletes its sandbox), a moment after the teardown returns.
 */
export async function forgetLinksOfSandbox(deps: LinkDeps, sandboxId: string): Promise<void> {
  const mine = await linksOfSandbox(deps, sandboxId);
  await teardownAll(mine.map((l) => ({ label: `link ${l.id}`, run: () => deps.state.links.delete(l.id) })));
}

/**
 * Changes the impairments of one end of a running link (`end`: its index, or the sandbox id and
 * interface); undefined fields are no impairment. Returns the updated record.
 */
export async function impairLink(deps: LinkDeps, id: string, end: number, imp: Impairment): Promise<LinkRecord> {
  // Under the link's lock: both ends may be changed at once, and each rewrites the record.
  return deps.state.withLock(`link:${id}`, async () => {
    const link = await deps.state.links.get(id);
    if (!link) throw new TsnetError('NOT_FOUND', `link ${id} not found`, { details: { field: 'link' } });
    if (link.status !== 'ready') throw new TsnetError('UNAVAILABLE', `link ${id} is being created`);
    const e = link.ends[end === 1 ? 1 : 0];
    const ns = await nsOfEnd(deps, e);
    if (!ns) throw new TsnetError('NOT_FOUND', `link ${id}: the namespace of ${e.ifName} is gone`, { details: { field: 'link' } });
    await applyImpairment(deps, ns, e.ifName, imp);
    const rec = impairmentRecord(imp);
    const { impair: _old, ...rest } = e;
    const next = { ...rest, ...(rec ? { impair: rec } : {}) } as LinkEndRecord;
    const updated: LinkRecord = { ...link, ends: end === 1 ? [link.ends[0], next] : [next, link.ends[1]] };
    await deps.state.links.put(updated);
    deps.log.info('link impaired', { link: id, ifName: e.ifName, impair: rec ?? {} });
    return updated;
  });
}

/** A switch's record id, from its bridge's name: one record per name, made atomically. */
export const switchId = (name: string): string => `sw-${Buffer.from(name).toString('hex')}`;

async function findSwitch(deps: LinkDeps, idOrName: string): Promise<SwitchRecord> {
  const direct = (await deps.state.switches.get(idOrName)) ?? (IFNAME_PATTERN.test(idOrName) ? await deps.state.switches.get(switchId(idOrName)) : undefined);
  if (direct) return direct;
  const all = await deps.state.switches.list();
  const hit = all.find((s) => s.id === idOrName) ?? all.find((s) => s.name === idOrName);
  if (!hit) throw new TsnetError('NOT_FOUND', `switch ${idOrName} not found`, { details: { field: 'switch', value: idOrName } });
  return hit;
}

/** A plain bridge in the host namespace, up, with a fixed MAC (see the bridge driver), no address. */
export async function createSwitch(deps: LinkDeps, req: CreateSwitchRequest): Promise<SwitchRecord> {
  const name = parseIfName(req.name, 'name');
  const id = switchId(name);
  const mtu = checkMtu(req.mtu, 'mtu');
  const record: SwitchRecord = { schemaVersion: 1, id, name, created: deps.now().toISOString(), status: 'creating', ...(mtu !== undefined ? { mtu } : {}), labels: { ...(req.labels ?? {}) } };
  return deps.state.withLock(`switch:${name}`, async () => {
    if (await deps.state.switches.get(id)) throw new TsnetError('ALREADY_EXISTS', `switch ${name} already exists`, { details: { field: 'name' } });
    const host = deps.netlink(deps.hostNs);
    if (await host.getLink(name)) throw new TsnetError('ALREADY_EXISTS', `name: an interface ${name} exists in the host namespace (tsnet touches only what it made)`, { details: { field: 'name' } });
    const undo = new UndoStack();
    try {
      await deps.state.switches.create(record);
      undo.push('switch record', () => deps.state.switches.delete(id));
      undo.push(`bridge ${name}`, () => host.removeLink(name));
      await runBatch(deps, deps.hostNs, [
        { op: 'addBridge', name, mac: randomMac(deps.randomHex), ...(mtu !== undefined ? { mtu } : {}) },
        { op: 'setLink', name, changes: { up: true } },
      ]);
      const ready: SwitchRecord = { ...record, status: 'ready' };
      await deps.state.switches.put(ready);
      undo.commit();
      deps.log.info('switch created', { switch: id, name });
      return ready;
    } catch (err) {
      await undo.unwind(deps.log);
      throw wrap(`create switch ${name}`, err);
    }
  });
}

/** Removes a switch and the links attached to it; succeeds if it is gone. */
export async function deleteSwitch(deps: LinkDeps, idOrName: string): Promise<void> {
  const sw = await findSwitch(deps, idOrName).catch((err: unknown) => (isCode(err, 'NOT_FOUND') ? undefined : Promise.reject(err)));
  if (!sw) return;
  const attached = (await listLinks(deps)).filter((l) => l.ends.some((e) => e.kind === 'switch' && e.switchId === sw.id));
  await teardownAll([
    ...attached.map((l) => ({ label: `link ${l.id}`, run: () => deleteLink(deps, l.id) })),
    { label: `bridge ${sw.name}`, run: () => deps.netlink(deps.hostNs).removeLink(sw.name) },
    { label: `switch record ${sw.id}`, run: () => deps.state.switches.delete(sw.id) },
  ]).catch((err: unknown) => {
    throw wrap(`delete switch ${sw.name}`, err);
  });
  deps.log.info('switch removed', { switch: sw.id, name: sw.name });
}

export async function listSwitches(deps: LinkDeps): Promise<SwitchRecord[]> {
  return (await deps.state.switches.list()).sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * After a crash: removes half-made switches and links, and links an end of which lost its sandbox
 * or switch. Each suspect is re-read under the lock its creator holds for the whole creation.
 */
export async function reconcileLinks(deps: LinkDeps): Promise<string[]> {
  const cleaned: string[] = [];
  for (const sw of (await deps.state.switches.list()).filter((s) => s.status === 'creating')) {
    // Never waits: a switch whose lock is held is being made right now.
    await deps.state.tryLock(`switch:${sw.name}`, async () => {
      const cur = await deps.state.switches.get(sw.id);
      if (cur?.status !== 'creating') return;
      await deleteSwitch(deps, cur.id);
      cleaned.push(`switch ${cur.name}`);
    });
  }
  // One listing to find the suspects; each is re-checked record by record under its lock.
  const [sandboxes, switches] = await Promise.all([deps.state.sandboxes.list(), deps.state.switches.list()]);
  const haveSb = new Set(sandboxes.map((x) => x.id as string));
  const haveSw = new Set(switches.map((x) => x.id));
  const listedOrphan = (l: LinkRecord): boolean => l.ends.some((e) => (e.kind === 'sandbox' ? !haveSb.has(e.sandboxId) : !haveSw.has(e.switchId)));
  const orphan = async (l: LinkRecord): Promise<boolean> => {
    for (const e of l.ends) {
      const there = e.kind === 'sandbox' ? await deps.state.sandboxes.get(e.sandboxId) : await deps.state.switches.get(e.switchId);
      if (!there) return true;
    }
    return false;
  };
  for (const l of await deps.state.links.list()) {
    if (l.status !== 'creating' && !listedOrphan(l)) continue;
    await deps.state.tryLock(`link:${l.id}`, async () => {
      const cur = await deps.state.links.get(l.id);
      if (!cur || (cur.status !== 'creating' && !(await orphan(cur)))) return;
      await deleteLink(deps, cur.id);
      cleaned.push(`link ${cur.id}`);
    });
  }
  return cleaned;
}
