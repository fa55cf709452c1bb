/** The plan of `lab up`: the diff of a file and what runs (pure). */
import t from 'tap';
import { describePlan, planLab, planSize, type Observed } from './plan.js';
import { emptyLab, parseLab, type LabSpec } from './spec.js';

const FILE = `name: t
networks:
  lan: { subnet: 10.1.0.0/24 }
nodes:
  r1: { networks: [lan], exec: ["ip route add 10.2.0.0/24 via 10.0.12.2"] }
  r2: {}
  r3: {}
  h1: { networks: [lan] }
  s1: { kind: bridge }
links:
  - endpoints: [{ node: r1, interface: eth1, ipv4: 10.0.12.1/30 }, { node: r2, interface: eth1, ipv4: 10.0.12.2/30 }]
  - endpoints: ["r2:eth2", "r3:eth1"]
    impair: { rate: 10mbit }
  - endpoints: ["r3:eth2", "s1:p1"]
`;

/** What runs when exactly `spec` was brought up. */
function running(spec: LabSpec): Observed {
  return {
    networks: spec.networks.map((n) => ({ key: n.key, name: n.name, hash: n.hash })),
    nodes: spec.nodes.map((n, i) => ({ key: n.key, container: n.container, id: `id${i}`, hash: n.hash, running: true })),
    switches: spec.switches.map((s) => ({ key: s.key, name: s.bridge, hash: s.hash })),
    links: spec.links.map((l) => ({ id: l.id, hash: l.hash, nodes: l.ends.filter((e) => e.kind === 'linux').map((e) => e.node), impair: [l.impair, l.impair] as const })),
  };
}

const names = (xs: readonly { key: string }[]): string[] => xs.map((x) => x.key).sort();

t.test('a new lab: everything is created, in dependency order', async (t) => {
  const spec = parseLab(FILE);
  const p = planLab(spec, running(emptyLab('t')));
  t.same(names(p.create.networks), ['lan']);
  t.same(names(p.create.switches), ['s1']);
  t.same(names(p.create.nodes), ['h1', 'r1', 'r2', 'r3']);
  t.equal(p.create.links.length, 3);
  t.same(p.remove, { links: [], nodes: [], networks: [], switches: [] });
  t.same(describePlan(p).slice(0, 2), ['create bridge t-s1', 'create network t-lan']);
});

t.test('an unchanged file: nothing to do (idempotent)', async (t) => {
  const spec = parseLab(FILE);
  t.equal(planSize(planLab(spec, running(spec))), 0);
});

t.test('a node that stopped is re-created, and so are its links', async (t) => {
  const spec = parseLab(FILE);
  const have = running(spec);
  const p = planLab(spec, { ...have, nodes: have.nodes.map((n) => (n.key === 'r3' ? { ...n, running: false } : n)) });
  t.same(names(p.create.nodes), ['r3']);
  t.same(p.remove.nodes, ['t-r3']);
  t.same(p.create.links.map((l) => l.label).sort(), ['r2:eth2 -- r3:eth1', 'r3:eth2 -- s1:p1']);
});

t.test('a changed impairment changes in place, on both ends', async (t) => {
  const spec = parseLab(FILE);
  const next = parseLab(FILE.replace('rate: 10mbit', 'rate: 5mbit'));
  const p = planLab(next, running(spec));
  t.same(p.impair.map((s) => [s.end, s.impair.rate]), [[0, 5_000_000], [1, 5_000_000]]);
  t.equal(p.create.links.length + p.remove.links.length + p.create.nodes.length, 0, 'nothing re-created');
  const cleared = planLab(parseLab(FILE.replace('\n    impair: { rate: 10mbit }', '')), running(spec));
  t.same(cleared.impair.map((s) => s.impair), [{}, {}], 'an impairment taken out of the file is removed');
});

t.test('a changed node is re-created; a node without exec keeps running when only its link changes', async (t) => {
  const spec = parseLab(FILE);
  const p = planLab(parseLab(FILE.replace('  h1: { networks: [lan] }', '  h1: { networks: [lan], env: { A: "1" } }')), running(spec));
  t.same(names(p.create.nodes), ['h1']);
  t.same(p.remove.nodes, ['t-h1']);
  t.equal(p.create.links.length, 0);
  const mtu = planLab(parseLab(FILE.replace('["r2:eth2", "r3:eth1"]', '["r2:eth2", "r3:eth1"]\n    mtu: 1400')), running(spec));
  t.same(mtu.create.links.map((l) => l.label), ['r2:eth2 -- r3:eth1']);
  t.same(mtu.remove.links.length, 1);
  t.same(mtu.create.nodes, [], 'r2 and r3 have no exec or sysctls: only the link');
});

t.test('a node with exec is re-created with its link, and that cascades through its links', async (t) => {
  const spec = parseLab(FILE);
  const p = planLab(parseLab(FILE.replace('10.0.12.1/30 }', '10.0.12.1/30, mac: "02:00:00:00:00:01" }')), running(spec));
  t.same(names(p.create.nodes), ['r1'], 'r1 has exec: re-created; r2 has none');
  t.same(p.create.links.map((l) => l.label), ['r1:eth1 -- r2:eth1']);
});

t.test('a changed network re-creates it and the nodes on it', async (t) => {
  const spec = parseLab(FILE);
  const p = planLab(parseLab(FILE.replace('10.1.0.0/24', '10.7.0.0/24')), running(spec));
  t.same(names(p.create.networks), ['lan']);
  t.same(p.remove.networks, ['t-lan']);
  t.same(names(p.create.nodes), ['h1', 'r1']);
  t.same(p.create.links.map((l) => l.label), ['r1:eth1 -- r2:eth1'], 'r1\'s link comes back with it');
});

t.test('removed from the file: removed; added: created', async (t) => {
  const spec = parseLab(FILE);
  const smaller = parseLab(FILE.replace('  r3: {}\n', '').replace('  - endpoints: ["r2:eth2", "r3:eth1"]\n    impair: { rate: 10mbit }\n  - endpoints: ["r3:eth2", "s1:p1"]\n', '').replace('  s1: { kind: bridge }\n', '') + '  - endpoints: ["h1:eth1", "r2:eth3"]\n');
  const p = planLab(smaller, running(spec));
  t.same(p.remove.nodes, ['t-r3']);
  t.same(p.remove.switches, ['t-s1']);
  t.equal(p.remove.links.length, 2);
  t.same(p.create.links.map((l) => l.label), ['h1:eth1 -- r2:eth3']);
  t.same(p.create.nodes, [], 'h1 and r2 keep running: no exec');
  const none = planLab(emptyLab('t'), running(spec));
  t.equal(none.remove.nodes.length, 4);
  t.equal(none.remove.links.length, 3);
  t.same(none.create, { switches: [], networks: [], nodes: [], links: [] });
});

t.test('half-made objects (no hash: a crash) are re-created', async (t) => {
  const spec = parseLab(FILE);
  const have = running(spec);
  const p = planLab(spec, {
    ...have,
    nodes: have.nodes.map((n) => (n.key === 'h1' ? { ...n, hash: undefined, running: false } : n)),
    links: have.links.map((l, i) => (i === 2 ? { ...l, hash: undefined } : l)),
  });
  t.same(names(p.create.nodes), ['h1']);
  t.same(p.create.links.map((l) => l.label), ['r3:eth2 -- s1:p1']);
});
