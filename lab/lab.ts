/**
 * `tsnet lab`: up (idempotent; a changed file converges), down, inspect, ls, impair. Free functions
 * over LabDeps, bound by `createLab`.
 *
 * `up` validates the whole file first (and the kernel's netem support when the file needs it): an
 * invalid file changes nothing. Under the lab's lock it then writes the lab record, naming every
 * object the lab may own, before the first change; plans the diff of the file and what runs; and
 * applies it. A failure rolls back to the state before: the same planner converges what runs to
 * the last file that was fully up (nothing, for a new lab). `down` removes everything the record
 * names or the labels mark as the lab's, and nothing else, also after a crash in the middle of `up`.
 */
import { TsnetError } from '../core/errors.js';
import type { LinkRecord } from '../cnm/model.js';
import type { Impairment } from '../sys/api.js';
import type { ExecResult } from '../runtime/api.js';
import { LABEL_KEY, LABEL_LAB, type LabDeps, type LabRecord, type Owned } from './api.js';
import { applyPlan, observe, ownedBy, readWorld, unionOwned, type ApplyOptions } from './apply.js';
import { describePlan, planLab, planSize } from './plan.js';
import type { LabFile } from './schema.js';
import { emptyLab, normalizeLab, parseLabFile, type LabSpec } from './spec.js';
import { formatImpairment, needsNetem } from './units.js';

export interface UpOptions extends ApplyOptions {
  /** Where the file came from (error messages, the record). */
  readonly source?: string;
  readonly file?: string;
  /** Only compute the plan. */
  readonly dryRun?: boolean;
}

export interface UpResult {
  readonly name: string;
  readonly steps: readonly string[];
}

const noOwned: Owned = { containers: [], networks: [], switches: [], links: [] };

/** Refuses a file that needs netem on a kernel without it, naming the first such field. */
async function checkKernel(deps: LabDeps, spec: LabSpec): Promise<void> {
  const [first] = spec.netemFields;
  if (first === undefined || (await deps.netemAvailable())) return;
  throw new TsnetError('UNAVAILABLE', `${first}: this kernel has no netem (sch_netem), so delay, jitter and loss cannot be applied (${spec.netemFields.join(', ')}); rate works (tbf)`, {
    details: { field: first, fields: spec.netemFields },
  });
}

export async function labUp(deps: LabDeps, text: string, opts: UpOptions = {}): Promise<UpResult> {
  const source = opts.source ?? 'lab file';
  const file = parseLabFile(text, source);
  const spec = normalizeLab(file, source);
  await checkKernel(deps, spec);
  if (opts.dryRun !== true) await deps.reconcile();
  return deps.withLock(`lab/${spec.name}`, async () => {
    const rec = await deps.labs.get(spec.name);
    const have = await observe(deps, spec.name, rec?.owned);
    const plan = planLab(spec, have);
    const steps = describePlan(plan);
    if (opts.dryRun === true) return { name: spec.name, steps };
    opts.onProgress?.({ kind: 'plan', steps, totals: totalsOf(plan) });
    if (planSize(plan) === 0 && rec?.status === 'ready' && JSON.stringify(rec.spec) === JSON.stringify(file)) return { name: spec.name, steps };
    const now = deps.now().toISOString();
    const previous: LabFile | null = rec === undefined ? null : rec.status === 'ready' ? rec.spec : rec.previous;
    const base = { schemaVersion: 1 as const, name: spec.name, created: rec?.created ?? now, ...(opts.file !== undefined ? { file: opts.file } : rec?.file !== undefined ? { file: rec.file } : {}) };
    await deps.labs.put({ ...base, updated: now, status: 'applying', spec: file, previous, owned: unionOwned(rec?.owned ?? noOwned, ownedBy(spec)) });
    const applied = { created: new Set<string>(), finished: new Set<string>() };
    try {
      await applyPlan(deps, spec, plan, have, opts, applied);
    } catch (err) {
      // A node made by this up whose exec commands did not all run is not what any file says.
      const unfinished = new Set([...applied.created].filter((k) => !applied.finished.has(k)));
      const { file: _new, ...rest } = base;
      await rollback(deps, spec.name, previous, { ...rest, ...(rec?.file !== undefined ? { file: rec.file } : {}) }, unfinished, opts);
      throw err instanceof TsnetError ? new TsnetError(err.code, `${err.message} (rolled back)`, { cause: err, details: err.details }) : err;
    }
    await deps.labs.put({ ...base, updated: deps.now().toISOString(), status: 'ready', spec: file, previous: null, owned: ownedBy(spec) });
    deps.log.info('lab up', { lab: spec.name, steps: steps.length });
    return { name: spec.name, steps };
  });
}

