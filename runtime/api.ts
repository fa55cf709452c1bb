/**
 * The runtime's contract: the ports it needs (records store, process table, process starter,
 * clock) and the lifecycle it offers (run, exec, list, inspect, logs, stop, remove, wait,
 * reconcile). The composition root (cli/main.ts) wires real implementations; tests wire fakes.
 */
import type { Logger } from '../core/log.js';
import type { run, spawnDetached } from '../sys/exec.js';
import type { ContainerRecord, ContainerSpecInput, RuntimeTools } from './spec.js';

/**
 * Where container records live. Implementations must be safe across processes: `insert` is the
 * one atomic uniqueness check for ids and names.
 */
export interface ContainerStore {
  /** Adds a new record; ALREADY_EXISTS if its id or its name is taken. */
  insert(record: ContainerRecord): Promise<void>;
  /** Replaces the record with the same id; NOT_FOUND if there is none. */
  update(record: ContainerRecord): Promise<void>;
  get(id: string): Promise<ContainerRecord | undefined>;
  list(): Promise<ContainerRecord[]>;
  /** Removes the record; succeeds if it is already gone. */
  delete(id: string): Promise<void>;
}

/** The host's process table (real: /proc and kill(2), see runtime/host.ts). */
export interface ProcessTable {
  /** Start time (field 22 of /proc/PID/stat) of a live, non-zombie process; undefined if there is none. */
  startTime(pid: number): Promise<string | undefined>;
  /** Sends `signal` to the process (or to its whole process group); false if there is no such process. */
  kill(pid: number, signal: NodeJS.Signals, opts?: { readonly group?: boolean }): Promise<boolean>;
  /** Identifies the current boot, so that pids recorded before a reboot are never trusted. */
  bootId(): Promise<string>;
}

export interface Clock {
  now(): Date;
  sleep(ms: number): Promise<void>;
}

export interface RuntimeDeps {
  readonly store: ContainerStore;
  readonly procs: ProcessTable;
  readonly exec: { readonly run: typeof run; readonly spawnDetached: typeof spawnDetached };
  readonly clock: Clock;
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
  /** Per-container run directories (spec, state, fstab, files) are created under this one. */
  readonly runDir: string;
  /** Per-container log files (stdout.log, stderr.log); defaults to runDir. */
  readonly logDir?: string;
  /** The shim's command line, without its argument: e.g. [process.execPath, '/…/dist/runtime/shim-main.js']. */
  readonly shim: readonly [string, ...string[]];
  readonly tools: RuntimeTools;
  /** Called by `remove` before the record is deleted, e.g. to delete the container's network endpoints and namespace. */
  readonly onRemove?: (record: ContainerRecord) => Promise<void>;
  /** How long `run` waits for the process to start (default 10 s). */
  readonly startTimeoutMs?: number;
  /** How often waits poll the run directory and /proc (default 20 ms). */
  readonly pollMs?: number;
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
}

export type RunOutcome =
  | { readonly detached: true; readonly container: ContainerRecord }
  | { readonly detached: false; readonly container: ContainerRecord; readonly exitCode: number | null };

export interface ExecOptions {
  /** Added to (and overriding) the container's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Working directory inside the container (default: that of the container's process). */
  readonly cwd?: string;
  readonly input?: string | Buffer;
  readonly timeoutMs?: number;
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
}
