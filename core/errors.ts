/**
 * The one error class of tsnet and its closed set of codes. Codes are mapped outward in exactly one
 * place each: exit codes (EXIT_CODE, used by cli/main.ts) and CNI error codes (CNI_CODE, used by
 * plugins/skel.ts). Decide by `code`, never by message text.
 */
export type ErrorCode =
  | 'INVALID_CONFIG'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'EXHAUSTED'
  | 'UNAVAILABLE'
  /** The disk or another I/O resource failed (ENOSPC, EIO, EROFS, EDQUOT): not the input's fault, not transient. */
  | 'IO_FAILURE'
  | 'INTERNAL';

export const ERROR_CODES = [
  'INVALID_CONFIG',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'EXHAUSTED',
  'UNAVAILABLE',
  'IO_FAILURE',
  'INTERNAL',
] as const satisfies readonly ErrorCode[];

export interface TsnetErrorOptions {
  readonly cause?: unknown;
  readonly details?: Readonly<Record<string, unknown>>;
}

export class TsnetError extends Error {
  override readonly name = 'TsnetError';
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;
  constructor(code: ErrorCode, message: string, opts: TsnetErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.details = opts.details ?? {};
  }
}

/** Adds context while keeping the code: "join ep1: add veth: File exists". */
export function wrap(context: string, err: unknown): TsnetError {
  const code = err instanceof TsnetError ? err.code : 'INTERNAL';
  const details = err instanceof TsnetError ? err.details : {};
  return new TsnetError(code, `${context}: ${err instanceof Error ? err.message : String(err)}`, {
    cause: err,
    details,
  });
}

export function isCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof TsnetError && err.code === code;
}

/** Process exit codes for the CLI; scripts may rely on them. */
export const EXIT_CODE = {
  INVALID_CONFIG: 2,
  NOT_FOUND: 3,
  ALREADY_EXISTS: 4,
  EXHAUSTED: 5,
  UNAVAILABLE: 6,
  IO_FAILURE: 7,
  INTERNAL: 1,
} as const satisfies Record<ErrorCode, number>;

/** CNI spec error codes (SPEC §"Error"): 7 invalid config, 11 try again later, 50 not available. */
export const CNI_CODE = {
  INVALID_CONFIG: 7,
  NOT_FOUND: 3,
  ALREADY_EXISTS: 100,
  EXHAUSTED: 11,
  UNAVAILABLE: 50,
  IO_FAILURE: 5,
  INTERNAL: 999,
} as const satisfies Record<ErrorCode, number>;

/** errno codes that mean the I/O resource failed (disk full, read-only, hardware). */
const IO_ERRNOS = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EMFILE', 'ENFILE']);
/** errno codes that mean a configured path is unusable as given. */
const PATH_ERRNOS = new Set(['ENOTDIR', 'EISDIR', 'ENAMETOOLONG', 'EEXIST', 'ELOOP', 'EACCES', 'EPERM', 'ENOENT']);

/**
 * A filesystem error as a TsnetError: IO_FAILURE for a failing resource, INVALID_CONFIG (naming
 * `field`) for a path that cannot be used as configured, INTERNAL otherwise. A TsnetError passes.
 */
export function fsError(context: string, err: unknown, field?: string): TsnetError {
  if (err instanceof TsnetError) return wrap(context, err);
  const errno = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  const msg = `${context}: ${err instanceof Error ? err.message : String(err)}`;
  if (IO_ERRNOS.has(errno)) return new TsnetError('IO_FAILURE', msg, { cause: err, details: { errno } });
  if (PATH_ERRNOS.has(errno) && field !== undefined) return new TsnetError('INVALID_CONFIG', msg, { cause: err, details: { errno, field } });
  return new TsnetError('INTERNAL', msg, { cause: err, details: { errno } });
}
