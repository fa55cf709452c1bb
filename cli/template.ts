/**
 * Go's text/template, the part Docker's `--format` uses (docs.docker.com "Format command and log
 * output", and the `docker ps`/`inspect`/`network ls`/`events` references): `{{.Field}}`, nested
 * paths, `$` and variables (`{{$v := ...}}`, `{{range $k, $v := ...}}`), pipes (`{{.X | json}}`),
 * parenthesised calls, `{{if}}`/`{{else if}}`/`{{else}}`, `{{range}}`, `{{with}}`, comments, the
 * `{{-`/`-}}` trim markers, Go's builtins (and, or, not, len, index, print, printf, println, eq, ne,
 * lt, le, gt, ge, slice) and Docker's functions (json, join, split, lower, upper, title, pad,
 * truncate). Values print as Go prints them (`map[a:b]`, `[a b]`, `<no value>`).
 *
 * Hand-written because no JS implementation fits: @ctrl/golang-template (the one maintained
 * package) has no pipes, variables, comparisons, printf or functions, which Docker's own examples
 * use (`{{range $p, $conf := .NetworkSettings.Ports}}`, `{{.State.Pid | json}}`). Pure: parse once,
 * execute against plain JSON-shaped data.
 *
 * Objects are Go structs unless marked with `goMap`: a missing field of a struct is an error naming
 * it (as Docker's "can't evaluate field X"), a missing key of a map is `<no value>`.
 */
import { TsnetError } from '../core/errors.js';

const MAPS = new WeakSet<object>();
/** Marks an object as a Go map (a missing key prints `<no value>` instead of failing). */
export function goMap<T extends object>(o: T): T {
  MAPS.add(o);
  return o;
}

type Node =
  | { readonly t: 'text'; readonly s: string }
  | { readonly t: 'action'; readonly p: Pipeline }
  | { readonly t: 'if'; readonly p: Pipeline; readonly then: Node[]; readonly else: Node[] }
  | { readonly t: 'range'; readonly p: Pipeline; readonly body: Node[]; readonly else: Node[] }
  | { readonly t: 'with'; readonly p: Pipeline; readonly body: Node[]; readonly else: Node[] };

interface Pipeline {
  readonly decl: readonly string[];
  readonly cmds: readonly Arg[][];
}
type Arg =
  | { readonly t: 'lit'; readonly v: unknown }
  | { readonly t: 'field'; readonly base: 'dot' | string; readonly path: readonly string[] }
  | { readonly t: 'ident'; readonly name: string }
  | { readonly t: 'sub'; readonly p: Pipeline; readonly path: readonly string[] };

function fail(msg: string): never {
  throw new TsnetError('INVALID_CONFIG', `format: ${msg}`, { details: { field: 'format' } });
}

// ---- lexing of one action's content -------------------------------------------------------

type Tok = { readonly k: 'str' | 'num' | 'field' | 'var' | 'ident' | '(' | ')' | '|' | ':=' | '=' | ','; readonly v: string };

function lex(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== '"') j += src[j] === '\\' ? 2 : 1;
      if (j >= src.length) fail(`unterminated quoted string in ${JSON.stringify(src)}`);
      try {
        out.push({ k: 'str', v: JSON.parse(src.slice(i, j + 1)) as string });
      } catch {
        fail(`bad string ${src.slice(i, j + 1)}`);
      }
      i = j + 1;
      continue;
    }
    if (c === '`') {
      const j = src.indexOf('`', i + 1);
      if (j < 0) fail('unterminated raw string');
      out.push({ k: 'str', v: src.slice(i + 1, j) });
      i = j + 1;
      continue;
    }
    if (c === '(' || c === ')' || c === '|' || c === ',') {
      out.push({ k: c, v: c });
      i++;
      continue;
    }
    if (src.startsWith(':=', i)) {
      out.push({ k: ':=', v: ':=' });
      i += 2;
      continue;
    }
    if (c === '=') {
      out.push({ k: '=', v: '=' });
      i++;
      continue;
    }
    const m = /^(\$[A-Za-z0-9_]*|\.[A-Za-z0-9_.]*|-?\d+(\.\d+)?|[A-Za-z_][A-Za-z0-9_]*)/.exec(src.slice(i));
    if (!m) fail(`unexpected ${JSON.stringify(c)} in ${JSON.stringify(src)}`);
    const w = m[0];
    // A field chain directly after ')' or a variable: (x).A, $v.A
    const prev = out.at(-1);
    if (w.startsWith('.') && w !== '.' && (prev?.k === ')' || prev?.k === 'var') && i > 0 && !/\s/.test(src[i - 1] as string)) {
      out.push({ k: 'field', v: `+${w}` });
    } else if (w.startsWith('$')) out.push({ k: 'var', v: w });
    else if (w.startsWith('.')) out.push({ k: 'field', v: w });
    else if (/^-?\d/.test(w)) out.push({ k: 'num', v: w });
    else out.push({ k: 'ident', v: w });
    i += w.length;
  }
  return out;
}

