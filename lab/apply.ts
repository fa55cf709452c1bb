/**
 * Reading what a lab runs (`observe`), and carrying out a plan (`applyPlan`) in one process through
 * the engine's controller and runtime: removals first (links, nodes, networks, bridges), then the
 * creations as a dependency graph under one concurrency bound: a node starts as soon as its
 * networks exist, a link as soon as both its ends do, a new node's sysctls and exec commands run
 * once all its links are up; impairments last. After the first failure nothing new is started, and
 * `applyPlan` returns only once everything in flight has settled, so a rollback never races it.
 */
import pLimit from 'p-limit';
import { TsnetError, isCode, wrap } from '../core/errors.js';
import type { ConnectRequest } from '../cnm/controller.js';
import type { LinkEndRequest } from '../cnm/links.js';
import type { NetnsRef } from '../core/net.js';
import type { Impairment } from '../sys/api.js';
import { LABEL_HASH, LABEL_KEY, LABEL_LAB, type LabDeps, type LabProgress, type Owned, type ProgressWhat } from './api.js';
import type { LabPlan, Observed } from './plan.js';
import type { AttachSpec, LabSpec, LinkSpec, NodeSpec } from './spec.js';

export interface ApplyOptions {
  /** At most this many creations or removals at once (default 8). */
  readonly parallel?: number;
  readonly onProgress?: (p: LabProgress) => void;
}

/** What an apply got done: nodes created, and those of them whose sysctls and exec ran too. */
export interface Applied {
  readonly created: Set<string>;
  readonly finished: Set<string>;
}

const impairOf = (e: { readonly impair?: Impairment | undefined }): Impairment | undefined => e.impair;

/** Everything that runs (the lists `observe` reads), for callers that need more than the lab's part. */
export interface World {
  readonly containers: Awaited<ReturnType<LabDeps['runtime']['list']>>;
  readonly sandboxes: Awaited<ReturnType<LabDeps['controller']['listSandboxes']>>;
  readonly networks: Awaited<ReturnType<LabDeps['controller']['listNetworks']>>;
  readonly switches: Awaited<ReturnType<LabDeps['controller']['listSwitches']>>;
  readonly links: Awaited<ReturnType<LabDeps['controller']['listLinks']>>;
}

export async function readWorld(deps: LabDeps): Promise<World> {
  const [containers, sandboxes, networks, switches, links] = await Promise.all([
    deps.runtime.list(), deps.controller.listSandboxes(), deps.controller.listNetworks(), deps.controller.listSwitches(), deps.controller.listLinks(),
  ]);
  return { containers, sandboxes, networks, switches, links };
}

/** What of lab `name` runs, from the labels on containers, networks, switches and links. */
export async function observe(deps: LabDeps, name: string, owned: Owned | undefined, world?: World): Promise<Observed> {
  const mine = (labels: Readonly<Record<string, string>>): boolean => labels[LABEL_LAB] === name;
  const { containers, sandboxes, networks, switches, links } = world ?? (await readWorld(deps));
  const nodes: { key: string; container: string; id: string; hash: string | undefined; running: boolean }[] = containers
    .filter((c) => mine(c.labels))
    .map((c) => ({ key: c.labels[LABEL_KEY] ?? '', container: c.name, id: c.id, hash: c.labels[LABEL_HASH], running: c.status === 'running' }));
  const prefix = `${name}-`;
  // A sandbox of the lab without its container (a crash between the two): present, to re-create.
  for (const sb of sandboxes) {
    if (nodes.some((n) => n.container === sb.name) || !(owned?.containers.includes(sb.name) ?? false) || !sb.name.startsWith(prefix)) continue;
    nodes.push({ key: sb.name.slice(prefix.length), container: sb.name, id: sb.id, hash: undefined, running: false });
  }
  return {
    nodes,
    networks: networks.filter((n) => mine(n.labels)).map((n) => ({ key: n.labels[LABEL_KEY] ?? '', name: n.name, hash: n.status === 'ready' ? n.labels[LABEL_HASH] : undefined })),
    switches: switches.filter((s) => mine(s.labels)).map((s) => ({ key: s.labels[LABEL_KEY] ?? '', name: s.name, hash: s.status === 'ready' ? s.labels[LABEL_HASH] : undefined })),
    links: links.filter((l) => mine(l.labels)).map((l) => ({
      id: l.id, hash: l.status === 'ready' ? l.labels[LABEL_HASH] : undefined, impair: [impairOf(l.ends[0]), impairOf(l.ends[1])] as const,
      nodes: l.ends.flatMap((e, i) => (e.kind === 'sandbox' ? [(l.labels[LABEL_KEY] ?? '').split(' -- ')[i]?.split(':')[0] ?? ''] : [])),
    })),
  };
}

