/**
 * Docker-style argument parsing: long (`--name x`, `--name=x`) and short (`-d`, `-p 80:80`, `-dit`)
 * flags, repeatable flags, and, for commands that run something, option parsing that stops at the
 * first positional (`tsnet run -d --name x -- node server.js --port 1` and `tsnet run -d node x`).
 * Unknown flags and missing values are INVALID_CONFIG naming the flag.
 */
import { TsnetError } from '../core/errors.js';

export interface FlagSpec {
  readonly name: string;
  readonly short?: string;
  readonly type: 'string' | 'boolean';
  readonly multiple?: boolean;
  readonly help: string;
  readonly placeholder?: string;
}

export interface Parsed {
  readonly flags: Readonly<Record<string, string | boolean | readonly string[] | undefined>>;
  readonly positionals: readonly string[];
}

function bad(flag: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${flag}: ${msg}`, { details: { field: flag } });
}

export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[], opts: { readonly stopAtPositional?: boolean } = {}): Parsed {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short !== undefined).map((s) => [s.short as string, s]));
  const flags: Record<string, string | boolean | string[] | undefined> = {};
  const positionals: string[] = [];
  const set = (spec: FlagSpec, value: string | boolean): void => {
    if (spec.multiple) {
      const list = (flags[spec.name] as string[] | undefined) ?? [];
      list.push(String(value));
      flags[spec.name] = list;
    } else {
      flags[spec.name] = value;
    }
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--') && arg.length > 2) {
      const eq = arg.indexOf('=');
      const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      const spec = byName.get(name);
      if (!spec) throw bad(`--${name}`, 'unknown flag');
      if (spec.type === 'boolean') {
        if (eq >= 0) {
          const v = arg.slice(eq + 1);
          if (v !== 'true' && v !== 'false') throw bad(`--${name}`, `expected true or false, got ${JSON.stringify(v)}`);
          set(spec, v === 'true');
        } else set(spec, true);
        continue;
      }
      const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) throw bad(`--${name}`, 'needs a value');
      set(spec, value);
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      // -d, -dit, -p80:80, -p 80:80
      for (let j = 1; j < arg.length; j++) {
        const ch = arg[j] ?? '';
        const spec = byShort.get(ch);
        if (!spec) throw bad(`-${ch}`, 'unknown flag');
        if (spec.type === 'boolean') {
          set(spec, true);
          continue;
        }
        const rest = arg.slice(j + 1);
        const value = rest.length > 0 ? rest.replace(/^=/, '') : argv[++i];
        if (value === undefined) throw bad(`-${ch}`, 'needs a value');
        set(spec, value);
        break;
      }
      continue;
    }
    positionals.push(arg);
    if (opts.stopAtPositional) {
      positionals.push(...argv.slice(i + 1));
      break;
    }
  }
  return { flags, positionals };
}

export const str = (p: Parsed, name: string): string | undefined => {
  const v = p.flags[name];
  return typeof v === 'string' ? v : undefined;
};
export const bool = (p: Parsed, name: string): boolean => p.flags[name] === true;
export const list = (p: Parsed, name: string): readonly string[] => {
  const v = p.flags[name];
  return Array.isArray(v) ? v : [];
};

/** `-o a=b -o c=d` → { a: 'b', c: 'd' }. */
export function keyValues(items: readonly string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw bad(flag, `expected KEY=VALUE, got ${JSON.stringify(item)}`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

export function usage(command: string, summary: string, specs: readonly FlagSpec[], example: string): string {
  const lines = [`Usage: tsnet ${command}`, '', summary, ''];
  if (specs.length > 0) {
    lines.push('Options:');
    for (const s of specs) {
      const left = `${s.short ? `-${s.short}, ` : '    '}--${s.name}${s.type === 'string' ? ` ${s.placeholder ?? 'string'}` : ''}`;
      lines.push(`  ${left.padEnd(32)} ${s.help}${s.multiple ? ' (repeatable)' : ''}`);
    }
    lines.push('');
  }
  lines.push('Example:', `  ${example}`);
  return `${lines.join('\n')}\n`;
}

/** A plain text table, left-aligned, three spaces between columns (Docker's look). */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: readonly string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   ').trimEnd();
  return `${[fmt(header), ...rows.map(fmt)].join('\n')}\n`;
}
