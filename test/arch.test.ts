/**
 * The import rules of ../shared/STYLE.md §1, checked on every file of the product layers, plus a
 * self-test proving each rule does fire on a violation.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const LAYERS = ['core', 'sys', 'ipam', 'drivers', 'dns', 'cnm', 'plugins', 'runtime', 'engine', 'lab', 'cluster', 'cli', 'lib'] as const;
type Layer = (typeof LAYERS)[number];

const ALLOWED: Record<Layer, readonly Layer[]> = {
  core: [],
  sys: ['core'],
  dns: ['core'],
  ipam: ['core', 'sys'],
  drivers: ['core', 'sys'],
  cnm: ['core', 'sys', 'ipam', 'drivers', 'dns'],
  runtime: ['core', 'sys'],
  plugins: ['core', 'sys', 'ipam', 'drivers', 'cnm'],
  cluster: ['core', 'sys', 'ipam', 'drivers', 'dns', 'cnm'],
  lab: ['core', 'sys', 'cnm', 'runtime'],
  engine: ['core', 'sys', 'ipam', 'drivers', 'dns', 'cnm', 'plugins', 'runtime', 'cluster', 'lab'],
  // The doors: argument parsing and output (cli), the library's API (lib), over the engine.
  cli: ['core', 'sys', 'cnm', 'runtime', 'lab', 'engine'],
  lib: ['core', 'sys', 'cnm', 'engine'],
};

/**
 * The composition roots, by name: the only files that build real sys implementations (value
 * imports of sys beyond api.ts) and read process.env / process.argv.
 */
export const COMPOSITION_ROOTS: readonly string[] = [
  'cli/main.ts',
  'lib/index.ts',
  'engine/engine.ts',
  'engine/daemon-main.ts',
  'engine/cni-service.ts',
  'engine/docker-plugin.ts',
  'engine/cni-install.ts',
  'plugins/cni/main.ts',
  'runtime/shim-main.ts',
];

/** Modules that reach the disk, the network or processes: only sys/ may import them. */
const SYSTEM_MODULES = ['fs', 'fs/promises', 'net', 'http', 'https', 'dgram', 'child_process', 'cluster', 'worker_threads'];
/** The STYLE exception: the DNS server owns its sockets. */
const SYSTEM_MODULE_EXCEPTIONS: Readonly<Record<string, readonly string[]>> = {
  'dns/server.ts': ['node:dgram', 'node:net'],
};

export interface SourceFile {
  readonly path: string; // repo-relative, posix
  readonly text: string;
}
interface ImportRef {
  readonly spec: string;
  readonly typeOnly: boolean;
}