/** Every name a spec makes (what a lab record must own before `up` makes them). */
export function ownedBy(spec: LabSpec): Owned {
  return {
    containers: spec.nodes.map((n) => n.container),
    networks: spec.networks.map((n) => n.name),
    switches: spec.switches.map((s) => s.bridge),
    links: spec.links.map((l) => l.id),
  };
}

export function unionOwned(a: Owned, b: Owned): Owned {
  const u = (x: readonly string[], y: readonly string[]): string[] => [...new Set([...x, ...y])].sort();
  return { containers: u(a.containers, b.containers), networks: u(a.networks, b.networks), switches: u(a.switches, b.switches), links: u(a.links, b.links) };
}

const ignoreMissing = (err: unknown): Promise<void> => (isCode(err, 'NOT_FOUND') ? Promise.resolve() : Promise.reject(err));

/** Removes a node's container (its sandbox goes with it) or, without one, its sandbox. */
export async function removeNode(deps: LabDeps, container: string): Promise<void> {
  const gone = await deps.runtime.remove(container, { force: true });
  if (gone === undefined) await deps.controller.deleteSandbox(container).catch(ignoreMissing);
}

function connectOf(a: AttachSpec, ports?: NodeSpec['ports']): ConnectRequest {
  return {
    aliases: [...a.aliases],
    ...(a.ip !== undefined ? { ip: a.ip } : {}), ...(a.ip6 !== undefined ? { ip6: a.ip6 } : {}), mac: a.mac,
    ...(ports !== undefined && ports.length > 0 ? { ports } : {}),
  };
}

/**
 * One node: its sandbox (on its first network, or with loopback only), its other networks, then its
 * container. Held under `container/<id>` until the container record exists, like `tsnet run`, so a
 * concurrent reconcile never takes the half-made node for a crashed one.
 */
async function createNode(deps: LabDeps, lab: string, n: NodeSpec): Promise<{ readonly id: string; readonly ns: NetnsRef }> {
  const id = deps.randomHex(32);
  const net = (a: AttachSpec): string => `${lab}-${a.network}`;
  const [first, ...rest] = n.networks;
  return deps.withLock(`container/${id}`, async () => {
    const sb = await deps.controller.createSandbox({
      id, name: n.container, hostname: n.hostname,
      mode: first !== undefined ? { kind: 'network', network: net(first) } : { kind: 'none' },
      ...(first !== undefined ? { connect: connectOf(first, n.ports) } : {}),
    });
    try {
      for (const a of rest) await deps.controller.connect(id, net(a), connectOf(a));
      await deps.runtime.run({
        id, name: n.container, hostname: n.hostname, argv: [...n.argv], env: { ...n.env },
        ...(n.workdir !== undefined ? { cwd: n.workdir } : {}), ...(n.rootfs !== undefined ? { rootfs: n.rootfs } : {}),
        netns: sb.netns,
        files: { '/etc/hosts': { hostPath: sb.record.hostsPath }, '/etc/resolv.conf': { hostPath: sb.record.resolvConfPath } },
        labels: { ...n.labels, [LABEL_LAB]: lab, [LABEL_KEY]: n.key, [LABEL_HASH]: n.hash },
        // The network settings in the shape `tsnet run` keeps them (cli/container-config.ts): `tsnet
        // ps` shows the node's networks, and `tsnet start` re-makes its sandbox on them (its links
        // come back with the next `lab up`).
        config: {
          mode: first !== undefined ? net(first) : 'none',
          networks: n.networks.map((a) => ({ name: net(a), aliases: [...a.aliases], mac: a.mac, ...(a.ip !== undefined ? { ip: a.ip } : {}), ...(a.ip6 !== undefined ? { ip6: a.ip6 } : {}) })),
          publish: [...n.publish],
          hostname: n.hostname,
        },
      }, { detach: true });
    } catch (err) {
      await deps.runtime.remove(id, { force: true }).catch(() => undefined);
      await deps.controller.deleteSandbox(id).catch(() => undefined);
      throw err;
    }
    return { id, ns: sb.netns };
  });
}

