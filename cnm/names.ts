/**
 * Rules about names and records that need no schema library: the CNI plugin bundle imports them
 * without zod (which cnm/model.ts, the records' schemas, loads), and model.ts re-exports them.
 */
import { TsnetError } from '../core/errors.js';
import type { NetworkRecord } from './model.js';

/** Docker's rule for container and network names. */
export const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function checkName(raw: string, field: string): string {
  if (typeof raw !== 'string' || !NAME_PATTERN.test(raw) || raw.length > 128) {
    throw new TsnetError('INVALID_CONFIG', `${field}: invalid name ${JSON.stringify(raw)}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`, { details: { field, value: raw } });
  }
  return raw;
}

/** A hostname (RFC 1123 labels of at most 63 characters, 253 in all), as Docker accepts for --hostname. */
export const isHostname = (raw: string): boolean => typeof raw === 'string' && raw.length <= 253 && HOSTNAME.test(raw);
const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}))*$/;

/** Whether a name passes checkName. */
export const isName = (raw: string): boolean => typeof raw === 'string' && NAME_PATTERN.test(raw) && raw.length <= 128;

/** Whether the embedded resolver serves this network (bridge networks, unless created with --disable-dns). */
export const networkHasDns = (n: Pick<NetworkRecord, 'driver' | 'dnsEnabled' | 'door'>): boolean => (n.driver === 'bridge' || n.driver === 'overlay') && n.dnsEnabled !== false && n.door === undefined;