const IMPORT_RE = /(?:^|[\n;])\s*(import|export)(\s+type)?\s+(?:[^;'"]*?\sfrom\s*)?['"]([^'"]+)['"]/g;
const DYNAMIC_RE = /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

export function importsOf(text: string): ImportRef[] {
  const out: ImportRef[] = [];
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  for (const m of code.matchAll(IMPORT_RE)) out.push({ spec: m[3] ?? '', typeOnly: m[2] !== undefined });
  for (const m of code.matchAll(DYNAMIC_RE)) out.push({ spec: m[1] ?? '', typeOnly: false });
  return out;
}

const isTest = (p: string): boolean => p.endsWith('.test.ts') || p.startsWith('test/') || p.startsWith('bench/');
const isCompositionRoot = (p: string): boolean => COMPOSITION_ROOTS.includes(p);
const isSysApi = (target: string): boolean => /^sys\/(.+\/)?api\.ts$/.test(target);
const layerOf = (p: string): Layer | undefined => LAYERS.find((l) => p.startsWith(`${l}/`));

/** Returns one message per violation. Pure, so the rules themselves are unit-tested below. */
export function checkFiles(files: readonly SourceFile[]): string[] {
  const problems: string[] = [];
  for (const f of files) {
    const from = layerOf(f.path);
    const test = isTest(f.path);
    for (const imp of importsOf(f.text)) {
      if (imp.spec === 'node:child_process' || imp.spec === 'child_process') {
        if (f.path !== 'sys/exec.ts' && !test) problems.push(`${f.path}: imports node:child_process (only sys/exec.ts may start processes)`);
        continue;
      }
      const bare = imp.spec.replace(/^node:/, '');
      if (SYSTEM_MODULES.includes(bare) && (imp.spec.startsWith('node:') || !imp.spec.startsWith('.'))) {
        const excepted = SYSTEM_MODULE_EXCEPTIONS[f.path]?.includes(`node:${bare}`) === true;
        if (!test && from !== undefined && from !== 'sys' && !excepted) problems.push(`${f.path}: imports ${imp.spec} (only sys/ touches disk, sockets and processes)`);
        continue;
      }
      if (!imp.spec.startsWith('.')) continue;
      if (!imp.spec.endsWith('.js')) problems.push(`${f.path}: relative import ${imp.spec} must end in .js`);
      const target = posix.normalize(posix.join(posix.dirname(f.path), imp.spec)).replace(/\.js$/, '.ts');
      const to = layerOf(target);
      if (target.startsWith('test/') && !test) problems.push(`${f.path}: imports ${target} (only tests import test/)`);
      if (/(^|\/)fake\.ts$/.test(target) && !test) problems.push(`${f.path}: imports ${target} (only tests import fakes)`);
      if (to === 'cli' && from !== 'cli') problems.push(`${f.path}: imports ${target} (nothing imports cli/)`);
      if (from === undefined || to === undefined || from === to || test) continue;
      if (!ALLOWED[from].includes(to)) {
        problems.push(`${f.path}: layer ${from} may not import ${to} (${target})`);
        continue;
      }
      if (from === 'cnm' && to !== 'core' && to !== 'sys' && !['drivers/api.ts', 'drivers/registry.ts', 'ipam/api.ts', 'dns/api.ts'].includes(target)) {
        problems.push(`${f.path}: cnm may import only drivers/api.ts, drivers/registry.ts, ipam/api.ts, dns/api.ts (got ${target})`);
      }
      if (to === 'sys' && !imp.typeOnly && !isCompositionRoot(f.path)) {
        problems.push(`${f.path}: value import of ${target}; outside composition roots sys is imported with \`import type\` only`);
      }
      if (to === 'sys' && imp.typeOnly && !isSysApi(target) && !isCompositionRoot(f.path)) {
        problems.push(`${f.path}: type import of ${target}; outside composition roots sys types come from its api.ts files`);
      }
    }
    if (test || from === undefined) continue;
    if (/shell:\s*true|\bexecSync\(|\bexec\(\s*['"`]/.test(f.text)) problems.push(`${f.path}: starts a process through a shell`);
    if (!f.path.startsWith('sys/firewall/') && /['"`](nft|iptables|ip6tables|iptables-restore|ip6tables-restore|iptables-save|ip6tables-save)['"`]/.test(f.text)) {
      problems.push(`${f.path}: spells a firewall command (only sys/firewall/ may)`);
    }
    if (from !== 'cli' && /\bconsole\.(log|error|warn|info|debug)\(/.test(f.text)) problems.push(`${f.path}: uses console.* (inject a Logger; only cli/ prints)`);
    if (!isCompositionRoot(f.path) && /\bprocess\.env\b/.test(f.text)) problems.push(`${f.path}: reads process.env outside a composition root`);
    if (/^\s*(export\s+)?(const\s+)?enum\s/m.test(f.text) || /^\s*(export\s+)?namespace\s/m.test(f.text)) problems.push(`${f.path}: uses enum/namespace`);
    if (/^\s*export\s+default\b/m.test(f.text)) problems.push(`${f.path}: default export (named exports only)`);
  }
  return problems;
}

function collect(): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const p = posix.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) out.push({ path: p, text: readFileSync(join(ROOT, p), 'utf8') });
    }
  };
  for (const l of LAYERS) {
    try {
      walk(l);
    } catch {
      // a layer with no files yet
    }
  }
  return out;
}

t.test('every product file follows the import rules', async (t) => {
  const files = collect();
  t.ok(files.length > 5, `scanned ${files.length} files`);
  t.same(checkFiles(files), [], 'no violations');
});

t.test('the rules fire on violations (self-test)', async (t) => {
  const cases: [SourceFile, RegExp][] = [
    [{ path: 'core/x.ts', text: "import { a } from '../sys/exec.js';" }, /core may not import sys/],
    [{ path: 'drivers/bridge/x.ts', text: "import { run } from '../../sys/exec.js';" }, /value import/],
    [{ path: 'drivers/bridge/x.ts', text: "import { x } from '../../cnm/controller.js';" }, /may not import cnm/],
    [{ path: 'cnm/x.ts', text: "import type { X } from '../drivers/bridge/index.js';" }, /cnm may import only/],
    [{ path: 'ipam/x.ts', text: "import { execFile } from 'node:child_process';" }, /child_process/],
    [{ path: 'dns/x.ts', text: "import { f } from '../sys/netlink/fake.js';" }, /only tests import fakes/],
    [{ path: 'plugins/x.ts', text: "import { m } from '../cli/main.js';" }, /nothing imports cli/],
    [{ path: 'drivers/x.ts', text: "const argv = ['iptables', '-A'];" }, /firewall command/],
    [{ path: 'ipam/x.ts', text: "console.log('hi');" }, /console/],
    [{ path: 'ipam/x.ts', text: "const d = process.env.HOME;" }, /process\.env/],
    [{ path: 'ipam/x.ts', text: "import { a } from './b';" }, /must end in \.js/],
    [{ path: 'ipam/x.ts', text: "execFile('x', [], { shell: true });" }, /shell/],
    [{ path: 'ipam/x.ts', text: "export enum Color { Red }" }, /enum/],
    [{ path: 'ipam/x.ts', text: "import {\n  a,\n  b,\n} from '../drivers/api.js';" }, /ipam may not import drivers/],
    [{ path: 'engine/x.ts', text: "import { readFile } from 'node:fs/promises';" }, /only sys\/ touches disk/],
    [{ path: 'runtime/x.ts', text: "import net from 'node:net';" }, /only sys\/ touches disk/],
    [{ path: 'cnm/x.ts', text: "import type { NetnsManager } from '../sys/netns.js';" }, /sys types come from its api\.ts/],
    [{ path: 'cli/commands/x.ts', text: "import { run } from '../../sys/exec.js';" }, /value import/],
    [{ path: 'cli/commands/x.ts', text: "import { createDispatcher } from '../../plugins/docker/dispatch.js';" }, /cli may not import plugins/],
    [{ path: 'lib/x.ts', text: "import { createIpam } from '../ipam/allocator.js';" }, /lib may not import ipam/],
    [{ path: 'lib/x.ts', text: "console.log(process.env.X);" }, /process\.env/],
    [{ path: 'engine/x.ts', text: "import { openFsStore } from '../sys/store/fs.js';" }, /value import/],
  ];
  for (const [file, re] of cases) t.match(checkFiles([file]).join('\n'), re, `${file.path}: ${re}`);
  t.same(checkFiles([{ path: 'drivers/x.ts', text: "import type { Netlink } from '../sys/netlink/api.js';" }]), [], 'type-only sys import is fine');
  t.same(checkFiles([{ path: 'cli/main.ts', text: "import { run } from '../sys/exec.js';\nconsole.log(process.env.X);" }]), [], 'composition root may');
  t.same(checkFiles([{ path: 'engine/engine.ts', text: "import { openFsStore } from '../sys/store/fs.js';" }]), [], 'a named engine root may build sys parts');
  t.same(checkFiles([{ path: 'cnm/x.ts', text: "import type { Firewall } from '../sys/firewall/api.js';" }]), [], 'types from a sys api.ts are fine');
  t.same(checkFiles([{ path: 'sys/x.ts', text: "import { readFile } from 'node:fs/promises';" }]), [], 'sys may touch the disk');
  t.same(checkFiles([{ path: 'dns/server.ts', text: "import dgram from 'node:dgram';" }]), [], 'the DNS server owns its sockets');
  t.same(checkFiles([{ path: 'test/x.test.ts', text: "import { f } from '../sys/netlink/fake.js';" }]), [], 'tests may import fakes');
});
