/**
 * Docker's `--filter KEY=VALUE` (`-f`): parsed once per command against the keys it knows (an
 * unknown key is an error naming it, as Docker's "invalid filter"), combined as Docker does:
 * values of one key are alternatives (OR), different keys must all match (AND), and `label`
 * filters must all match (`label=KEY` or `label=KEY=VALUE`, also `label!=`).
 */
import { TsnetError } from '../core/errors.js';

export type Filters = ReadonlyMap<string, readonly string[]>;

export function parseFilters(raw: readonly string[], allowed: readonly string[]): Filters {
  const out = new Map<string, string[]>();
  for (const f of raw) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new TsnetError('INVALID_CONFIG', `filter: bad format of filter (expected name=value): ${JSON.stringify(f)}`, { details: { field: 'filter', value: f } });
    let key = f.slice(0, eq);
    let value = f.slice(eq + 1);
    if (key.endsWith('!')) {
      key = key.slice(0, -1);
      value = `!${value}`;
      if (key !== 'label') throw new TsnetError('INVALID_CONFIG', `filter: invalid filter '${key}!='`, { details: { field: 'filter', value: f } });
    }
    if (!allowed.includes(key)) throw new TsnetError('INVALID_CONFIG', `filter: invalid filter '${key}'`, { details: { field: 'filter', value: f } });
    const list = out.get(key) ?? [];
    list.push(value);
    out.set(key, list);
  }
  return out;
}

/** True when `test` holds for some value of `key`, or when there is no such filter. */
export function anyOf(f: Filters, key: string, test: (value: string) => boolean): boolean {
  const vs = f.get(key);
  return vs === undefined || vs.some(test);
}

/** Every label filter matches the labels. */
export function labelsMatch(f: Filters, labels: Readonly<Record<string, string>>): boolean {
  return (f.get('label') ?? []).every((raw) => {
    const neg = raw.startsWith('!');
    const spec = neg ? raw.slice(1) : raw;
    const eq = spec.indexOf('=');
    const key = eq < 0 ? spec : spec.slice(0, eq);
    const hit = eq < 0 ? key in labels : labels[key] === spec.slice(eq + 1);
    return neg ? !hit : hit;
  });
}

export function boolFilter(f: Filters, key: string): boolean | undefined {
  const vs = f.get(key);
  if (vs === undefined) return undefined;
  const v = vs.at(-1) as string;
  if (!['true', 'false', '1', '0'].includes(v.toLowerCase())) throw new TsnetError('INVALID_CONFIG', `filter: invalid value for ${key}: ${JSON.stringify(v)} (true or false)`, { details: { field: 'filter', value: `${key}=${v}` } });
  return v === 'true' || v === '1';
}
