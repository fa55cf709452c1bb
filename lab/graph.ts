/**
 * Pictures of a lab file: Graphviz DOT and Mermaid text (pure), SVG (Graphviz itself, compiled to
 * WebAssembly: the `@viz-js/viz` package, loaded only by `graph`), and a self-contained HTML page
 * (the SVG inline, then a table of nodes and links). Nodes are boxes, bridges rounded boxes,
 * networks dashed ellipses; a link is an edge labelled with its interfaces (and addresses) at each
 * end and its MTU and impairments in the middle. Every node, network and link gets an SVG `id`
 * (`node-r1`, `network-lan`, `link-r1-eth1--r2-eth1`) so that pages and tests can find them.
 */
import type { LabSpec, LinkSpec } from './spec.js';
import { formatImpairment } from './units.js';

export const GRAPH_FORMATS = ['svg', 'html', 'mmd', 'dot'] as const;
export type GraphFormat = (typeof GRAPH_FORMATS)[number];

const q = (s: string): string => `"${s.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')}"`;
const safeId = (s: string): string => s.replace(/[^A-Za-z0-9_-]/g, '_');
export const linkSvgId = (l: LinkSpec): string => `link-${safeId(`${l.ends[0].node}-${l.ends[0].ifName}`)}--${safeId(`${l.ends[1].node}-${l.ends[1].ifName}`)}`;

function subnetText(spec: LabSpec, key: string): string {
  const n = spec.networks.find((x) => x.key === key);
  const subnets = (n?.request.subnets ?? []).map((s) => s.subnet).filter((s): s is string => s !== undefined);
  return subnets.length > 0 ? subnets.join(', ') : 'auto';
}

function middle(l: LinkSpec): string {
  return [l.mtu !== undefined ? `mtu ${l.mtu}` : '', formatImpairment(l.impair)].filter((x) => x !== '').join(', ');
}

const endText = (e: LinkSpec['ends'][number]): string => [e.ifName, ...e.addresses].join('\n');

