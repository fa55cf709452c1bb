/**
 * Names and ids of the store. They become file names, so they are validated before any path is
 * built. A module of its own, free of zod: sys/store/lock.ts needs parseLockName, and the CNI
 * plugin bundle (which uses the lock but no record store) must not pull zod in.
 */
import { TsnetError } from '../../core/errors.js';

const COLLECTION_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
/** Record ids: container ids (64 hex), network/endpoint ids, "10.0.0.5", "fd00::5", "tcp-8080". */
const RECORD_ID = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$/;
/** Lock names may use '/' as a separator ("record/networks/n1"); they never become paths. */
const LOCK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,255}$/;
const MAX_OWNER_BYTES = 4096;

export function invalidName(field: string, raw: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: ${why}`, { details: { field, value: raw } });
}

export function parseCollectionName(raw: string, field = 'collection name'): string {
  if (typeof raw !== 'string' || !COLLECTION_NAME.test(raw)) {
    throw invalidName(field, raw, 'must be 1-64 of lowercase letters, digits, "_", "." or "-", starting with a letter or digit');
  }
  return raw;
}

/** A record id or reservation key: safe as a file name (no '/', no leading '.', no NUL). */
export function parseRecordId(raw: string, field = 'record id'): string {
  if (typeof raw !== 'string' || !RECORD_ID.test(raw)) {
    throw invalidName(field, raw, 'must be 1-200 of letters, digits, "_", ".", ":", "@" or "-", starting with a letter or digit');
  }
  return raw;
}

export function parseLockName(raw: string, field = 'lock name'): string {
  if (typeof raw !== 'string' || !LOCK_NAME.test(raw)) {
    throw invalidName(field, raw, 'must be 1-256 of letters, digits, "_", ".", ":", "@", "/" or "-", starting with a letter or digit');
  }
  return raw;
}

export function parseOwner(raw: string, field = 'reservation owner'): string {
  if (typeof raw !== 'string' || raw.length === 0 || raw.includes('\0') || Buffer.byteLength(raw) > MAX_OWNER_BYTES) {
    throw invalidName(field, raw, `must be a non-empty string of at most ${MAX_OWNER_BYTES} bytes without NUL`);
  }
  return raw;
}

