/**
 * The plan of `tsnet lab up`: the diff of what the file says (a LabSpec) and what runs (Observed,
 * read from the records' labels). Pure.
 *
 * What cannot change in place is re-created: a network, a switch, a node (container) or a link
 * whose hash differs, a node that is not running, and whatever depends on a re-created object:
 * the nodes on a re-created network, the links of a re-created node or switch. A link's
 * impairments change in place. A node with `exec` or `sysctls` is re-created when one of its links
 * is (a link's routes and per-interface settings go with its interface, and exec commands run on
 * a fresh node only), which may in turn re-create its other links; a node without them keeps
 * running and only gets the new interface.
 */
import type { Impairment } from '../sys/api.js';
import type { LabSpec, LinkSpec, NetSpec, NodeSpec, SwitchSpec } from './spec.js';

export interface Observed {
  readonly networks: readonly { readonly key: string; readonly name: string; readonly hash: string | undefined }[];
  /** A node whose sandbox exists without its container has hash undefined and running false. */
  readonly nodes: readonly { readonly key: string; readonly container: string; readonly id: string; readonly hash: string | undefined; readonly running: boolean }[];
  readonly switches: readonly { readonly key: string; readonly name: string; readonly hash: string | undefined }[];
  /** `nodes`: the node keys of its two ends (from its label). */
  readonly links: readonly { readonly id: string; readonly hash: string | undefined; readonly nodes: readonly string[]; readonly impair: readonly [Impairment | undefined, Impairment | undefined] }[];
}

export interface ImpairStep {
  readonly link: string;
  readonly end: 0 | 1;
  readonly impair: Impairment;
}

export interface LabPlan {
  /** In this order: links, nodes (containers), networks, switches. */
  readonly remove: {
    readonly links: readonly string[];
    readonly nodes: readonly string[];
    readonly networks: readonly string[];
    readonly switches: readonly string[];
  };
  /** Switches and networks first, then nodes, then links, then each new node's sysctls and exec. */
  readonly create: {
    readonly switches: readonly SwitchSpec[];
    readonly networks: readonly NetSpec[];
    readonly nodes: readonly NodeSpec[];
    readonly links: readonly LinkSpec[];
  };
  readonly impair: readonly ImpairStep[];
}

export const planSize = (p: LabPlan): number =>
  p.remove.links.length + p.remove.nodes.length + p.remove.networks.length + p.remove.switches.length
  + p.create.switches.length + p.create.networks.length + p.create.nodes.length + p.create.links.length + p.impair.length;

const same = (a: Impairment | undefined, b: Impairment | undefined): boolean => {
  const norm = (x: Impairment | undefined): string => JSON.stringify([x?.rate, x?.delayUs, x?.jitterUs, x?.lossPct]);
  return norm(a) === norm(b);
};

export function planLab(want: LabSpec, have: Observed): LabPlan {
  const haveNet = new Map(have.networks.map((n) => [n.key, n]));
  const haveNode = new Map(have.nodes.map((n) => [n.key, n]));
  const haveSw = new Map(have.switches.map((s) => [s.key, s]));
  const haveLink = new Map(have.links.map((l) => [l.id, l]));
  const wantNet = new Map(want.networks.map((n) => [n.key, n]));
  const wantNode = new Map(want.nodes.map((n) => [n.key, n]));
  const wantSw = new Map(want.switches.map((s) => [s.key, s]));
  const wantLink = new Map(want.links.map((l) => [l.id, l]));

  const netsNew = new Set(want.networks.filter((n) => haveNet.get(n.key)?.hash !== n.hash).map((n) => n.key));
  const swNew = new Set(want.switches.filter((s) => haveSw.get(s.key)?.hash !== s.hash).map((s) => s.key));
  const nodesNew = new Set(want.nodes.filter((n) => {
    const h = haveNode.get(n.key);
    return h === undefined || h.hash !== n.hash || !h.running || n.networks.some((a) => netsNew.has(a.network));
  }).map((n) => n.key));
  const endNew = (l: LinkSpec): boolean => l.ends.some((e) => (e.kind === 'bridge' ? swNew.has(e.node) : nodesNew.has(e.node)));
  const linksNew = new Set<string>();
  const sticky = (key: string): boolean => {
    const n = wantNode.get(key);
    return n !== undefined && (n.exec.length > 0 || Object.keys(n.sysctls).length > 0);
  };
  // Fixed point: a re-created link re-creates its sticky end nodes, whose links are re-created too.
  for (let changed = true; changed;) {
    changed = false;
    for (const l of want.links) {
      if (linksNew.has(l.id)) continue;
      if (haveLink.get(l.id)?.hash !== l.hash || endNew(l)) {
        linksNew.add(l.id);
        changed = true;
      }
    }
    for (const l of want.links) {
      if (!linksNew.has(l.id)) continue;
      for (const e of l.ends) {
        if (e.kind === 'linux' && !nodesNew.has(e.node) && sticky(e.node)) {
          nodesNew.add(e.node);
          changed = true;
        }
      }
    }
  }

  const removeLinks = have.links.filter((l) => !wantLink.has(l.id) || linksNew.has(l.id)).map((l) => l.id);
  const removeNodes = have.nodes.filter((n) => !wantNode.has(n.key) || nodesNew.has(n.key)).map((n) => n.container);
  const removeNets = have.networks.filter((n) => !wantNet.has(n.key) || netsNew.has(n.key)).map((n) => n.name);
  const removeSw = have.switches.filter((s) => !wantSw.has(s.key) || swNew.has(s.key)).map((s) => s.name);

  const impair: ImpairStep[] = [];
  for (const l of want.links) {
    const h = haveLink.get(l.id);
    if (linksNew.has(l.id) || h === undefined) continue;
    for (const end of [0, 1] as const) if (!same(h.impair[end], l.impair)) impair.push({ link: l.id, end, impair: l.impair ?? {} });
  }
  return {
    remove: { links: removeLinks, nodes: removeNodes, networks: removeNets, switches: removeSw },
    create: {
      switches: want.switches.filter((s) => swNew.has(s.key)),
      networks: want.networks.filter((n) => netsNew.has(n.key)),
      nodes: want.nodes.filter((n) => nodesNew.has(n.key)),
      links: want.links.filter((l) => linksNew.has(l.id)),
    },
    impair,
  };
}

/** One line per step, for `up --dry-run` and the logs. */
export function describePlan(p: LabPlan): string[] {
  return [
    ...p.remove.links.map((id) => `remove link ${id}`),
    ...p.remove.nodes.map((n) => `remove node ${n}`),
    ...p.remove.networks.map((n) => `remove network ${n}`),
    ...p.remove.switches.map((n) => `remove bridge ${n}`),
    ...p.create.switches.map((s) => `create bridge ${s.bridge}`),
    ...p.create.networks.map((n) => `create network ${n.name}`),
    ...p.create.nodes.map((n) => `create node ${n.container}`),
    ...p.create.links.map((l) => `create link ${l.label}`),
    ...p.impair.map((s) => `impair link ${s.link} end ${s.end}`),
  ];
}