function pathOf(w: string): string[] {
  return w.split('.').filter((s) => s !== '');
}

function parsePipeline(toks: Tok[], pos: { i: number }, stopAtParen: boolean): Pipeline {
  const decl: string[] = [];
  // $v := ..., $k, $v := ...
  const save = pos.i;
  const vars: string[] = [];
  while (toks[pos.i]?.k === 'var') {
    vars.push(toks[pos.i]?.v as string);
    pos.i++;
    if (toks[pos.i]?.k === ',') {
      pos.i++;
      continue;
    }
    break;
  }
  if (vars.length > 0 && (toks[pos.i]?.k === ':=' || toks[pos.i]?.k === '=')) {
    decl.push(...vars);
    pos.i++;
  } else pos.i = save;
  const cmds: Arg[][] = [];
  let cur: Arg[] = [];
  for (;;) {
    const tk = toks[pos.i];
    if (tk === undefined || (tk.k === ')' && stopAtParen)) break;
    pos.i++;
    switch (tk.k) {
      case '|':
        if (cur.length === 0) fail('missing command before |');
        cmds.push(cur);
        cur = [];
        break;
      case 'str':
        cur.push({ t: 'lit', v: tk.v });
        break;
      case 'num':
        cur.push({ t: 'lit', v: Number(tk.v) });
        break;
      case 'field':
        if (tk.v.startsWith('+')) {
          const last = cur.pop();
          const more = pathOf(tk.v.slice(1));
          if (last?.t === 'sub') cur.push({ ...last, path: [...last.path, ...more] });
          else if (last?.t === 'field') cur.push({ ...last, path: [...last.path, ...more] });
          else fail(`unexpected ${tk.v.slice(1)}`);
        } else cur.push({ t: 'field', base: 'dot', path: pathOf(tk.v) });
        break;
      case 'var': {
        const [name, ...rest] = tk.v.split('.');
        cur.push({ t: 'field', base: name as string, path: rest.filter(Boolean) });
        break;
      }
      case 'ident':
        if (tk.v === 'true' || tk.v === 'false') cur.push({ t: 'lit', v: tk.v === 'true' });
        else if (tk.v === 'nil') cur.push({ t: 'lit', v: null });
        else cur.push({ t: 'ident', name: tk.v });
        break;
      case '(': {
        const p = parsePipeline(toks, pos, true);
        if (toks[pos.i]?.k !== ')') fail('unclosed (');
        pos.i++;
        cur.push({ t: 'sub', p, path: [] });
        break;
      }
      default:
        fail(`unexpected ${JSON.stringify(tk.v)}`);
    }
  }
  if (cur.length > 0) cmds.push(cur);
  if (cmds.length === 0) fail('missing value for command');
  return { decl, cmds };
}

function pipelineOf(src: string): Pipeline {
  const toks = lex(src);
  const pos = { i: 0 };
  const p = parsePipeline(toks, pos, false);
  if (pos.i < toks.length) fail(`unexpected ${JSON.stringify(toks[pos.i]?.v)} in ${JSON.stringify(src)}`);
  return p;
}

// ---- template structure -------------------------------------------------------------------

interface Piece {
  readonly text?: string;
  readonly action?: string;
}

