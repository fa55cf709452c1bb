/**
 * The runtime's contract: the ports it needs (records store, process table, process starter,
 * clock) and the lifecycle it offers (run, exec, list, inspect, logs, stop, remove, wait,
 * reconcile). The composition root (cli/main.ts) wires real implementations; tests wire fakes.
 */
import type { Logger } from '../core/log.js';
import type { AttachConnection, ConnectAttach, Files, InteractiveProcess, ProcessTable, Run, SpawnDetached, SpawnInteractive, TermSize } from '../sys/api.js';

export type { AttachConnection, Files, InteractiveProcess, ProcessTable, TermSize };
import type { ContainerRecord, ContainerSpecInput, RuntimeTools } from './spec.js';

/**
 * Where container records live. Implementations must be safe across processes: `insert` is the
 * one atomic uniqueness check for ids and names.
 */
export interface ContainerStore {
  /** Adds a new record; ALREADY_EXISTS if its id or its name is taken. */
  insert(record: ContainerRecord): Promise<void>;
  /**
   * Replaces the record with the same id, atomically across processes; resolves with the record it
   * replaced (so one writer, not every observer, sees a transition); NOT_FOUND if there is none.
   */
  update(record: ContainerRecord): Promise<ContainerRecord>;
  get(id: string): Promise<ContainerRecord | undefined>;
  /** The record named `name`, found without reading every record. */
  byName(name: string): Promise<ContainerRecord | undefined>;
  /** Every record, or those whose id starts with `idPrefix` (the others are not read). */
  list(idPrefix?: string): Promise<ContainerRecord[]>;
  /** Removes the record; succeeds if it is already gone. */
  delete(id: string): Promise<void>;
  /** Records that could not be read, set aside by `list` and `get` (which then skip them). */
  listSetAside(): Promise<readonly { readonly id: string; readonly path: string }[]>;
  /** The id the name index gives for `name`, whether or not its record reads. */
  nameHolder(name: string): Promise<string | undefined>;
  /** Deletes a set-aside record and frees its name. */
  discardSetAside(id: string): Promise<void>;
}


export interface Clock {
  now(): Date;
  sleep(ms: number): Promise<void>;
}

export interface RuntimeDeps {
  readonly store: ContainerStore;
  readonly procs: ProcessTable;
  /** The run and log directories' files (real: sys/files.ts localFiles). */
  readonly files: Files;
  readonly exec: {
    readonly run: Run;
    readonly spawnDetached: SpawnDetached;
    /** `exec -i`/`-t`, without a time limit (real: sys/pty.ts). */
    readonly interactive?: SpawnInteractive;
    /** A client of a supervisor's attach socket (real: sys/attach.ts). */
    readonly attach?: ConnectAttach;
  };
  readonly clock: Clock;
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
  /** Per-container run directories (spec, state, fstab, files) are created under this one. */
  readonly runDir: string;
  /** Per-container log files (stdout.log, stderr.log); defaults to runDir. */
  readonly logDir?: string;
  /** The shim's command line, without its argument: e.g. [process.execPath, '/…/dist/runtime/shim-main.js']. */
  readonly shim: readonly [string, ...string[]];
  /**
   * The native supervisor (dist/tsnet-supervise, native/supervise.c): used for every container
   * without a terminal or open stdin; absent (no C compiler at build time): the shim for all.
   */
  readonly nativeShim?: string;
  /** The daemon's control socket, where supervisors report exits (the daemon then releases the network). */
  readonly daemonSocket?: string;
  readonly tools: RuntimeTools;
  /** Called by `remove` before the record is deleted, e.g. to delete the container's network endpoints and namespace. */
  readonly onRemove?: (record: ContainerRecord) => Promise<void>;
  /**
   * Called once the runtime sees the container exited (stopped, killed, or ended by itself), by
   * whichever process sees it first: e.g. to release its addresses, host ports and names, as Docker
   * does at stop. Failures are logged.
   */
  readonly onExit?: (record: ContainerRecord) => Promise<void>;
  /** Every lifecycle event (create, start, kill, die, stop, destroy, exec_start), after it happened. */
  readonly onEvent?: (e: ContainerEvent) => void;
  /** The init run as PID 1 with `--init` (a static tini); undefined: `--init` is UNAVAILABLE. */
  readonly initPath?: string;
  /** This process's pid: a foreground `run` records it as the container's client. */
  readonly selfPid?: number;
  /** How long `run` waits for the process to start (default 10 s). */
  readonly startTimeoutMs?: number;
  /** How often waits poll the run directory and /proc (default 20 ms). */
  readonly pollMs?: number;
}

export interface ContainerEvent {
  readonly action: 'create' | 'start' | 'kill' | 'die' | 'stop' | 'destroy' | 'exec_start' | 'restart';
  readonly container: ContainerRecord;
  readonly attributes?: Readonly<Record<string, string>>;
}

export interface OutputChunk {
  readonly stream: 'stdout' | 'stderr';
  readonly data: Buffer;
}

