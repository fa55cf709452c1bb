/**
 * The JSON shapes of the runtime: the container spec the CLI hands in, the persisted container
 * record (schema-versioned), and the two files exchanged with the shim through the container's run
 * directory (`spec.json`, written by the runtime; `state.json`, written by the shim).
 */
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';

/** Docker's container name rule. */
export const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const ID_PATTERN = /^[0-9a-f]{64}$/;
/** RFC 1123 host name, at most 64 bytes (HOST_NAME_MAX); never starts with '-'. */
const HOSTNAME = /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const ENV_KEY = /^[^=\0]+$/;

const noNul = (s: string): boolean => !s.includes('\0');
const AbsPath = z
  .string()
  .refine((p) => p.startsWith('/') && noNul(p) && !p.split('/').includes('..'), 'must be an absolute path without ".." or NUL');
const Iso = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO date');

export const NetnsRefSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('host') }),
  z.strictObject({ kind: z.literal('path'), path: AbsPath }),
]);

/** What a file inside the container shows: literal content, or a host file bind-mounted in place. */
export const FileSourceSchema = z.union([
  z.strictObject({ content: z.string() }),
  z.strictObject({ hostPath: AbsPath }),
]);
export type FileSource = z.infer<typeof FileSourceSchema>;

/** Container paths we bind files onto: no whitespace or backslash (kept simple for fstab). */
const ContainerFilePath = AbsPath.refine((p) => !/[\s\\]/.test(p) && p !== '/' && !p.endsWith('/'), 'must be a file path without whitespace');

/**
 * The container spec the CLI passes to `run`. Everything has a default except argv and netns.
 * `files` are bind-mounted over the container's files (e.g. /etc/hosts, /etc/resolv.conf): the
 * container sees them, the host's files are never modified.
 */
export const ContainerSpecSchema = z.strictObject({
  id: z.string().regex(ID_PATTERN, 'must be 64 lowercase hex digits').optional(),
  name: z.string().max(253).regex(NAME_PATTERN, 'must match [a-zA-Z0-9][a-zA-Z0-9_.-]*').optional(),
  /** Default: the first 12 characters of the id, as Docker does. */
  hostname: z.string().regex(HOSTNAME, 'must be a valid host name (RFC 1123, at most 64 characters)').optional(),
  argv: z.array(z.string().refine(noNul, 'must not contain NUL')).min(1, 'needs a command'),
  /** The complete environment is PATH, HOSTNAME and HOME defaults overlaid with this. */
  env: z.record(z.string().regex(ENV_KEY, 'invalid variable name'), z.string().refine(noNul, 'must not contain NUL')).default({}),
  cwd: AbsPath.default('/'),
  /** A root directory; without it the container sees the host's tree in its own mount namespace. */
  rootfs: AbsPath.optional(),
  /** The network namespace, prepared by the networking layer (or the host's for `--network host`). */
  netns: NetnsRefSchema,
  files: z.record(ContainerFilePath, FileSourceSchema).default({}),
  labels: z.record(z.string(), z.string()).default({}),
  /** Remove the container once it has exited (`--rm`). */
  autoRemove: z.boolean().default(false),
  /** `-t`: the process gets a pseudo-terminal (stdout and stderr are one stream). */
  tty: z.boolean().default(false),
  /** `-i`: the process's stdin stays open for attached clients (else it reads /dev/null). */
  openStdin: z.boolean().default(false),
  /** `--init`: a minimal init (tini) is PID 1: it reaps zombies and forwards signals to the command. */
  init: z.boolean().default(false),
  /**
   * The configuration the door that made the container keeps with it (the CLI's network settings,
   * replayed by `start`): persisted as given, never interpreted by the runtime.
   */
  config: z.record(z.string(), z.unknown()).default({}),
});
export type ContainerSpecInput = z.input<typeof ContainerSpecSchema>;
export type ContainerSpec = z.output<typeof ContainerSpecSchema>;

export function parseContainerSpec(raw: unknown): ContainerSpec {
  const r = ContainerSpecSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INVALID_CONFIG', `container spec: ${z.prettifyError(r.error)}`, { details: { field: 'container spec' } });
  return r.data;
}