function split(src: string): Piece[] {
  const out: Piece[] = [];
  let i = 0;
  let text = '';
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      text += src.slice(i);
      break;
    }
    text += src.slice(i, open);
    const close = src.indexOf('}}', open + 2);
    if (close < 0) fail(`unclosed action in ${JSON.stringify(src)}`);
    let inner = src.slice(open + 2, close);
    if (inner.startsWith('- ') || inner === '-') {
      text = text.replace(/\s+$/, '');
      inner = inner.slice(1);
    }
    let trimAfter = false;
    if (inner.endsWith(' -')) {
      trimAfter = true;
      inner = inner.slice(0, -1);
    }
    out.push({ text });
    text = '';
    out.push({ action: inner.trim() });
    i = close + 2;
    if (trimAfter) while (i < src.length && /\s/.test(src[i] as string)) i++;
  }
  out.push({ text });
  return out;
}

function build(pieces: readonly Piece[]): Node[] {
  const pos = { i: 0 };
  const nodes = parseList(pieces, pos, []);
  if (pos.i < pieces.length) fail(`unexpected {{${pieces[pos.i]?.action ?? ''}}}`);
  return nodes;
}

/** Parses until one of `ends` (an action keyword); leaves pos at it. */
function parseList(pieces: readonly Piece[], pos: { i: number }, ends: readonly string[]): Node[] {
  const out: Node[] = [];
  while (pos.i < pieces.length) {
    const pc = pieces[pos.i] as Piece;
    if (pc.text !== undefined) {
      if (pc.text !== '') out.push({ t: 'text', s: pc.text });
      pos.i++;
      continue;
    }
    const a = pc.action as string;
    if (a.startsWith('/*')) {
      if (!a.endsWith('*/')) fail('unclosed comment');
      pos.i++;
      continue;
    }
    const kw = /^(if|range|with|else|end)\b/.exec(a)?.[1];
    if (kw === 'end' || kw === 'else') {
      if (ends.includes(kw)) return out;
      fail(`unexpected {{${kw}}}`);
    }
    pos.i++;
    if (kw === 'if' || kw === 'range' || kw === 'with') {
      out.push(parseBlock(kw, a.slice(kw.length).trim(), pieces, pos));
      continue;
    }
    if (/^(define|template|block|break|continue)\b/.test(a)) fail(`{{${a}}} is not supported`);
    out.push({ t: 'action', p: pipelineOf(a) });
  }
  if (ends.length > 0) fail(`missing {{end}}`);
  return out;
}

function parseBlock(kw: 'if' | 'range' | 'with', src: string, pieces: readonly Piece[], pos: { i: number }): Node {
  if (src === '') fail(`missing value for ${kw}`);
  const p = pipelineOf(src);
  const body = parseList(pieces, pos, ['else', 'end']);
  let els: Node[] = [];
  const at = pieces[pos.i]?.action as string;
  pos.i++;
  if (at.startsWith('else')) {
    const rest = at.slice(4).trim();
    if (rest.startsWith('if ') && kw === 'if') {
      // {{else if X}} ... is {{else}}{{if X}} ... {{end}}{{end}} sharing one {{end}}.
      els = [parseBlock('if', rest.slice(3).trim(), pieces, pos)];
      return { t: 'if', p, then: body, else: els };
    }
    if (rest !== '') fail(`unexpected {{${at}}}`);
    els = parseList(pieces, pos, ['end']);
    pos.i++;
  }
  return kw === 'if' ? { t: 'if', p, then: body, else: els } : { t: kw, p, body, else: els };
}

// ---- values and printing ------------------------------------------------------------------

const NO_VALUE = Symbol('no value');