export interface RunOptions {
  /** Return as soon as the process runs (default); otherwise stream its output and wait for its exit. */
  readonly detach?: boolean;
  /** Foreground only: receives output as it is written. */
  readonly onOutput?: (chunk: OutputChunk) => void;
  /**
   * Foreground with `openStdin` or `tty`: called with the connection to the container's supervisor
   * before the process starts (the caller feeds stdin and resizes through it); output then arrives
   * through `onOutput`.
   */
  readonly onAttach?: (conn: AttachConnection) => void;
  /** With `tty`: the terminal's size at start. */
  readonly ttySize?: TermSize;
  /** Foreground: the client the container belongs to, when it is not this process (a daemon serving it). */
  readonly client?: { readonly pid: number; readonly startTime: string };
  /** Foreground: stops following the container (its client is gone); `run` then resolves without waiting for the exit. */
  readonly signal?: AbortSignal;
}

export type RunOutcome =
  | { readonly detached: true; readonly container: ContainerRecord }
  | { readonly detached: false; readonly container: ContainerRecord; readonly exitCode: number | null };

export interface ExecOptions {
  /** Added to (and overriding) the container's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Working directory inside the container (default: that of the container's process). */
  readonly cwd?: string;
  /** `-u`: NAME, UID, NAME:GROUP or UID:GID, resolved in the container's /etc/passwd and /etc/group. */
  readonly user?: string;
  readonly input?: string | Buffer;
  /** Default: no limit. */
  readonly timeoutMs?: number;
}

export interface InteractiveExecOptions extends Omit<ExecOptions, 'input' | 'timeoutMs'> {
  /** A pseudo-terminal of this size (`-t`). */
  readonly tty?: TermSize;
  /** `-i`: stdin stays open. */
  readonly stdin: boolean;
}

export interface ExecResult {
  /** 128+n when killed by signal n. */
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface StopOptions {
  readonly timeoutSec?: number;
  readonly signal?: NodeJS.Signals;
}

export interface LogsOptions {
  readonly follow?: boolean;
  readonly signal?: AbortSignal;
}

export interface Runtime {
  /**
   * Creates and starts a container. The record (status `created`) is written before the process
   * starts, so an interrupted `run` never leaves a container that no record describes.
   */
  run(spec: ContainerSpecInput, opts?: RunOptions): Promise<RunOutcome>;
  /** Runs argv inside the running container (all its namespaces and root) and collects its output. */
  exec(ref: string, argv: readonly [string, ...string[]], opts?: ExecOptions): Promise<ExecResult>;
  /** The command line `exec` runs, for callers that stream stdio themselves. */
  execArgv(ref: string, argv: readonly [string, ...string[]], opts?: Omit<ExecOptions, 'input' | 'timeoutMs'>): Promise<readonly [string, ...string[]]>;
  /** `exec -i`/`-t`: the process, for the caller to stream; no time limit. */
  execInteractive(ref: string, argv: readonly [string, ...string[]], opts: InteractiveExecOptions): Promise<InteractiveProcess>;
  /** `exec -d`: starts argv in the container and returns its host pid. */
  execDetached(ref: string, argv: readonly [string, ...string[]], opts?: Omit<ExecOptions, 'input' | 'timeoutMs'>): Promise<number>;
  /** Starts an exited or created container again (its network must be ready: same namespace path). */
  start(ref: string): Promise<ContainerRecord>;
  /** Sends a signal to the container's PID 1; UNAVAILABLE if it is not running. */
  kill(ref: string, signal?: NodeJS.Signals): Promise<ContainerRecord>;
  /** Every container, with its status refreshed. */
  list(): Promise<ContainerRecord[]>;
  /** By id, name or unique id prefix; NOT_FOUND otherwise. */
  inspect(ref: string): Promise<ContainerRecord>;
  logs(ref: string, opts?: LogsOptions): AsyncIterable<OutputChunk>;
  /** Waits for the container to exit; resolves with its exit code. */
  wait(ref: string, opts?: { readonly signal?: AbortSignal }): Promise<number | null>;
  /** Signal, then SIGKILL after the timeout. Idempotent: an exited container is returned as is. */
  stop(ref: string, opts?: StopOptions): Promise<ContainerRecord>;
  /** UNAVAILABLE for a running container unless `force`; resolves undefined if there is no such container. */
  remove(ref: string, opts?: { readonly force?: boolean }): Promise<ContainerRecord | undefined>;
  /** After a restart: refreshes every record from /proc and the run directories; removes exited `autoRemove` containers. */
  reconcile(): Promise<ContainerRecord[]>;
  /**
   * Removes one container that nobody else will (an exited `--rm` container, or a foreground `--rm`
   * one whose client is gone); true if it did. The per-object part of `reconcile`.
   */
  collect(ref: string): Promise<boolean>;
  /**
   * What is left of a container whose record could not be read (set aside by the store): `ref` is
   * its id, an id prefix or its name (the name index still knows it). Kills its supervisor and
   * process (found through its state file, checked against their start times), removes its run and
   * log directories and the set-aside record. Resolves with its id, or undefined when no set-aside
   * record matches.
   */
  purge(ref: string): Promise<string | undefined>;
  /** Records set aside because they could not be read (`ps` and `doctor` report them). */
  unreadable(): Promise<readonly { readonly id: string; readonly path: string }[]>;
}
