/**
 * The pictures of a lab: the SVG (Graphviz) is well-formed XML naming every node, network and
 * link; the HTML page is self-contained; Mermaid and DOT text carry every node and link.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { linkSvgId, renderGraph, toDot, toMermaid } from './graph.js';
import { parseLab } from './spec.js';

const example = parseLab(readFileSync(new URL('../examples/router-triangle.yaml', import.meta.url), 'utf8'));
const withBridge = parseLab(`name: sw
nodes:
  h1: {}
  h2: {}
  s1: { kind: bridge }
links:
  - endpoints: ["h1:eth0", "s1:p1"]
  - endpoints: ["h2:eth0", "s1:p2"]
    impair: { rate: 1mbit }
`);

/** Every element's attribute `attr`, anywhere in a parsed XML tree. */
function collect(node: unknown, attr: string, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const x of node) collect(x, attr, out);
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === `@_${attr}` && typeof v === 'string') out.push(v);
      else collect(v, attr, out);
    }
  }
  return out;
}
function texts(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const x of node) texts(x, out);
  else if (node !== null && typeof node === 'object') for (const [k, v] of Object.entries(node)) (k === '#text' ? out.push(String(v)) : texts(v, out));
  else if (typeof node === 'string') out.push(node);
  return out;
}

for (const [name, spec] of [['router triangle', example], ['bridge lab', withBridge]] as const) {
  t.test(`SVG of the ${name}: well-formed XML naming every node, network and link`, async (t) => {
    const svg = await renderGraph(spec, 'svg');
    t.equal(XMLValidator.validate(svg), true, 'well-formed');
    const doc = new XMLParser({ ignoreAttributes: false, parseTagValue: false, htmlEntities: true }).parse(svg) as Record<string, unknown>;
    t.ok(doc['svg'], 'an <svg> root');
    const ids = collect(doc, 'id');
    const words = texts(doc);
    for (const n of [...spec.nodes.map((x) => x.key), ...spec.switches.map((x) => x.key)]) {
      t.ok(ids.includes(`node-${n}`), `node ${n} has its element`);
      t.ok(words.includes(n), `node ${n} is written`);
    }
    for (const n of spec.networks) t.ok(ids.includes(`network-${n.key}`), `network ${n.key} has its element`);
    for (const l of spec.links) {
      t.ok(ids.includes(linkSvgId(l)), `link ${l.label} has its element`);
      for (const e of l.ends) t.ok(words.includes(e.ifName), `${e.node}'s ${e.ifName} is written`);
      for (const a of l.ends.flatMap((e) => e.addresses)) t.ok(words.includes(a), `address ${a} is written`);
    }
  });
}

t.test('HTML: one self-contained page with the picture inline', async (t) => {
  const html = await renderGraph(example, 'html');
  t.match(html, /^<!DOCTYPE html>/);
  t.match(html, /<svg[\s>]/);
  t.notMatch(html, /<script|<link |src=|href=/, 'nothing loaded from elsewhere');
  for (const n of example.nodes) t.ok(html.includes(`<td>${n.key}</td>`), `node ${n.key} in the table`);
  t.equal((html.match(/<tr><td>r\d:eth\d<\/td>/g) ?? []).length, example.links.length, 'a row per link');
});

t.test('Mermaid: a node per node and network, an edge per link and attachment', async (t) => {
  const m = toMermaid(example);
  const lines = m.trim().split('\n');
  t.equal(lines[0], 'graph LR');
  for (const n of example.nodes) t.ok(lines.some((l) => new RegExp(`^  n\\d+_${n.key}\\["${n.key}"\\]$`).test(l)), `node ${n.key}`);
  for (const n of example.networks) t.ok(lines.some((l) => l.includes(`{{"${n.key} ${n.request.subnets[0]?.subnet ?? ''}"}}`)), `network ${n.key}`);
  t.equal(lines.filter((l) => l.includes(' ---|')).length, example.links.length, 'an edge per link');
  t.ok(lines.some((l) => /n\d+_r1 ---\|"eth1 -- eth1"\| n\d+_r2/.test(l)), 'r1 -- r2 labelled with its interfaces');
  t.ok(lines.some((l) => l.includes('"eth2 -- eth2, mtu 9000, rate 100mbit"')), 'MTU and impairments on the edge');
  t.equal(lines.filter((l) => l.includes(' -.-|')).length, example.nodes.reduce((s, n) => s + n.networks.length, 0), 'an edge per network attachment');
  t.ok(toMermaid(withBridge).includes('(["s1 (bridge)"])'), 'a bridge node is drawn apart');
});

t.test('DOT: every node and link, strings quoted', async (t) => {
  const dot = toDot(example);
  t.match(dot, /^graph "triangle" \{/);
  for (const n of example.nodes) t.ok(dot.includes(`"node:${n.key}" [id="node-${n.key}"`), `node ${n.key}`);
  t.equal((dot.match(/ -- "node:/g) ?? []).length, example.links.length, 'an edge per link');
  t.ok(dot.includes('taillabel="eth1\\n10.0.12.1/30", headlabel="eth1\\n10.0.12.2/30"'), 'ends labelled with interface and address');
  const odd = parseLab('name: q\nnodes:\n  a: { cmd: ["echo", "x"] }\n');
  t.ok(toDot(odd).includes('"node:a"'));
});

t.test('the example\'s picture in the repository is current (tsnet lab graph -f examples/router-triangle.yaml -o examples/router-triangle.svg)', async (t) => {
  const file = readFileSync(new URL('../examples/router-triangle.svg', import.meta.url), 'utf8');
  t.equal(file, await renderGraph(example, 'svg'));
});
