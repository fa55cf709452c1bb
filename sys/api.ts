/**
 * The types of sys/'s top-level ports (processes, network namespaces, host ports, traffic shaping):
 * what the other layers import (`import type`), apart from the modules that implement them.
 */
import type { IfName, IpAddr, NetnsRef, Port, Proto } from '../core/net.js';

// exec

export type Argv = readonly [string, ...string[]];

export interface RunOptions {
  /** Written to the child's stdin, which is then closed. */
  readonly input?: string | Buffer;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Extra environment on top of the fixed PATH and LC_ALL=C. */
  readonly env?: Readonly<Record<string, string>>;
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

export type ExecFailureDetails = {
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderr: string;
  readonly stdout: string;
};

/** sys/exec.ts `run`: argv to completion; rejects with a TsnetError carrying ExecFailureDetails. */
export type Run = (argv: Argv, opts?: RunOptions) => Promise<RunResult>;

export interface SpawnDetachedOptions {
  readonly env?: Readonly<Record<string, string>>;
  readonly stdio?: readonly ['ignore' | number, 'ignore' | number, 'ignore' | number];
}
/** sys/exec.ts `spawnDetached`: a detached background process; returns its pid. */
export type SpawnDetached = (argv: Argv, opts?: SpawnDetachedOptions) => number;

// netns

export interface NetnsManager {
  readonly dir: string;
  /**
   * Creates a namespace named `name`; ALREADY_EXISTS if one is there. `sysctls` (net.* keys) are
   * set inside it by the same process that creates it (no extra process start).
   */
  create(name: string, opts?: { readonly signal?: AbortSignal; readonly sysctls?: Readonly<Record<string, string | number>> }): Promise<NetnsRef>;
  /** The namespace `name`; NOT_FOUND if it does not exist. */
  open(name: string): Promise<NetnsRef>;
  /** Names of the namespaces in the directory that are live (mounted). */
  list(): Promise<string[]>;
  /** Removes `name`; succeeds if it is already gone. */
  remove(name: string, opts?: { readonly signal?: AbortSignal }): Promise<void>;
  pathOf(name: string): string;
}

// host-ports

export interface PortRange {
  readonly start: Port;
  readonly end: Port;
}

/** A socket a host process listens on (TCP, SCTP) or has bound (UDP). `*`: every address, both families. */
export interface Listener {
  readonly proto: Proto;
  readonly ip: IpAddr | '*';
  readonly port: Port;
}

export interface HostPorts {
  listeners(): Promise<Listener[]>;
  ephemeralRange(): Promise<PortRange>;
}

// tc

export interface Shape {
  /** Bits per second. */
  readonly rate: number;
  /** Bits. */
  readonly burst: number;
}

/**
 * Impairments of what leaves an interface (a link end): `rate` by a token bucket (tbf), delay,
 * jitter and loss by netem (sch_netem, which not every kernel has). Nothing set: no qdisc of ours.
 */
export interface Impairment {
  /** Bits per second. */
  readonly rate?: number | undefined;
  /** Microseconds. */
  readonly delayUs?: number | undefined;
  /** Microseconds; only with a delay. */
  readonly jitterUs?: number | undefined;
  /** Percent of packets dropped, 0 to 100. */
  readonly lossPct?: number | undefined;
}

export interface Tc {
  readonly ns: NetnsRef;
  /** Replaces the root qdisc of `dev` with a token bucket at `rate`. */
  shape(dev: IfName, s: Shape): Promise<void>;
  /**
   * Makes `dev`'s root qdisc what `imp` says (tbf, netem, or netem with a tbf child); an empty
   * impairment removes the root qdisc (succeeds if there is none). NOT_FOUND if `dev` is missing,
   * UNAVAILABLE if the kernel lacks netem.
   */
  impair(dev: IfName, imp: Impairment): Promise<void>;
}

export type TcFor = (ns: NetnsRef) => Tc;

// daemon

/** A service hosted by the tsnet daemon (sys/daemon.ts): DNS, firewall watcher, CNI... */
/**
 * What changed in the records, as a writer tells the daemon: the ids of the endpoints and sandboxes
 * it created, changed or removed, and whether network records changed. A service re-reads only
 * those (O(1) per container); a reload without changes re-reads everything.
 */
export interface RecordChanges {
  readonly networks?: boolean;
  readonly endpoints?: readonly string[];
  readonly sandboxes?: readonly string[];
}

export interface DaemonService {
  readonly name: string;
  start(): Promise<void>;
  /** Re-reads the records (only `changes`, when given); must not interrupt what the service is serving. */
  reload(changes?: RecordChanges): Promise<void>;
  stop(): Promise<void>;
  status(): Record<string, unknown>;
}

// files

/** The file operations a layer outside sys/ gets injected (real: sys/files.ts `localFiles`). */
export interface Files {
  /** A file's text; undefined when it does not exist. */
  readText(path: string): Promise<string | undefined>;
  /** 'file', 'dir', 'socket', 'other', or undefined when nothing is there. */
  kind(path: string): Promise<'file' | 'dir' | 'socket' | 'other' | undefined>;
  makeDir(path: string, mode?: number): Promise<void>;
  /** Writes in place (creating the parent directory). */
  write(path: string, content: string, mode?: number): Promise<void>;
  /** Up to `length` bytes from `offset`; empty when the file does not exist or ends there. */
  readChunk(path: string, offset: number, length: number): Promise<Buffer>;
  /** Removes a file or a tree; succeeds if it is gone. */
  remove(path: string): Promise<void>;
}

// processes

/** The host's process table (real: sys/procs.ts over /proc and kill(2)). */
export interface ProcessTable {
  /** Start time (field 22 of /proc/PID/stat) of a live, non-zombie process; undefined if there is none. */
  startTime(pid: number): Promise<string | undefined>;
  /** Sends `signal` to the process (or to its whole process group); false if there is no such process. */
  kill(pid: number, signal: NodeJS.Signals, opts?: { readonly group?: boolean }): Promise<boolean>;
  /** Identifies the current boot, so that pids recorded before a reboot are never trusted. */
  bootId(): Promise<string>;
}

// attach (sys/attach.ts): a client of a container supervisor's attach socket

export interface AttachConnection {
  /** The container's output as the supervisor forwards it (one stream under a tty). */
  onOutput(f: (stream: 'stdout' | 'stderr', data: Buffer) => void): void;
  write(data: Buffer | string): void;
  /** Closes the container's stdin. */
  endInput(): void;
  resize(cols: number, rows: number): void;
  /** Resolves when the supervisor closed the connection (the container exited) or it broke. */
  readonly closed: Promise<void>;
  close(): void;
}
export type ConnectAttach = (path: string) => Promise<AttachConnection>;

// interactive processes (sys/pty.ts): `exec -i`, `exec -t`

export interface TermSize {
  readonly cols: number;
  readonly rows: number;
}

export interface InteractiveOptions {
  /** A pseudo-terminal of this size (stdout and stderr are then one stream); else pipes. */
  readonly tty?: TermSize;
  /** Keep stdin open for `write`; else the process reads /dev/null. */
  readonly stdin: boolean;
}

export interface InteractiveProcess {
  readonly pid: number;
  onOutput(f: (stream: 'stdout' | 'stderr', data: Buffer) => void): void;
  write(data: Buffer | string): void;
  endInput(): void;
  /** Resizes the terminal (no-op without one). */
  resize(cols: number, rows: number): void;
  kill(signal: NodeJS.Signals): void;
  /** Exit code, or the signal that ended it. No time limit. */
  readonly exited: Promise<{ readonly code: number | null; readonly signal: string | null }>;
}
export type SpawnInteractive = (argv: Argv, opts: InteractiveOptions) => Promise<InteractiveProcess>;

// event log (sys/event-log.ts)

export interface EventLog {
  /** Appends one line (JSON text, no newline). */
  append(line: string): Promise<void>;
  /**
   * Every stored line, oldest first (both generations); with `follow`, then every line appended
   * later, until it aborts.
   */
  read(onLine: (line: string) => void, follow?: AbortSignal): Promise<void>;
}

// local servers (sys/unix-socket.ts)

export interface UnixServer {
  readonly path: string;
  close(): Promise<void>;
}

/** One client of a framed server (`listenFramed`): frames in both directions (sys/attach.ts's 8-byte header). */
export interface FramedConnection {
  /** Sends one frame; false if the client is gone. */
  send(type: number, payload?: Buffer): boolean;
  /** Sends what is queued, then closes. */
  end(): void;
  /** Each complete frame from the client. */
  onFrame(f: (type: number, payload: Buffer) => void): void;
  /** Once, when the client hung up or the connection failed. */
  onClose(f: () => void): void;
}
