/** `tsnet lab up|down|inspect|graph|ls|exec|impair`: labs from a file (lab/). */
import { extname, resolve } from 'node:path';
import { TsnetError } from '../../core/errors.js';
import type { LabProgress, ProgressWhat } from '../../lab/api.js';
import type { GraphFormat } from '../../lab/graph.js';
import type { Lab, LabView } from '../../lab/lab.js';
import type { LabSpec } from '../../lab/spec.js';
import { formatRate, parseDuration, parsePercent, parseRate } from '../../lab/units.js';
import type { Files } from '../../sys/api.js';
import { bool, parseArgs, str, table, usage, type FlagSpec } from '../args.js';
import type { Command, Io } from './types.js';

export interface LabCliDeps {
  readonly lab: () => Promise<Lab>;
  /** The CLI's file access (lab files in, pictures out). */
  readonly files: Pick<Files, 'readText' | 'write'>;
  /** Whether stderr is a terminal: progress redrawn in place, else plain lines. */
  readonly tty: boolean;
  readonly now: () => number;
}

// The YAML parser and Graphviz load only for the commands that need them (every tsnet start would pay).
const GRAPH_FORMATS: readonly GraphFormat[] = ['svg', 'html', 'mmd', 'dot'];
const parseLab = async (text: string, source: string): Promise<LabSpec> => (await import('../../lab/spec.js')).parseLab(text, source);

const HELP: FlagSpec = { name: 'help', type: 'boolean', help: 'show this help' };
const FILE: FlagSpec = { name: 'file', short: 'f', type: 'string', help: 'the lab file (YAML)', placeholder: 'FILE' };
const NAME: FlagSpec = { name: 'name', type: 'string', help: 'the lab\'s name (instead of -f)', placeholder: 'NAME' };
const FORMAT: FlagSpec = { name: 'format', type: 'string', help: 'table (default) or json', placeholder: 'FORMAT' };