/** Converges what runs back to `previous` (nothing, for a new lab); leaves the record for `down` if that fails too. */
async function rollback(
  deps: LabDeps, name: string, previous: LabFile | null, base: Omit<LabRecord, 'updated' | 'status' | 'spec' | 'previous' | 'owned'>, unfinished: ReadonlySet<string>, opts: ApplyOptions,
): Promise<void> {
  const reason = 'up failed';
  opts.onProgress?.({ kind: 'rollback', reason });
  const target = previous === null ? emptyLab(name) : normalizeLab(previous, 'previous lab file');
  const cur = await deps.labs.get(name);
  try {
    const seen = await observe(deps, name, cur?.owned);
    const have = { ...seen, nodes: seen.nodes.map((n) => (unfinished.has(n.key) ? { ...n, running: false } : n)) };
    await applyPlan(deps, target, planLab(target, have), have, opts);
    if (previous === null) await deps.labs.delete(name);
    else await deps.labs.put({ ...base, updated: deps.now().toISOString(), status: 'ready', spec: previous, previous: null, owned: ownedBy(target) });
  } catch (err) {
    deps.log.warn('rollback of lab up failed; `tsnet lab down` removes what is left', { lab: name, err: err instanceof Error ? err.message : String(err) });
  }
}

function totalsOf(plan: ReturnType<typeof planLab>): Record<'remove' | 'network' | 'bridge' | 'node' | 'link' | 'exec' | 'impair', number> {
  return {
    remove: plan.remove.links.length + plan.remove.nodes.length + plan.remove.networks.length + plan.remove.switches.length,
    network: plan.create.networks.length,
    bridge: plan.create.switches.length,
    node: plan.create.nodes.length,
    link: plan.create.links.length,
    exec: plan.create.nodes.filter((n) => n.exec.length > 0 || Object.keys(n.sysctls).length > 0).length,
    impair: plan.impair.length,
  };
}

/** Removes everything lab `name` owns; NOT_FOUND if there is no such lab. Idempotent otherwise. */
export async function labDown(deps: LabDeps, name: string, opts: ApplyOptions = {}): Promise<{ readonly removed: number }> {
  await deps.reconcile();
  return deps.withLock(`lab/${name}`, async () => {
    const rec = await deps.labs.get(name);
    const world = await readWorld(deps);
    const seen = await observe(deps, name, rec?.owned, world);
    const owned = unionOwned(rec?.owned ?? noOwned, {
      containers: seen.nodes.map((n) => n.container), networks: seen.networks.map((n) => n.name),
      switches: seen.switches.map((s) => s.name), links: seen.links.map((l) => l.id),
    });
    const count = owned.containers.length + owned.networks.length + owned.switches.length + owned.links.length;
    if (rec === undefined && count === 0) throw new TsnetError('NOT_FOUND', `no lab ${name}`, { details: { field: 'name', value: name } });
    // Only what still exists: the record may name objects a crash kept from being made.
    const { links, sandboxes, containers, networks, switches } = world;
    const live = {
      links: owned.links.filter((id) => links.some((l) => l.id === id)),
      nodes: owned.containers.filter((c) => sandboxes.some((s) => s.name === c) || containers.some((x) => x.name === c)),
      networks: owned.networks.filter((n) => networks.some((x) => x.name === n && x.labels[LABEL_LAB] === name)),
      switches: owned.switches.filter((n) => switches.some((x) => x.name === n && x.labels[LABEL_LAB] === name)),
    };
    await applyPlan(deps, emptyLab(name), { remove: live, create: { switches: [], networks: [], nodes: [], links: [] }, impair: [] }, seen, opts);
    await deps.labs.delete(name);
    deps.log.info('lab down', { lab: name });
    return { removed: live.links.length + live.nodes.length + live.networks.length + live.switches.length };
  });
}

export interface InterfaceView {
  readonly name: string;
  /** network: an endpoint on a lab network; link: a point-to-point link end; port: a bridge's port. */
  readonly kind: 'network' | 'link' | 'port';
  readonly network?: string;
  readonly peer?: string;
  readonly addresses: readonly string[];
  readonly mac?: string;
  readonly impair?: string;
}