/** The link's ends as the controller takes them: sandboxes by id where known (no listing), bridges by name. */
function linkEnds(spec: LabSpec, l: LinkSpec, ids: ReadonlyMap<string, string>): readonly [LinkEndRequest, LinkEndRequest] {
  const bridgeOf = (key: string): string => spec.switches.find((s) => s.key === key)?.bridge ?? key;
  const end = (i: 0 | 1): LinkEndRequest => {
    const e = l.ends[i];
    const impair = l.impair !== undefined ? { impair: l.impair } : {};
    if (e.kind === 'bridge') return { switch: bridgeOf(e.node), mac: e.mac, ...impair };
    return { sandbox: ids.get(e.node) ?? `${spec.name}-${e.node}`, ifName: e.ifName, addresses: [...e.addresses], mac: e.mac, ...impair };
  };
  return [end(0), end(1)];
}

/** Node sysctls, then its exec commands in order; a failing command names its path in the file. */
async function finishNode(deps: LabDeps, n: NodeSpec, ns: NetnsRef): Promise<void> {
  if (Object.keys(n.sysctls).length > 0) {
    await deps.sysctl(ns).set(n.sysctls).catch((err: unknown) => {
      throw wrap(`nodes.${n.key}.sysctls`, err);
    });
  }
  for (const e of n.exec) {
    const r = await deps.runtime.exec(n.container, e.argv, { timeoutMs: 60_000 });
    if (r.exitCode !== 0) {
      throw new TsnetError('INVALID_CONFIG', `${e.path}: ${JSON.stringify(e.argv.join(' '))} exited ${r.exitCode} in ${n.container}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`, { details: { field: e.path } });
    }
  }
}