export function toDot(spec: LabSpec): string {
  const lines = [
    `graph ${q(spec.name)} {`,
    `  graph [rankdir=LR, fontname="Helvetica", label=${q(`lab ${spec.name}`)}, labelloc=t, nodesep=0.6, ranksep=1.1, pad=0.3];`,
    '  node [fontname="Helvetica", fontsize=12, margin="0.15,0.06"];',
    '  edge [fontname="Helvetica", fontsize=9, color="#475569"];',
  ];
  for (const n of spec.networks) {
    lines.push(`  ${q(`net:${n.key}`)} [id=${q(`network-${safeId(n.key)}`)}, label=${q(`${n.key}\n${subnetText(spec, n.key)}`)}, shape=ellipse, style="filled,dashed", fillcolor="#fef3c7", color="#b45309"];`);
  }
  for (const n of spec.nodes) {
    lines.push(`  ${q(`node:${n.key}`)} [id=${q(`node-${safeId(n.key)}`)}, label=${q(n.key)}, shape=box, style="filled", fillcolor="#dbeafe", color="#1d4ed8"];`);
  }
  for (const s of spec.switches) {
    lines.push(`  ${q(`node:${s.key}`)} [id=${q(`node-${safeId(s.key)}`)}, label=${q(`${s.key}\n(bridge)`)}, shape=box, style="rounded,filled", fillcolor="#e5e7eb", color="#374151"];`);
  }
  for (const n of spec.nodes) {
    n.networks.forEach((a, i) => {
      lines.push(`  ${q(`node:${n.key}`)} -- ${q(`net:${a.network}`)} [id=${q(`attach-${safeId(n.key)}-${safeId(a.network)}`)}, taillabel=${q(`eth${i}${a.ip !== undefined ? `\n${a.ip}` : ''}`)}, style=dashed, color="#b45309"];`);
    });
  }
  for (const l of spec.links) {
    const [a, b] = l.ends;
    const label = middle(l);
    lines.push(`  ${q(`node:${a.node}`)} -- ${q(`node:${b.node}`)} [id=${q(linkSvgId(l))}, tooltip=${q(l.label)}, taillabel=${q(endText(a))}, headlabel=${q(endText(b))}${label !== '' ? `, label=${q(label)}` : ''}, penwidth=1.6];`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

const mq = (s: string): string => `"${s.replaceAll('"', '#quot;').replaceAll('\n', '<br/>')}"`;

export function toMermaid(spec: LabSpec): string {
  const ids = new Map<string, string>();
  const id = (k: string): string => {
    let v = ids.get(k);
    if (v === undefined) {
      v = `${k.startsWith('net:') ? 'net' : 'n'}${ids.size}_${safeId(k.slice(k.indexOf(':') + 1)).replaceAll('-', '_')}`;
      ids.set(k, v);
    }
    return v;
  };
  const lines = ['graph LR'];
  for (const n of spec.networks) lines.push(`  ${id(`net:${n.key}`)}{{${mq(`${n.key} ${subnetText(spec, n.key)}`)}}}`);
  for (const n of spec.nodes) lines.push(`  ${id(`node:${n.key}`)}[${mq(n.key)}]`);
  for (const s of spec.switches) lines.push(`  ${id(`node:${s.key}`)}([${mq(`${s.key} (bridge)`)}])`);
  for (const n of spec.nodes) n.networks.forEach((a, i) => lines.push(`  ${id(`node:${n.key}`)} -.-|${mq(`eth${i}`)}| ${id(`net:${a.network}`)}`));
  for (const l of spec.links) {
    const [a, b] = l.ends;
    const label = [`${a.ifName} -- ${b.ifName}`, middle(l)].filter((x) => x !== '').join(', ');
    lines.push(`  ${id(`node:${a.node}`)} ---|${mq(label)}| ${id(`node:${b.node}`)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Graphviz's SVG of `dot` (the `dot` layout engine); INTERNAL with Graphviz's message if it fails. */
export async function renderSvg(dot: string): Promise<string> {
  const { instance } = await import('@viz-js/viz');
  const viz = await instance();
  const r = viz.render(dot, { format: 'svg', engine: 'dot' });
  if (r.status !== 'success') throw new Error(`graphviz: ${r.errors.map((e) => e.message).join('; ')}`);
  return r.output;
}

const esc = (s: string): string => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');

/** A page that needs nothing else: the SVG inline, a table of nodes and one of links. */
export function toHtml(spec: LabSpec, svg: string): string {
  const inline = svg.replace(/^<\?xml[^>]*>\s*/, '').replace(/^<!DOCTYPE[^>]*>\s*/, '');
  const nodeRows = [
    ...spec.nodes.map((n) => `<tr><td>${esc(n.key)}</td><td>container ${esc(n.container)}</td><td>${esc(n.networks.map((a) => a.network).join(', '))}</td><td><code>${esc(n.argv.join(' '))}</code></td></tr>`),
    ...spec.switches.map((s) => `<tr><td>${esc(s.key)}</td><td>bridge ${esc(s.bridge)}</td><td></td><td></td></tr>`),
  ];
  const linkRows = spec.links.map((l) => `<tr><td>${esc(`${l.ends[0].node}:${l.ends[0].ifName}`)}</td><td>${esc(l.ends[0].addresses.join(' '))}</td><td>${esc(`${l.ends[1].node}:${l.ends[1].ifName}`)}</td><td>${esc(l.ends[1].addresses.join(' '))}</td><td>${esc(middle(l))}</td></tr>`);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lab ${esc(spec.name)}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 2em; color: #111827; }
.graph svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #d1d5db; padding: 0.3em 0.7em; text-align: left; font-size: 0.9em; }
th { background: #f3f4f6; }
</style>
</head>
<body>
<h1>lab ${esc(spec.name)}</h1>
<div class="graph">
${inline}
</div>
<h2>Nodes</h2>
<table><tr><th>node</th><th>what</th><th>networks</th><th>command</th></tr>
${nodeRows.join('\n')}
</table>
<h2>Links</h2>
<table><tr><th>end</th><th>addresses</th><th>end</th><th>addresses</th><th>properties</th></tr>
${linkRows.join('\n')}
</table>
</body>
</html>
`;
}

/** The picture of `spec` in `format`. */
export async function renderGraph(spec: LabSpec, format: GraphFormat): Promise<string> {
  switch (format) {
    case 'dot':
      return toDot(spec);
    case 'mmd':
      return toMermaid(spec);
    case 'svg':
      return renderSvg(toDot(spec));
    case 'html':
      return toHtml(spec, await renderSvg(toDot(spec)));
  }
}
