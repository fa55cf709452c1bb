/**
 * The CNI error object (SPEC §"Error") and the one place where tsnet's error codes become CNI codes.
 * Pure.
 */
import { CNI_CODE, TsnetError } from '../../core/errors.js';

/** Codes the spec reserves that tsnet emits. */
export const CNI_ERR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN: 11,
  NOT_AVAILABLE: 50,
  NOT_AVAILABLE_DEGRADED: 51,
} as const;

export class CniError extends Error {
  override readonly name = 'CniError';
  readonly code: number;
  /** The spec's short `msg`; the long explanation goes to `details`. */
  readonly msg: string;
  readonly details: string;
  constructor(code: number, details: string, msg?: string, opts: { cause?: unknown } = {}) {
    super(details, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.msg = msg ?? details;
    this.details = details;
  }
}

/**
 * Any error as a CniError. TsnetError codes map through core's CNI_CODE (INVALID_CONFIG 7 whatever
 * the errno behind it, IO_FAILURE 5), except that UNAVAILABLE (a lock not acquired, a helper
 * process that died or timed out: transient) is "try again later" (11) for every verb but STATUS,
 * where it means "plugin not available" (50); a tool that is not installed is not transient:
 * internal error (999), or 50 for STATUS.
 */
export function toCniError(err: unknown, verb: string): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof AggregateError) {
    const first = err.errors.find((e) => e instanceof TsnetError || e instanceof CniError);
    if (first !== undefined) {
      const c = toCniError(first, verb);
      return new CniError(c.code, err.message, c.msg, { cause: err });
    }
  }
  if (err instanceof TsnetError) {
    const missingTool = err.code === 'UNAVAILABLE' && err.details['missingBinary'] === true;
    const code = err.code !== 'UNAVAILABLE' ? CNI_CODE[err.code] : verb === 'STATUS' ? CNI_ERR.NOT_AVAILABLE : missingTool ? 999 : CNI_ERR.TRY_AGAIN;
    return new CniError(code, err.message, err.message.split(':')[0], { cause: err });
  }
  if (err instanceof AggregateError) return new CniError(999, err.message, 'teardown failed', { cause: err });
  return new CniError(999, err instanceof Error ? err.message : String(err), 'internal error', { cause: err });
}

export function errorJson(e: CniError, cniVersion: string): string {
  return `${JSON.stringify({ cniVersion, code: e.code, msg: e.msg, details: e.details })}\n`;
}