/** `have`: what ran when the plan was made (the ids of the nodes that stay). */
export async function applyPlan(deps: LabDeps, spec: LabSpec, plan: LabPlan, have: Observed | undefined, opts: ApplyOptions = {}, applied: Applied = { created: new Set(), finished: new Set() }): Promise<void> {
  const limit = pLimit(opts.parallel ?? 8);
  const lab = spec.name;
  let failure: unknown;
  const step = <T>(what: ProgressWhat, name: string, fn: () => Promise<T>): Promise<T> =>
    limit(async () => {
      if (failure !== undefined) throw new TsnetError('UNAVAILABLE', `${what} ${name}: not started (an earlier step failed)`, { details: { skipped: true } });
      const t0 = deps.now().getTime();
      try {
        const v = await fn();
        opts.onProgress?.({ kind: 'step', what, name, ok: true, ms: deps.now().getTime() - t0 });
        return v;
      } catch (err) {
        failure ??= err;
        opts.onProgress?.({ kind: 'step', what, name, ok: false, ms: deps.now().getTime() - t0 });
        throw err;
      }
    });
  const settle = async (ps: readonly Promise<unknown>[]): Promise<void> => {
    await Promise.allSettled(ps);
    if (failure !== undefined) throw failure;
  };

  // Removals, each kind after the one that depends on it. A link with an end in a node that goes
  // is left to that node: deleting its namespace deletes the pair (in one kernel batch for all).
  const goners = new Set(plan.remove.nodes);
  const byNode = new Map((have?.links ?? []).map((l) => [l.id, l.nodes]));
  const explicit = plan.remove.links.filter((id) => !(byNode.get(id) ?? []).some((k) => goners.has(`${lab}-${k}`)));
  await settle(explicit.map((id) => step('remove', `link ${id}`, () => deps.controller.deleteLink(id))));
  await settle(plan.remove.nodes.map((c) => step('remove', `node ${c}`, () => removeNode(deps, c))));
  await settle(plan.remove.networks.map((n) => step('remove', `network ${n}`, () => deps.controller.deleteNetwork(n).catch(ignoreMissing))));
  await settle(plan.remove.switches.map((n) => step('remove', `bridge ${n}`, () => deps.controller.deleteSwitch(n))));

  // Creations as a dependency graph.
  const done = Promise.resolve();
  const nets = new Map(plan.create.networks.map((n) => [n.key, step('network', n.name, () => deps.controller.createNetwork({
    ...n.request, labels: { [LABEL_LAB]: lab, [LABEL_KEY]: n.key, [LABEL_HASH]: n.hash },
  }))]));
  const sws = new Map(plan.create.switches.map((s) => [s.key, step('bridge', s.bridge, () => deps.controller.createSwitch({
    name: s.bridge, ...(s.mtu !== undefined ? { mtu: s.mtu } : {}), labels: { [LABEL_LAB]: lab, [LABEL_KEY]: s.key, [LABEL_HASH]: s.hash },
  }))]));
  const ids = new Map((have?.nodes ?? []).map((n) => [n.key, n.id]));
  const nodeNs = new Map<string, Promise<NetnsRef>>();
  for (const n of plan.create.nodes) {
    const after = Promise.all(n.networks.map((a) => nets.get(a.network) ?? done));
    nodeNs.set(n.key, after.then(() => step('node', n.key, async () => {
      const made = await createNode(deps, lab, n);
      ids.set(n.key, made.id);
      applied.created.add(n.key);
      return made.ns;
    })));
  }
  const endReady = (e: LinkSpec['ends'][number]): Promise<unknown> => (e.kind === 'bridge' ? sws.get(e.node) : nodeNs.get(e.node)) ?? done;
  const linkDone = new Map<string, Promise<unknown>>();
  for (const l of plan.create.links) {
    linkDone.set(l.id, Promise.all(l.ends.map(endReady)).then(() => step('link', l.label, () => deps.controller.createLink({
      id: l.id, ends: linkEnds(spec, l, ids), ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
      labels: { [LABEL_LAB]: lab, [LABEL_KEY]: l.label, [LABEL_HASH]: l.hash },
    }))));
  }
  // A new node's sysctls and exec once every link of it is up (also links of nodes kept running).
  const finish = plan.create.nodes.map(async (n) => {
    const ns = await (nodeNs.get(n.key) ?? Promise.reject(new Error('unreachable')));
    const mine = spec.links.filter((l) => l.ends.some((e) => e.kind === 'linux' && e.node === n.key)).map((l) => linkDone.get(l.id) ?? done);
    await Promise.all(mine);
    if (n.exec.length > 0 || Object.keys(n.sysctls).length > 0) await step('exec', n.key, () => finishNode(deps, n, ns));
    applied.finished.add(n.key);
  });
  await settle([...nets.values(), ...sws.values(), ...nodeNs.values(), ...linkDone.values(), ...finish]);
  await settle(plan.impair.map((s) => step('impair', `${s.link}[${s.end}]`, () => deps.controller.impairLink(s.link, s.end, s.impair))));
}