function truthy(v: unknown): boolean {
  if (v === NO_VALUE || v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

/** Go's fmt %v. */
export function goString(v: unknown): string {
  if (v === NO_VALUE || v === undefined) return '<no value>';
  if (v === null) return '<nil>';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return `[${v.map(goString).join(' ')}]`;
  if (typeof v === 'object') {
    const keys = Object.keys(v);
    if (MAPS.has(v)) return `map[${keys.sort().map((k) => `${k}:${goString((v as Record<string, unknown>)[k])}`).join(' ')}]`;
    return `{${keys.map((k) => goString((v as Record<string, unknown>)[k])).join(' ')}}`;
  }
  return String(v);
}

function field(v: unknown, name: string): unknown {
  if (v === null || v === undefined || v === NO_VALUE) fail(`can't evaluate field ${name} of a nil value`);
  if (typeof v !== 'object' || Array.isArray(v)) fail(`can't evaluate field ${name} in type ${Array.isArray(v) ? 'list' : typeof v}`);
  if (Object.prototype.hasOwnProperty.call(v, name)) return (v as Record<string, unknown>)[name];
  if (MAPS.has(v)) return NO_VALUE;
  fail(`can't evaluate field ${name}`);
}

function cmp(a: unknown, b: unknown, op: string): boolean {
  if (typeof a !== typeof b) fail(`${op}: incompatible types for comparison`);
  if (typeof a !== 'number' && typeof a !== 'string') fail(`${op}: invalid type for comparison`);
  return (a as number) < (b as number);
}

function printf(fmt: string, args: readonly unknown[]): string {
  let n = 0;
  return fmt.replace(/%([-+ 0#]*)(\d*)(?:\.(\d+))?([vsdqtfx%])/g, (_m, flags: string, width: string, prec: string | undefined, verb: string) => {
    if (verb === '%') return '%';
    const a = args[n++];
    let s: string;
    switch (verb) {
      case 'q': s = JSON.stringify(goString(a)); break;
      case 'd': s = String(Math.trunc(Number(a))); break;
      case 'f': s = Number(a).toFixed(prec === undefined ? 6 : Number(prec)); break;
      case 'x': s = typeof a === 'number' ? a.toString(16) : Buffer.from(goString(a)).toString('hex'); break;
      default: s = goString(a);
    }
    if (prec !== undefined && verb === 's') s = s.slice(0, Number(prec));
    const w = width === '' ? 0 : Number(width);
    return flags.includes('-') ? s.padEnd(w) : s.padStart(w, flags.includes('0') && verb === 'd' ? '0' : ' ');
  });
}

type Fn = (...args: unknown[]) => unknown;
const FUNCS: Readonly<Record<string, Fn>> = {
  json: (v) => JSON.stringify(v === NO_VALUE ? null : v),
  join: (list, sep) => (Array.isArray(list) ? list.map(goString).join(String(sep)) : fail('join: expects a list')),
  split: (s, sep) => String(s).split(String(sep)),
  lower: (s) => goString(s).toLowerCase(),
  upper: (s) => goString(s).toUpperCase(),
  title: (s) => goString(s).replace(/(^|[^A-Za-z0-9_'])([a-z])/g, (_m, a: string, b: string) => a + b.toUpperCase()),
  pad: (s, l, r) => `${' '.repeat(Number(l))}${goString(s)}${' '.repeat(Number(r))}`,
  truncate: (s, n) => [...goString(s)].slice(0, Number(n)).join(''),
  len: (v) => (typeof v === 'string' ? Buffer.byteLength(v) : Array.isArray(v) ? v.length : v !== null && typeof v === 'object' ? Object.keys(v).length : fail('len of a value without length')),
  index: (v, ...keys) => {
    let cur = v;
    for (const k of keys) {
      if (Array.isArray(cur)) {
        if (typeof k !== 'number' || k < 0 || k >= cur.length) fail(`index out of range: ${goString(k)}`);
        cur = cur[k];
      } else if (cur !== null && typeof cur === 'object') cur = Object.prototype.hasOwnProperty.call(cur, String(k)) ? (cur as Record<string, unknown>)[String(k)] : NO_VALUE;
      else fail(`can't index item of type ${typeof cur}`);
    }
    return cur;
  },
  slice: (v, a, b) => (typeof v === 'string' || Array.isArray(v) ? v.slice(Number(a ?? 0), b === undefined ? undefined : Number(b)) : fail('slice of a value that is not a list')),
  print: (...a) => a.map(goString).join(''),
  println: (...a) => `${a.map(goString).join(' ')}\n`,
  printf: (f, ...a) => printf(String(f), a),
  not: (v) => !truthy(v),
  eq: (a, ...bs) => bs.some((b) => goString(a) === goString(b) && typeof a === typeof b),
  ne: (a, b) => !(goString(a) === goString(b) && typeof a === typeof b),
  lt: (a, b) => cmp(a, b, 'lt'),
  le: (a, b) => cmp(a, b, 'le') || a === b,
  gt: (a, b) => cmp(b, a, 'gt'),
  ge: (a, b) => cmp(b, a, 'ge') || a === b,
};

interface Scope {
  readonly dot: unknown;
  readonly vars: Map<string, unknown>;
}

function evalArg(a: Arg, s: Scope, final: unknown[] | undefined): unknown {
  switch (a.t) {
    case 'lit':
      return a.v;
    case 'field': {
      let v: unknown;
      if (a.base === 'dot') v = s.dot;
      else if (s.vars.has(a.base)) v = s.vars.get(a.base);
      else fail(`undefined variable: ${a.base}`);
      for (const p of a.path) v = field(v, p);
      return v;
    }
    case 'sub': {
      let v = evalPipeline(a.p, s);
      for (const p of a.path) v = field(v, p);
      return v;
    }
    case 'ident':
      if (a.name === 'and' || a.name === 'or') fail(`${a.name} needs arguments`);
      return callFn(a.name, final ?? []);
  }
}

function callFn(name: string, args: unknown[]): unknown {
  const fn = FUNCS[name];
  if (fn === undefined) fail(`function "${name}" not defined`);
  return fn(...args);
}

function evalCommand(cmd: readonly Arg[], s: Scope, piped: unknown, hasPiped: boolean): unknown {
  const [head, ...rest] = cmd;
  if (head === undefined) fail('empty command');
  if (head.t === 'ident') {
    if (head.name === 'and' || head.name === 'or') {
      // Go evaluates and/or lazily, left to right, returning the deciding value.
      const all = [...rest, ...(hasPiped ? [{ t: 'lit', v: piped } as Arg] : [])];
      if (all.length === 0) fail(`${head.name}: needs at least one argument`);
      let v: unknown;
      for (const a of all) {
        v = evalArg(a, s, undefined);
        if (head.name === 'and' ? !truthy(v) : truthy(v)) return v;
      }
      return v;
    }
    const args = rest.map((a) => evalArg(a, s, undefined));
    if (hasPiped) args.push(piped);
    return callFn(head.name, args);
  }
  const v = evalArg(head, s, undefined);
  if (typeof v === 'function') {
    // A method of the data (Docker's `{{.Label "com.example"}}`).
    const args = rest.map((a) => evalArg(a, s, undefined));
    if (hasPiped) args.push(piped);
    return (v as Fn)(...args);
  }
  if (rest.length > 0 || hasPiped) fail(`can't give argument to non-function ${describe(head)}`);
  return v;
}

function describe(a: Arg): string {
  return a.t === 'field' ? `${a.base === 'dot' ? '' : a.base}.${a.path.join('.')}` : a.t;
}

function evalPipeline(p: Pipeline, s: Scope): unknown {
  let v: unknown;
  p.cmds.forEach((c, i) => {
    v = evalCommand(c, s, v, i > 0);
  });
  return v;
}

function exec(nodes: readonly Node[], s: Scope, out: string[]): void {
  for (const n of nodes) {
    switch (n.t) {
      case 'text':
        out.push(n.s);
        break;
      case 'action': {
        const v = evalPipeline(n.p, s);
        if (n.p.decl.length > 0) s.vars.set(n.p.decl[0] as string, v);
        else out.push(goString(v));
        break;
      }
      case 'if': {
        const v = evalPipeline(n.p, s);
        exec(truthy(v) ? n.then : n.else, { dot: s.dot, vars: new Map(s.vars) }, out);
        break;
      }
      case 'with': {
        const v = evalPipeline(n.p, s);
        if (n.p.decl.length > 0) s.vars.set(n.p.decl[0] as string, v);
        if (truthy(v)) exec(n.body, { dot: v, vars: new Map(s.vars) }, out);
        else exec(n.else, s, out);
        break;
      }
      case 'range': {
        const v = evalPipeline(n.p, s);
        const entries: [unknown, unknown][] = Array.isArray(v)
          ? v.map((x, i) => [i, x])
          : v !== null && typeof v === 'object' ? Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]])
          : typeof v === 'number' ? Array.from({ length: v }, (_x, i) => [i, i])
          : v === null || v === undefined || v === NO_VALUE ? [] : fail(`range can't iterate over ${goString(v)}`);
        if (entries.length === 0) {
          exec(n.else, s, out);
          break;
        }
        for (const [k, x] of entries) {
          const vars = new Map(s.vars);
          if (n.p.decl.length === 1) vars.set(n.p.decl[0] as string, x);
          if (n.p.decl.length === 2) {
            vars.set(n.p.decl[0] as string, k);
            vars.set(n.p.decl[1] as string, x);
          }
          exec(n.body, { dot: x, vars }, out);
        }
        break;
      }
    }
  }
}

export interface Template {
  execute(data: unknown): string;
}

/** Parses a Go template; INVALID_CONFIG (field "format") naming what is wrong. */
export function parseTemplate(src: string): Template {
  const nodes = build(split(src));
  return {
    execute(data) {
      const out: string[] = [];
      exec(nodes, { dot: data, vars: new Map([['$', data]]) }, out);
      return out.join('');
    },
  };
}

/**
 * Go's text/tabwriter as Docker's CLI sets it up (minwidth 10, tab width 1, padding 3, spaces):
 * cells end at '\t'; each column is as wide as its widest cell plus 3, at least 10; a line's last
 * cell is not padded.
 */
export function tabwrite(lines: readonly string[]): string {
  const rows = lines.map((l) => l.split('\t'));
  const widths: number[] = [];
  for (const r of rows) r.slice(0, -1).forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, Math.max(10, [...c].length + 3))));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat((widths[i] ?? 0) - [...c].length))).join('')).map((l) => `${l}\n`).join('');
}

