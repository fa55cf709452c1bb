/**
 * Named network namespaces under tsnet's run directory, kept alive by bind-mounted files (the
 * `ip netns` scheme, but in our own directory), and references to a process's namespace.
 * Creation and deletion each cost one short-lived process (`unshare --net=FILE`, `umount`).
 */
import { mkdir, readdir, readFile, readlink, rm, statfs, writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError, wrap } from '../core/errors.js';
import type { NetnsRef } from '../core/net.js';
import { execDetails, run } from './exec.js';
import type { NetnsManager } from './api.js';
import { abstractSocketLock, createLocker, type Locker } from './store/lock.js';

export type { NetnsManager };

/** statfs(2) f_type of nsfs, the filesystem of /proc/PID/ns/* and their bind mounts. */
const NSFS_MAGIC = 0x6e736673;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;


export function parseNetnsName(raw: string, field = 'netns name'): string {
  if (typeof raw !== 'string' || !NAME.test(raw)) {
    throw new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: must be 1-128 letters, digits, '_', '.', '-'`, { details: { field, value: raw } });
  }
  return raw;
}

/** Is `path` a live network namespace file (nsfs)? */
export async function isNetnsFile(path: string): Promise<boolean> {
  try {
    const s = await statfs(path);
    return Number(s.type) === NSFS_MAGIC;
  } catch {
    return false;
  }
}

/** Checks that a namespace reference points at a live namespace; NOT_FOUND names the path. */
export async function checkNetns(ns: NetnsRef, field = 'netns'): Promise<NetnsRef> {
  if (ns.kind === 'host') return ns;
  if (!(await isNetnsFile(ns.path))) {
    const exists = await stat(ns.path).then(() => true, () => false);
    throw new TsnetError('NOT_FOUND', `${field}: ${ns.path} ${exists ? 'is not a network namespace' : 'does not exist'}`, { details: { field, value: ns.path } });
  }
  return ns;
}

/** Which PID, network and mount namespaces this process is in ("net:[4026531840]", as readlink(2) shows them). */
export async function ownNamespaces(): Promise<{ readonly pid: string; readonly net: string; readonly mnt: string }> {
  const [pid, net, mnt] = await Promise.all(['pid', 'net', 'mnt'].map((k) => readlink(`/proc/self/ns/${k}`)));
  return { pid: pid ?? '', net: net ?? '', mnt: mnt ?? '' };
}

/** Is this process itself in the network namespace `ns` (same nsfs inode)? */
export async function inOwnNetns(ns: NetnsRef): Promise<boolean> {
  if (ns.kind === 'host') return true;
  const [mine, theirs] = await Promise.all([stat('/proc/self/ns/net'), stat(ns.path)]);
  return mine.dev === theirs.dev && mine.ino === theirs.ino;
}

/** The network namespace of process `pid`. */
export async function netnsOfPid(pid: number): Promise<NetnsRef> {
  if (!Number.isInteger(pid) || pid <= 0) throw new TsnetError('INVALID_CONFIG', `pid: invalid value ${pid}`, { details: { field: 'pid', value: pid } });
  return checkNetns({ kind: 'path', path: `/proc/${pid}/ns/net` }, 'pid');
}

export function createNetnsManager(dir: string): NetnsManager {
  let shared: Promise<void> | undefined;
  let bindLocker: Locker | undefined;
  const pathOf = (name: string): string => join(dir, parseNetnsName(name));

  // Like `ip netns`: the directory is a shared bind mount of itself, so that unmounting a
  // namespace file here also unmounts the copies in mount namespaces cloned from this one.
  const ensureDir = (): Promise<void> => {
    shared ??= (async () => {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
      // Already a shared mount (every command after the first): nothing to do, no process spawned.
      const line = mountinfo.split('\n').find((l) => l.split(' ')[4] === dir);
      if (line !== undefined && /(^| )shared:\d+/.test(line.split(' - ')[0] ?? '')) return;
      // The first time, processes racing here (50 parallel `tsnet run`) would each see no mount and
      // stack their own bind mounts: the check is made again, and the mount done, under the store's
      // cross-process lock (kernel-released if the holder dies), so the directory is bound once.
      bindLocker ??= createLocker({ crossProcess: abstractSocketLock(`netns-dir:${dir}`), label: dir });
      await bindLocker.withLock('netns-dir', async () => {
        const now = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').some((l) => l.split(' ')[4] === dir);
        if (!now) await run(['mount', '--bind', dir, dir]);
        await run(['mount', '--make-shared', dir]);
      });
    })().catch((err: unknown) => {
      shared = undefined;
      throw wrap(`prepare netns directory ${dir}`, err);
    });
    return shared;
  };

  const mgr: NetnsManager = {
    dir,
    pathOf,
    async create(name, opts = {}) {
      const path = pathOf(name);
      const sysctls = Object.entries(opts.sysctls ?? {}).map(([k, v]) => {
        if (!/^net\.[A-Za-z0-9_./-]+$/.test(k) || !/^[A-Za-z0-9_.:-]+$/.test(String(v))) {
          throw new TsnetError('INVALID_CONFIG', `sysctl ${k}=${String(v)}: not a net.* key with a plain value`, { details: { field: 'sysctl' } });
        }
        return `${k}=${String(v)}`;
      });
      await ensureDir();
      try {
        await writeFile(path, '', { flag: 'wx', mode: 0o444 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new TsnetError('ALREADY_EXISTS', `netns ${name} already exists (${path})`, { details: { field: 'netns name', value: name } });
        }
        throw wrap(`create netns ${name}`, err);
      }
      try {
        await run(['unshare', `--net=${path}`, ...(sysctls.length > 0 ? ['sysctl', '-q', '-w', ...sysctls] : ['true'])], opts.signal ? { signal: opts.signal } : {});
      } catch (err) {
        // The namespace may be mounted already (the sysctl step failed after it): undo fully.
        await mgr.remove(name).catch(() => rm(path, { force: true }));
        throw wrap(`create netns ${name}`, err);
      }
      return { kind: 'path', path };
    },
    async open(name) {
      const path = pathOf(name);
      if (!(await isNetnsFile(path))) throw new TsnetError('NOT_FOUND', `netns ${name} does not exist (${path})`, { details: { field: 'netns name', value: name } });
      return { kind: 'path', path };
    },
    async list() {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw wrap(`list netns in ${dir}`, err);
      }
      const live = await Promise.all(names.map(async (n) => ((await isNetnsFile(join(dir, n))) ? n : undefined)));
      return live.filter((n): n is string => n !== undefined).sort();
    },
    async remove(name, opts = {}) {
      const path = pathOf(name);
      if (await isNetnsFile(path)) {
        try {
          await run(['umount', '--lazy', path], opts.signal ? { signal: opts.signal } : {});
        } catch (err) {
          // Raced with another remover: fine if it is no longer mounted.
          if (await isNetnsFile(path)) throw wrap(`remove netns ${name}`, new TsnetError('INTERNAL', execDetails(err)?.stderr.trim() || String(err)));
        }
      }
      await rm(path, { force: true });
    },
  };
  return mgr;
}

/** Is a process with this pid alive (kill(pid, 0); EPERM means it exists)? */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