export function parseContainerName(raw: string, field = 'container name'): string {
  if (typeof raw !== 'string' || raw.length > 253 || !NAME_PATTERN.test(raw)) {
    throw new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]*`, { details: { field, value: raw } });
  }
  return raw;
}

export const CONTAINER_STATUSES = ['created', 'running', 'exited'] as const;
export type ContainerStatus = (typeof CONTAINER_STATUSES)[number];

/** The persisted container. `status` is refreshed from the run directory and /proc when read. */
export const ContainerRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: z.string().regex(ID_PATTERN),
  name: z.string().regex(NAME_PATTERN),
  hostname: z.string().regex(HOSTNAME),
  argv: z.array(z.string()).min(1),
  /** The complete environment of the container's process. */
  env: z.record(z.string(), z.string()),
  cwd: AbsPath,
  rootfs: AbsPath.nullable(),
  netns: NetnsRefSchema,
  files: z.record(z.string(), FileSourceSchema),
  labels: z.record(z.string(), z.string()),
  autoRemove: z.boolean(),
  tty: z.boolean().default(false),
  openStdin: z.boolean().default(false),
  init: z.boolean().default(false),
  config: z.record(z.string(), z.unknown()).default({}),
  /**
   * The client a foreground container belongs to (`run` without -d): while it lives it owns the
   * container's end; once it is gone, a foreground `--rm` container is removed by whoever sees it.
   */
  foreground: z.strictObject({ pid: z.number().int().positive(), startTime: z.string() }).nullable().default(null),
  createdAt: Iso,
  status: z.enum(CONTAINER_STATUSES),
  /** Host PID of the container's first process (PID 1 inside), and its start time (/proc/PID/stat field 22). */
  pid: z.number().int().positive().nullable(),
  pidStartTime: z.string().nullable(),
  /** The boot the pid belongs to (/proc/sys/kernel/random/boot_id): pids do not survive a reboot. */
  bootId: z.string().nullable(),
  startedAt: Iso.nullable(),
  finishedAt: Iso.nullable(),
  /** Exit code (128+n when killed by signal n); null when unknown (the supervisor died too). */
  exitCode: z.number().int().min(0).max(255).nullable(),
  /** Why the container failed to start, if it did. */
  error: z.string().nullable(),
  /** How many times `start`/`restart` started it again. */
  restartCount: z.number().int().min(0).default(0),
});
export type ContainerRecord = z.output<typeof ContainerRecordSchema>;

export function parseContainerRecord(raw: unknown): ContainerRecord {
  const r = ContainerRecordSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INTERNAL', `container record: ${z.prettifyError(r.error)}`);
  return r.data;
}

/** Absolute paths of the host tools the shim and `exec` run (resolved once by the composition root). */
export const RUNTIME_TOOLS = ['env', 'nsenter', 'unshare', 'mount', 'hostname', 'cat'] as const;
export type RuntimeTool = (typeof RUNTIME_TOOLS)[number];
export type RuntimeTools = Readonly<Record<RuntimeTool, string>>;

/** `spec.json`: everything the shim needs, with every path absolute. */
export const ShimSpecSchema = z.strictObject({
  schemaVersion: z.literal(1),
  id: z.string().regex(ID_PATTERN),
  hostname: z.string().regex(HOSTNAME),
  argv: z.array(z.string()).min(1),
  env: z.record(z.string(), z.string()),
  cwd: AbsPath,
  rootfs: AbsPath.nullable(),
  netns: NetnsRefSchema,
  /** Bind mounts into the container (host source → path seen inside the container). */
  binds: z.array(z.strictObject({ source: AbsPath, target: ContainerFilePath })),
  tools: z.strictObject(Object.fromEntries(RUNTIME_TOOLS.map((t) => [t, AbsPath])) as Record<RuntimeTool, typeof AbsPath>),
  /** A pseudo-terminal of this size instead of pipes (`-t`). */
  tty: z.strictObject({ cols: z.number().int().min(1).max(65_535), rows: z.number().int().min(1).max(65_535) }).nullable(),
  /** Keep the process's stdin open for attached clients (`-i`). */
  openStdin: z.boolean(),
  /** Start the process only once a client attached (a foreground -i/-t run), or after this long. */
  waitAttach: z.boolean(),
  paths: z.strictObject({
    state: AbsPath, fstab: AbsPath, stdout: AbsPath, stderr: AbsPath, attach: AbsPath,
    /** The daemon's control socket: the supervisor reports the exit there (`{"op":"exited"}`). */
    notify: AbsPath.optional(),
  }),
});
export type ShimSpec = z.infer<typeof ShimSpecSchema>;

export const SHIM_PHASES = ['starting', 'running', 'exited', 'failed'] as const;
export type ShimPhase = (typeof SHIM_PHASES)[number];

/** `state.json`, rewritten atomically by the shim at each phase. */
export const ShimStateSchema = z.strictObject({
  phase: z.enum(SHIM_PHASES),
  shimPid: z.number().int().positive(),
  shimStartTime: z.string(),
  pid: z.number().int().positive().nullable(),
  pidStartTime: z.string().nullable(),
  startedAt: Iso.nullable(),
  finishedAt: Iso.nullable(),
  exitCode: z.number().int().min(0).max(255).nullable(),
  error: z.string().nullable(),
});
export type ShimState = z.infer<typeof ShimStateSchema>;

export function parseShimState(raw: unknown): ShimState {
  const r = ShimStateSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INTERNAL', `shim state: ${z.prettifyError(r.error)}`);
  return r.data;
}