/**
 * Docker's `--format` for a listing: `table` (the default columns), `table TEMPLATE` (a header row
 * from `headers`, then one row per item, aligned), `json` (one JSON object per line), or a
 * TEMPLATE (one line per item).
 */
export function formatList(items: readonly unknown[], format: string, opts: { readonly defaultTable: string; readonly headers: Readonly<Record<string, string | (() => string)>>; readonly json: (item: unknown) => unknown }): string {
  if (format === 'json') return items.map((i) => `${JSON.stringify(opts.json(i))}\n`).join('');
  const isTable = format === 'table' || format.startsWith('table ');
  const src = (format === 'table' ? opts.defaultTable : isTable ? format.slice(6) : format).replace(/\\t/g, '\t').replace(/\\n/g, '\n');
  const tmpl = parseTemplate(src);
  const rows = items.map((i) => tmpl.execute(i));
  if (!isTable) return rows.map((r) => `${r}\n`).join('');
  const header = parseTemplate(src).execute(headerProxy(opts.headers));
  return tabwrite([header, ...rows].flatMap((r) => r.split('\n')).filter((l, i) => i === 0 || l !== ''));
}

/** The data a table's header row is rendered from: every field is its column name. */
function headerProxy(headers: Readonly<Record<string, string | (() => string)>>): Record<string, unknown> {
  return new Proxy(goMap({}), {
    has: () => true,
    get: (_t, k) => (typeof k === 'string' ? headers[k] ?? k.toUpperCase() : undefined),
    getOwnPropertyDescriptor: (_t, k) => (typeof k === 'string' ? { value: headers[k] ?? k.toUpperCase(), enumerable: true, configurable: true } : undefined),
  });
}

/** `inspect --format`: the template once per object; `json` prints each as one JSON line. */
export function formatEach(items: readonly unknown[], format: string): string {
  if (format === 'json') return items.map((i) => `${JSON.stringify(i)}\n`).join('');
  const tmpl = parseTemplate(format.replace(/\\t/g, '\t').replace(/\\n/g, '\n'));
  return items.map((i) => `${tmpl.execute(i)}\n`).join('');
}
