/**
 * The command lines the shim runs, computed from its spec. Pure, so every argv is unit-tested.
 *
 * How a container starts (no shell anywhere; Node cannot setns(2), so util-linux does it):
 *  1. waiter: `unshare --uts --ipc --mount -- cat` holds fresh UTS, IPC and mount namespaces while
 *     they are prepared (it echoes a line once it runs, then exits when its stdin closes);
 *  2. `nsenter --target W --uts -- hostname NAME`;
 *  3. `nsenter --target W --mount -- mount --all --fstab FSTAB` binds /etc/hosts, /etc/resolv.conf
 *     (and /dev for a rootfs) in the waiter's mount namespace, never in the host's;
 *  4. the container: `env -i ENV nsenter --target W --mount --uts --ipc [--net=NETNS] -- unshare
 *     --pid --fork --mount-proc --kill-child [--root=ROOTFS] --wd=CWD -- ARGV`. unshare's child is
 *     PID 1 of a new PID namespace; it mounts /proc for it, chroots, and execs ARGV.
 */
import type { ShimSpec } from './spec.js';

export type Argv = readonly [string, ...string[]];

/** fstab(5) escapes (util-linux unmangles \040 \011 \012 \134). */
export function fstabEscape(path: string): string {
  return path.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/** Path of `target` (a container path) as seen from the host, before the chroot. */
export function hostViewOf(spec: Pick<ShimSpec, 'rootfs'>, target: string): string {
  return spec.rootfs === null ? target : `${spec.rootfs.replace(/\/+$/, '')}${target}`;
}

export interface MountPoint {
  /** Host path that must exist before mounting (inside the rootfs). */
  readonly path: string;
  readonly kind: 'dir' | 'file';
}

/** Mount points a rootfs needs: /proc (for --mount-proc), /dev and each bind target. Host-tree containers need none. */
export function rootfsMountPoints(spec: ShimSpec): MountPoint[] {
  if (spec.rootfs === null) return [];
  return [
    { path: hostViewOf(spec, '/proc'), kind: 'dir' },
    { path: hostViewOf(spec, '/dev'), kind: 'dir' },
    ...spec.binds.map((b): MountPoint => ({ path: hostViewOf(spec, b.target), kind: 'file' })),
  ];
}

/** The fstab mounted in the waiter's mount namespace; empty when there is nothing to mount. */
export function fstabText(spec: ShimSpec): string {
  const lines: string[] = [];
  if (spec.rootfs !== null) lines.push(`/dev ${fstabEscape(hostViewOf(spec, '/dev'))} none bind 0 0`);
  for (const b of spec.binds) lines.push(`${fstabEscape(b.source)} ${fstabEscape(hostViewOf(spec, b.target))} none bind 0 0`);
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

export function waiterArgv(spec: ShimSpec): Argv {
  return [spec.tools.unshare, '--uts', '--ipc', '--mount', '--propagation', 'private', '--', spec.tools.cat];
}

export function hostnameArgv(spec: ShimSpec, waiterPid: number): Argv {
  return [spec.tools.nsenter, '--target', String(waiterPid), '--uts', '--', spec.tools.hostname, spec.hostname];
}

export function mountArgv(spec: ShimSpec, waiterPid: number): Argv | undefined {
  if (fstabText(spec) === '') return undefined;
  return [spec.tools.nsenter, '--target', String(waiterPid), '--mount', '--', spec.tools.mount, '--all', '--fstab', spec.paths.fstab];
}

export function containerArgv(spec: ShimSpec, waiterPid: number): Argv {
  const env = Object.entries(spec.env).map(([k, v]) => `${k}=${v}`);
  return [
    spec.tools.env, '-i', '--', ...env,
    spec.tools.nsenter, '--target', String(waiterPid), '--mount', '--uts', '--ipc',
    ...(spec.netns.kind === 'path' ? [`--net=${spec.netns.path}`] : []),
    '--',
    spec.tools.unshare, '--pid', '--fork', '--mount-proc', '--kill-child',
    ...(spec.rootfs !== null ? [`--root=${spec.rootfs}`] : []),
    `--wd=${spec.cwd}`,
    '--',
    ...(spec.tty !== null ? TTY_SESSION : []),
    ...spec.argv,
  ];
}

/**
 * On a terminal the command must lead a session of its own inside the container's PID namespace
 * with the pty as controlling terminal: a shell sets the terminal's foreground process group, and
 * the group it inherited lives in the host's PID namespace (ESRCH). `setsid -c` (util-linux and
 * busybox alike, found on the container's PATH) does both before it execs the command.
 */
export const TTY_SESSION = ['setsid', '-c'] as const;

/**
 * util-linux 2.38 `unshare --fork` cannot re-raise SIGKILL on itself when its child dies of it:
 * it prints this on the child's stderr and exits 1. The shim recognises it (and removes the line
 * from the log) to report 137, as newer versions do by dying of SIGKILL themselves.
 */
export const UNSHARE_SIGKILL_MESSAGE = 'unshare: sigprocmask unblock failed: Invalid argument\n';

/**
 * When the container exits before its PID 1 was seen, a first stderr line from the tools
 * themselves means the namespaces or the chroot could not be set up (not that the command
 * failed): the shim reports that as a failed start. "failed to execute" is the command's own
 * fault (not found: 127, not executable: 126) and stays an exit code, as in Docker.
 */
export function setupFailure(stderrHead: string): string | undefined {
  const first = stderrHead.split('\n')[0] ?? '';
  if (!/^(nsenter|unshare|env): /.test(first) || /^unshare: failed to execute /.test(first)) return undefined;
  return first;
}

/** 128+n for a signal, Docker's convention. */
export function exitCodeOf(code: number | null, signalNumber: number | undefined): number {
  if (code !== null) return code;
  return 128 + (signalNumber ?? 0);
}

/**
 * spec.nul for the native supervisor (native/supervise.c), from the same validated spec: NUL-ended
 * strings, the magic line, then KEY VALUE pairs. It does what the argv above do, with system calls
 * instead of helper processes. Only for containers without a terminal or open stdin.
 */
export function nativeSpec(spec: ShimSpec): string {
  if (spec.tty !== null || spec.openStdin) throw new Error('the native supervisor has no terminal and no open stdin');
  const out: string[] = ['tsnet-supervise 1', 'id', spec.id, 'hostname', spec.hostname, 'cwd', spec.cwd];
  if (spec.rootfs !== null) out.push('rootfs', spec.rootfs);
  if (spec.netns.kind === 'path') out.push('netns', spec.netns.path);
  out.push('state', spec.paths.state, 'stdout', spec.paths.stdout, 'stderr', spec.paths.stderr);
  if (spec.paths.notify !== undefined) out.push('notify', spec.paths.notify);
  for (const b of spec.binds) out.push('bind', b.source, b.target);
  for (const [k, v] of Object.entries(spec.env)) out.push('env', `${k}=${v}`);
  for (const a of spec.argv) out.push('arg', a);
  return `${out.join('\0')}\0`;
}