export interface NodeView {
  readonly name: string;
  readonly kind: 'linux' | 'bridge';
  /** The container's name (linux) or the bridge's (bridge). */
  readonly object: string;
  readonly status: string;
  readonly pid?: number;
  readonly interfaces: readonly InterfaceView[];
}

export interface LabView {
  readonly name: string;
  readonly status: string;
  readonly file?: string;
  readonly nodes: readonly NodeView[];
  readonly links: readonly { readonly id: string; readonly label: string; readonly mtu?: number; readonly status: string; readonly ends: readonly { readonly node: string; readonly interface: string; readonly addresses: readonly string[]; readonly impair?: string }[] }[];
  readonly networks: readonly { readonly name: string; readonly key: string; readonly subnets: readonly string[]; readonly gateways: readonly string[] }[];
}

/** "a:eth1 -- b:eth1" → [["a","eth1"],["b","eth1"]]. */
const endNames = (l: LinkRecord): [[string, string], [string, string]] => {
  const parts = (l.labels[LABEL_KEY] ?? ' -- ').split(' -- ').map((s) => [s.slice(0, s.indexOf(':')), s.slice(s.indexOf(':') + 1)] as [string, string]);
  return [parts[0] ?? ['', ''], parts[1] ?? ['', '']];
};

/** The link ends `mine` picks out, as interfaces with the other end as peer. */
function linkInterfaces(links: readonly LinkRecord[], kind: 'link' | 'port', mine: (e: LinkRecord['ends'][number]) => boolean): InterfaceView[] {
  const out: InterfaceView[] = [];
  for (const l of links) {
    const names = endNames(l);
    l.ends.forEach((e, i) => {
      if (!mine(e)) return;
      const other = names[i === 0 ? 1 : 0];
      const imp = formatImpairment(e.impair);
      out.push({ name: e.ifName, kind, peer: `${other[0]}:${other[1]}`, addresses: e.kind === 'sandbox' ? [...e.addresses] : [], mac: e.mac, ...(imp !== '' ? { impair: imp } : {}) });
    });
  }
  return out;
}

export async function labInspect(deps: LabDeps, name: string): Promise<LabView> {
  const rec = await deps.labs.get(name);
  const world = await readWorld(deps);
  const seen = await observe(deps, name, rec?.owned, world);
  if (rec === undefined && seen.nodes.length + seen.networks.length + seen.switches.length + seen.links.length === 0) {
    throw new TsnetError('NOT_FOUND', `no lab ${name}`, { details: { field: 'name', value: name } });
  }
  const { containers, sandboxes, networks, switches, links } = world;
  const mineLinks = links.filter((l) => l.labels[LABEL_LAB] === name);
  const netById = new Map(networks.map((n) => [n.id as string, n]));
  const nodes: NodeView[] = [];
  for (const n of seen.nodes) {
    const c = containers.find((x) => x.name === n.container);
    const sb = sandboxes.find((s) => s.name === n.container);
    const eps = sb ? await deps.controller.endpointsOf(sb.id) : [];
    const ifs: InterfaceView[] = eps.map((e) => ({ name: e.ifName, kind: 'network', network: netById.get(e.networkId)?.name ?? e.networkId, addresses: [...e.addresses], ...(e.mac !== undefined ? { mac: e.mac } : {}) }));
    ifs.push(...linkInterfaces(mineLinks, 'link', (e) => e.kind === 'sandbox' && e.sandboxId === sb?.id));
    ifs.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
    nodes.push({ name: n.key, kind: 'linux', object: n.container, status: c?.status ?? 'no container', ...(c?.pid != null ? { pid: c.pid } : {}), interfaces: ifs });
  }
  for (const s of seen.switches) {
    const sw = switches.find((x) => x.name === s.name);
    const ports = linkInterfaces(mineLinks, 'port', (e) => e.kind === 'switch' && e.switchId === sw?.id);
    nodes.push({ name: s.key, kind: 'bridge', object: s.name, status: sw?.status === 'ready' ? 'up' : sw?.status ?? 'missing', interfaces: ports });
  }
  nodes.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  return {
    name,
    status: rec?.status ?? 'unrecorded',
    ...(rec?.file !== undefined ? { file: rec.file } : {}),
    nodes,
    links: mineLinks.map((l) => {
      const names = endNames(l);
      return {
        id: l.id, label: l.labels[LABEL_KEY] ?? l.id, status: l.status, ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
        ends: l.ends.map((e, i) => {
          const imp = formatImpairment(e.impair);
          return { node: names[i]?.[0] ?? '', interface: names[i]?.[1] ?? e.ifName, addresses: e.kind === 'sandbox' ? [...e.addresses] : [], ...(imp !== '' ? { impair: imp } : {}) };
        }),
      };
    }),
    networks: networks.filter((n) => n.labels[LABEL_LAB] === name).map((n) => ({
      name: n.name, key: n.labels[LABEL_KEY] ?? '', subnets: n.subnets.map((s) => s.subnet), gateways: n.subnets.map((s) => s.gateway),
    })),
  };
}