function invalid(field: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${msg}`, { details: { field } });
}

async function readLab(d: LabCliDeps, path: string): Promise<string> {
  const text = await d.files.readText(path);
  if (text === undefined) throw new TsnetError('NOT_FOUND', `file: ${path} does not exist`, { details: { field: 'file', value: path } });
  return text;
}

/** The lab named by -f FILE or --name, or the only lab there is. */
async function labName(d: LabCliDeps, p: ReturnType<typeof parseArgs>, lab: Lab): Promise<string> {
  const name = str(p, 'name');
  const file = str(p, 'file');
  if (name !== undefined && file !== undefined) throw invalid('name', 'give -f FILE or --name NAME, not both');
  if (name !== undefined) return name;
  if (file !== undefined) return (await parseLab(await readLab(d, file), file)).name;
  const all = await lab.list();
  if (all.length === 1 && all[0] !== undefined) return all[0].name;
  throw invalid('file', all.length === 0 ? 'no lab is up; name one with -f FILE or --name NAME' : `${all.length} labs are up (${all.map((l) => l.name).join(', ')}): name one with -f FILE or --name NAME`);
}

const WHATS: readonly ProgressWhat[] = ['remove', 'network', 'bridge', 'node', 'link', 'exec', 'impair'];

/** Progress of `up`: one line redrawn in place on a terminal, plain lines otherwise. */
function progress(d: LabCliDeps, io: Io, name: string): { on: (p: LabProgress) => void; end: () => void } {
  const t0 = d.now();
  let totals: Partial<Record<ProgressWhat, number>> = {};
  const done: Record<string, number> = {};
  let drawn = false;
  const line = (): string => `${name}: ${WHATS.filter((w) => (totals[w] ?? 0) > 0).map((w) => `${w === 'remove' ? 'removed' : `${w}s`} ${done[w] ?? 0}/${totals[w] ?? 0}`).join('  ')}  ${((d.now() - t0) / 1000).toFixed(1)} s`;
  return {
    on(p) {
      if (p.kind === 'plan') {
        totals = { ...p.totals };
        if (!d.tty) io.err(`${name}: ${p.steps.length === 0 ? 'nothing to change' : `${p.steps.length} change${p.steps.length === 1 ? '' : 's'}`}\n`);
      } else if (p.kind === 'rollback') {
        if (d.tty && drawn) io.err('\n');
        io.err(`${name}: ${p.reason}: rolling back\n`);
        drawn = false;
        totals = {};
      } else {
        if (p.ok) done[p.what] = (done[p.what] ?? 0) + 1;
        if (d.tty) {
          io.err(`\r\x1b[K${line()}`);
          drawn = true;
        } else io.err(`${p.what === 'remove' ? '' : `${p.what} `}${p.name} ${p.what === 'remove' ? 'removed' : 'done'}${p.ok ? '' : ' FAILED'} (${p.ms} ms)\n`);
      }
    },
    end() {
      if (d.tty && drawn) io.err('\n');
    },
  };
}

function parallelOf(p: ReturnType<typeof parseArgs>): number | undefined {
  const raw = str(p, 'parallel');
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw invalid('parallel', `expected a whole number from 1 to 256, got ${JSON.stringify(raw)}`);
  return n;
}

function inspectTables(v: LabView): string {
  const rows: string[][] = [];
  for (const n of v.nodes) {
    const first = [n.name, n.kind, n.kind === 'bridge' ? `${n.status} (${n.object})` : `${n.status}${n.pid !== undefined ? ` pid ${n.pid}` : ''}`];
    if (n.interfaces.length === 0) rows.push([...first, '', '', '']);
    n.interfaces.forEach((i, k) => {
      const where = i.kind === 'network' ? `network ${i.network ?? ''}` : `${i.kind === 'port' ? 'port to' : 'link to'} ${i.peer ?? ''}${i.impair !== undefined ? ` (${i.impair})` : ''}`;
      rows.push([...(k === 0 ? first : ['', '', '']), i.name, i.addresses.join(' ') || '-', where]);
    });
  }
  const out = [`lab ${v.name} (${v.status}${v.file !== undefined ? `, ${v.file}` : ''})\n`, table(['NODE', 'KIND', 'STATUS', 'INTERFACE', 'ADDRESSES', 'CONNECTS TO'], rows)];
  if (v.links.length > 0) {
    out.push('\n', table(['LINK', 'END', 'END', 'MTU', 'IMPAIRMENTS'], v.links.map((l) => [
      l.id.slice(0, 12), ...l.ends.map((e) => `${e.node}:${e.interface}${e.addresses.length > 0 ? ` ${e.addresses.join(' ')}` : ''}`),
      l.mtu !== undefined ? String(l.mtu) : '-', [...new Set(l.ends.map((e) => e.impair ?? ''))].filter((x) => x !== '').join(' / ') || '-',
    ])));
  }
  if (v.networks.length > 0) out.push('\n', table(['NETWORK', 'SUBNETS', 'GATEWAYS'], v.networks.map((n) => [n.name, n.subnets.join(' '), n.gateways.join(' ')])));
  return out.join('');
}

export const labCommands = (d: LabCliDeps): Record<string, Command> => ({
  up: {
    summary: 'Bring a lab up from a file, or converge a running one to it',
    async run(argv, io) {
      const specs: FlagSpec[] = [FILE, { name: 'parallel', type: 'string', help: 'at most N creations at once (default 8)', placeholder: 'N' },
        { name: 'dry-run', type: 'boolean', help: 'print the plan, change nothing' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('lab up -f FILE [OPTIONS]', 'Create what the file describes; a lab that runs converges to the file (only what differs changes). An invalid file changes nothing; a failed up is rolled back.', specs, 'tsnet lab up -f examples/router-triangle.yaml'));
      const file = str(p, 'file');
      if (file === undefined) throw invalid('file', 'lab up needs -f FILE');
      const text = await readLab(d, file);
      const lab = await d.lab();
      const parallel = parallelOf(p);
      const name = (await parseLab(text, file)).name;
      const prog = progress(d, io, name);
      try {
        const t0 = d.now();
        const r = await lab.up(text, { source: file, file: resolve(file), dryRun: bool(p, 'dry-run'), onProgress: prog.on, ...(parallel !== undefined ? { parallel } : {}) });
        prog.end();
        if (bool(p, 'dry-run')) io.out(r.steps.length === 0 ? `lab ${r.name}: up to date\n` : `${r.steps.join('\n')}\n`);
        else io.out(r.steps.length === 0 ? `lab ${r.name}: up to date\n` : `lab ${r.name}: up (${r.steps.length} change${r.steps.length === 1 ? '' : 's'} in ${((d.now() - t0) / 1000).toFixed(1)} s)\n`);
      } catch (err) {
        prog.end();
        throw err;
      }
    },
  },
  down: {
    summary: 'Remove everything a lab made',
    async run(argv, io) {
      const specs: FlagSpec[] = [FILE, NAME, { name: 'parallel', type: 'string', help: 'at most N removals at once (default 8)', placeholder: 'N' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('lab down (-f FILE | --name NAME)', 'Remove the lab\'s nodes, links, bridges, networks and record, and nothing else (also after a crash in the middle of up).', specs, 'tsnet lab down -f examples/router-triangle.yaml'));
      const lab = await d.lab();
      const name = await labName(d, p, lab);
      const parallel = parallelOf(p);
      const r = await lab.down(name, parallel !== undefined ? { parallel } : {});
      io.out(`lab ${name}: down (${r.removed} removed)\n`);
    },
  },
  inspect: {
    summary: 'Show a lab: nodes, interfaces and addresses, links, networks',
    async run(argv, io) {
      const specs: FlagSpec[] = [FILE, NAME, FORMAT, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('lab inspect [-f FILE | --name NAME] [--format json]', 'Every node with its interfaces and addresses, every link with its impairments, every network.', specs, 'tsnet lab inspect --name lab1 --format json'));
      const lab = await d.lab();
      const v = await lab.inspect(await labName(d, p, lab));
      const fmt = str(p, 'format') ?? 'table';
      if (fmt === 'json') return io.out(`${JSON.stringify(v, null, 2)}\n`);
      if (fmt !== 'table') throw invalid('format', `expected table or json, got ${JSON.stringify(fmt)}`);
      io.out(inspectTables(v));
    },
  },
  graph: {
    summary: 'Draw a lab file (.svg, .html, .mmd Mermaid, .dot Graphviz)',
    async run(argv, io) {
      const specs: FlagSpec[] = [FILE, { name: 'output', short: 'o', type: 'string', help: 'where to write (format from the extension; - for stdout)', placeholder: 'OUT' },
        { name: 'format', type: 'string', help: `${GRAPH_FORMATS.join(', ')} (default: from the extension)`, placeholder: 'FORMAT' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('lab graph -f FILE -o OUT', 'Draw the lab the file describes: SVG, a self-contained HTML page, Mermaid or DOT text.', specs, 'tsnet lab graph -f examples/router-triangle.yaml -o triangle.svg'));
      const file = str(p, 'file');
      const out = str(p, 'output');
      if (file === undefined) throw invalid('file', 'lab graph needs -f FILE');
      if (out === undefined) throw invalid('output', 'lab graph needs -o OUT (.svg, .html, .mmd or .dot; - for stdout with --format)');
      const ext = extname(out).slice(1).toLowerCase();
      const fmt = str(p, 'format') ?? (ext === 'mermaid' ? 'mmd' : ext === 'gv' ? 'dot' : ext);
      if (!(GRAPH_FORMATS as readonly string[]).includes(fmt)) throw invalid(str(p, 'format') !== undefined ? 'format' : 'output', `unknown picture format ${JSON.stringify(fmt)} (${GRAPH_FORMATS.join(', ')})`);
      const { renderGraph } = await import('../../lab/graph.js');
      const text = await renderGraph(await parseLab(await readLab(d, file), file), fmt as GraphFormat);
      if (out === '-') io.out(text);
      else {
        await d.files.write(out, text);
        io.out(`${out}\n`);
      }
    },
  },
  ls: {
    summary: 'List labs',
    async run(argv, io) {
      const specs: FlagSpec[] = [FORMAT, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('lab ls [--format json]', 'List the labs that are up (or half up after a crash).', specs, 'tsnet lab ls'));
      const all = await (await d.lab()).list();
      if (str(p, 'format') === 'json') return io.out(`${JSON.stringify(all, null, 2)}\n`);
      io.out(table(['NAME', 'STATUS', 'NODES', 'LINKS', 'FILE'], all.map((l) => [l.name, l.status, String(l.nodes), String(l.links), l.file ?? ''])));
    },
  },
  exec: {
    summary: 'Run a command in a lab node',
    async run(argv, io) {
      const specs: FlagSpec[] = [FILE, NAME, HELP];
      const p = parseArgs(argv, specs, { stopAtPositional: true });
      if (bool(p, 'help')) return io.out(usage('lab exec [-f FILE | --name NAME] NODE -- COMMAND [ARG...]', 'Run a command in a node (the container LAB-NODE; `tsnet exec LAB-NODE ...` works too).', specs, 'tsnet lab exec -f lab.yaml r1 -- ip route'));
      const [node, ...rest] = p.positionals;
      const [cmd, ...args] = rest[0] === '--' ? rest.slice(1) : rest;
      if (node === undefined || cmd === undefined) throw invalid('command', 'lab exec needs a node and a command');
      const lab = await d.lab();
      const name = await labName(d, p, lab);
      const rec = await lab.record(name);
      if (!Object.hasOwn(rec.spec.nodes, node)) throw new TsnetError('NOT_FOUND', `node: lab ${name} has no node ${JSON.stringify(node)}`, { details: { field: 'node', value: node } });
      const container = `${name}-${node}`;
      const r = await lab.exec(container, [cmd, ...args]);
      io.out(r.stdout);
      io.err(r.stderr);
      return r.exitCode;
    },
  },
  impair: {
    summary: 'Change the impairments of a running link end',
    async run(argv, io) {
      const specs: FlagSpec[] = [
        { name: 'rate', type: 'string', help: 'rate limit (tbf): 10mbit, 1gbit...', placeholder: 'RATE' },
        { name: 'delay', type: 'string', help: 'delay (netem): 20ms', placeholder: 'TIME' },
        { name: 'jitter', type: 'string', help: 'jitter with the delay (netem): 2ms', placeholder: 'TIME' },
        { name: 'loss', type: 'string', help: 'loss (netem): 1%', placeholder: 'PERCENT' },
        { name: 'clear', type: 'boolean', help: 'remove every impairment' },
        HELP,
      ];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('lab impair LAB-NODE:INTERFACE [--rate R] [--delay D [--jitter J]] [--loss L] | --clear', 'Replace the impairments of what leaves one link end (until the next `lab up` of the file, which puts the file\'s back).', specs, 'tsnet lab impair lab1-r1:eth1 --rate 5mbit'));
      const [ref, ...extra] = p.positionals;
      if (ref === undefined || extra.length > 0) throw invalid('link end', 'lab impair needs exactly one LAB-NODE:INTERFACE');
      const given = ['rate', 'delay', 'jitter', 'loss'].filter((k) => str(p, k) !== undefined);
      if (bool(p, 'clear') === (given.length > 0)) throw invalid('rate', 'give --rate, --delay, --jitter or --loss, or --clear');
      if (str(p, 'jitter') !== undefined && str(p, 'delay') === undefined) throw invalid('--jitter', 'needs --delay');
      const s = (k: string): string | undefined => str(p, k);
      const imp = {
        ...(s('rate') !== undefined ? { rate: parseRate(s('rate') ?? '', '--rate') } : {}),
        ...(s('delay') !== undefined ? { delayUs: parseDuration(s('delay') ?? '', '--delay') } : {}),
        ...(s('jitter') !== undefined ? { jitterUs: parseDuration(s('jitter') ?? '', '--jitter') } : {}),
        ...(s('loss') !== undefined ? { lossPct: parsePercent(s('loss') ?? '', '--loss') } : {}),
      };
      await (await d.lab()).impair(ref, imp, { delay: '--delay', jitter: '--jitter', loss: '--loss' });
      io.out(`${ref}: ${given.length === 0 ? 'no impairments' : given.map((g) => `${g} ${g === 'rate' && imp.rate !== undefined ? formatRate(imp.rate) : s(g) ?? ''}`).join(' ')}\n`);
    },
  },
});
