/**
 * The units of impairments as people write them (tc's spelling): rates `10mbit`, `1.5gbit`,
 * `500kbps` (bytes), delays `20ms`, `500us`, `1s`, losses `1%` or `0.5`. Pure; shared by the lab
 * file and `tsnet lab impair`. Each parser throws INVALID_CONFIG naming `field`.
 */
import { TsnetError } from '../core/errors.js';
import type { Impairment } from '../sys/api.js';

const RATE_UNITS: Readonly<Record<string, number>> = {
  bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12,
  bps: 8, kbps: 8e3, mbps: 8e6, gbps: 8e9, tbps: 8e12,
};
const TIME_UNITS: Readonly<Record<string, number>> = { us: 1, ms: 1e3, s: 1e6 };

function bad(field: string, raw: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: ${why}`, { details: { field, value: raw } });
}

/** Bits per second. */
export function parseRate(raw: string | number, field = 'rate'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/i.exec(String(raw).trim());
  const unit = RATE_UNITS[(m?.[2] ?? '').toLowerCase()];
  if (!m || unit === undefined) throw bad(field, raw, 'expected a rate such as 10mbit, 512kbit, 1gbit or 1mbps (bytes per second)');
  const bits = Math.round(Number(m[1]) * unit);
  if (!(bits >= 8) || bits > 2 ** 53) throw bad(field, raw, 'must be at least 8bit per second');
  return bits;
}

/** Microseconds. */
export function parseDuration(raw: string | number, field = 'delay'): number {
  const m = /^(\d+(?:\.\d+)?)\s*(us|ms|s)$/.exec(String(raw).trim());
  const unit = TIME_UNITS[m?.[2] ?? ''];
  if (!m || unit === undefined) throw bad(field, raw, 'expected a duration such as 20ms, 500us or 1s');
  const us = Math.round(Number(m[1]) * unit);
  if (us > 60e6) throw bad(field, raw, 'must be at most 60s');
  return us;
}

/** Percent, 0 to 100. */
export function parsePercent(raw: string | number, field = 'loss'): number {
  const m = /^(\d+(?:\.\d+)?)\s*%?$/.exec(String(raw).trim());
  const pct = m ? Number(m[1]) : Number.NaN;
  if (!m || !(pct >= 0 && pct <= 100)) throw bad(field, raw, 'expected a percentage from 0 to 100, such as 1% or 0.5%');
  return pct;
}

export interface ImpairInput {
  readonly rate?: string | number | undefined;
  readonly delay?: string | number | undefined;
  readonly jitter?: string | number | undefined;
  readonly loss?: string | number | undefined;
}

/** The kernel's form of an impairment written with units; `field` is the path of the object. */
export function parseImpairment(raw: ImpairInput, field: string): Impairment {
  const imp: Impairment = {
    ...(raw.rate !== undefined ? { rate: parseRate(raw.rate, `${field}.rate`) } : {}),
    ...(raw.delay !== undefined ? { delayUs: parseDuration(raw.delay, `${field}.delay`) } : {}),
    ...(raw.jitter !== undefined ? { jitterUs: parseDuration(raw.jitter, `${field}.jitter`) } : {}),
    ...(raw.loss !== undefined ? { lossPct: parsePercent(raw.loss, `${field}.loss`) } : {}),
  };
  if (imp.jitterUs !== undefined && imp.delayUs === undefined) throw bad(`${field}.jitter`, raw.jitter, 'a jitter needs a delay');
  return imp;
}

/** Whether an impairment needs netem (anything but a rate). */
export const needsNetem = (imp: Impairment): boolean => imp.delayUs !== undefined || imp.jitterUs !== undefined || imp.lossPct !== undefined;

/** The fields of `raw` that need netem (delay, jitter, loss), as paths. */
export const netemFields = (raw: ImpairInput, field: string): string[] =>
  (['delay', 'jitter', 'loss'] as const).filter((k) => raw[k] !== undefined).map((k) => `${field}.${k}`);

/** Back to tc's spelling, for display. */
export function formatImpairment(imp: Impairment | undefined): string {
  if (imp === undefined) return '';
  const parts: string[] = [];
  if (imp.rate !== undefined) parts.push(`rate ${formatRate(imp.rate)}`);
  if (imp.delayUs !== undefined) parts.push(`delay ${formatUs(imp.delayUs)}${imp.jitterUs !== undefined ? ` ±${formatUs(imp.jitterUs)}` : ''}`);
  if (imp.lossPct !== undefined) parts.push(`loss ${imp.lossPct}%`);
  return parts.join(' ');
}

export function formatRate(bits: number): string {
  for (const [u, n] of [['gbit', 1e9], ['mbit', 1e6], ['kbit', 1e3]] as const) if (bits >= n && bits % (n / 1000) === 0) return `${bits / n}${u}`;
  return `${bits}bit`;
}

const formatUs = (us: number): string => (us >= 1000 && us % 1000 === 0 ? `${us / 1000}ms` : `${us}us`);
