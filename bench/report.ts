/**
 * What a benchmark returns. Every figure that has a baseline measured in the same run carries it,
 * so the report can print ratios (machines are noisy; absolute times alone say little).
 */
export interface BenchRow {
  readonly name: string;
  /** The measured figure for tsnet. */
  readonly value: number;
  readonly unit: 'ms' | 'us' | 'ops/s' | 'qps' | 'Gbit/s' | 'MiB' | 'count' | 'x';
  /** The same figure for the baseline (the reference tool measured in this run), if any. */
  readonly baseline?: { readonly name: string; readonly value: number };
  /** A goal to compare with, in words ("<= 200 ms", ">= 5x"). */
  readonly goal?: string;
  /** Did the figure meet the goal? Omitted when there is no goal. */
  readonly met?: boolean;
}

export interface BenchSection {
  readonly title: string;
  readonly rows: readonly BenchRow[];
  readonly notes?: readonly string[];
}

/** Statistics over repeated samples (milliseconds). */
export function stats(samples: readonly number[]): { readonly median: number; readonly p95: number; readonly min: number; readonly mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
  return { median: at(0.5), p95: at(0.95), min: s[0] ?? NaN, mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length) };
}

/** Times `fn` `n` times after `warmup` untimed runs; returns samples in milliseconds. */
export async function sample(n: number, fn: (i: number) => Promise<unknown>, warmup = 3): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn(-1 - i);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out;
}

export function formatSection(sec: BenchSection): string {
  const lines = [`## ${sec.title}`];
  for (const r of sec.rows) {
    const v = `${round(r.value)} ${r.unit}`;
    const base = r.baseline ? `  vs ${r.baseline.name} ${round(r.baseline.value)} ${r.unit} -> ${ratioText(r)}` : '';
    const goal = r.goal ? `  [goal ${r.goal}: ${r.met === true ? 'met' : r.met === false ? 'NOT met' : '?'}]` : '';
    lines.push(`- ${r.name}: ${v}${base}${goal}`);
  }
  for (const n of sec.notes ?? []) lines.push(`  note: ${n}`);
  return lines.join('\n');
}

function ratioText(r: BenchRow): string {
  if (!r.baseline || r.value === 0) return '';
  const lowerIsBetter = r.unit === 'ms' || r.unit === 'us' || r.unit === 'MiB' || r.unit === 'count';
  const ratio = lowerIsBetter ? r.baseline.value / r.value : r.value / r.baseline.value;
  return `tsnet is ${round(ratio)}x ${lowerIsBetter ? 'faster/smaller' : 'higher'} (tsnet/baseline = ${round(r.value / r.baseline.value)})`;
}

function round(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
}