export async function labList(deps: LabDeps): Promise<{ readonly name: string; readonly status: string; readonly nodes: number; readonly links: number; readonly file?: string }[]> {
  return (await deps.labs.list()).map((r) => ({
    name: r.name, status: r.status, nodes: Object.keys(r.spec.nodes).length, links: (r.spec.links ?? []).length, ...(r.file !== undefined ? { file: r.file } : {}),
  })).sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * `LAB-NODE:IF` → the link end, then its impairments replaced by `imp` (empty: none). The file
 * stays the truth: the next `up` of it puts its own impairments back.
 */
export async function labImpair(deps: LabDeps, ref: string, imp: Impairment, fields: Readonly<Record<'delay' | 'jitter' | 'loss', string>>): Promise<LinkRecord> {
  const colon = ref.lastIndexOf(':');
  if (colon <= 0 || colon === ref.length - 1) throw new TsnetError('INVALID_CONFIG', `link end: expected LAB-NODE:INTERFACE, got ${JSON.stringify(ref)}`, { details: { field: 'link end' } });
  const who = ref.slice(0, colon);
  const ifName = ref.slice(colon + 1);
  if (needsNetem(imp) && !(await deps.netemAvailable())) {
    const f = imp.delayUs !== undefined ? fields.delay : imp.jitterUs !== undefined ? fields.jitter : fields.loss;
    throw new TsnetError('UNAVAILABLE', `${f}: this kernel has no netem (sch_netem), so delay, jitter and loss cannot be applied; --rate works (tbf)`, { details: { field: f } });
  }
  const labs = (await deps.labs.list()).map((r) => r.name).filter((n) => who.startsWith(`${n}-`)).sort((a, b) => b.length - a.length);
  for (const lab of labs) {
    const node = who.slice(lab.length + 1);
    for (const l of await deps.controller.listLinks()) {
      if (l.labels[LABEL_LAB] !== lab) continue;
      const i = endNames(l).findIndex(([n, f]) => n === node && f === ifName);
      if (i >= 0) return deps.controller.impairLink(l.id, i, imp);
    }
  }
  throw new TsnetError('NOT_FOUND', `link end ${ref}: no link of a lab ends there`, { details: { field: 'link end', value: ref } });
}

/** The record of lab `name`; NOT_FOUND if there is none. */
export async function labRecord(deps: LabDeps, name: string): Promise<LabRecord> {
  const rec = await deps.labs.get(name);
  if (!rec) throw new TsnetError('NOT_FOUND', `no lab ${name}`, { details: { field: 'name', value: name } });
  return rec;
}

export interface Lab {
  up(text: string, opts?: UpOptions): Promise<UpResult>;
  down(name: string, opts?: ApplyOptions): Promise<{ readonly removed: number }>;
  inspect(name: string): Promise<LabView>;
  list(): ReturnType<typeof labList>;
  impair(ref: string, imp: Impairment, fields: Readonly<Record<'delay' | 'jitter' | 'loss', string>>): Promise<LinkRecord>;
  record(name: string): Promise<LabRecord>;
  /** Runs argv in a node's container. */
  exec(container: string, argv: readonly [string, ...string[]]): Promise<ExecResult>;
}

export function createLab(deps: LabDeps): Lab {
  return {
    up: (text, opts) => labUp(deps, text, opts),
    down: (name, opts) => labDown(deps, name, opts),
    inspect: (name) => labInspect(deps, name),
    list: () => labList(deps),
    impair: (ref, imp, fields) => labImpair(deps, ref, imp, fields),
    record: (name) => labRecord(deps, name),
    exec: (container, argv) => deps.runtime.exec(container, argv),
  };
}
