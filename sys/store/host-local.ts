/**
 * The on-disk IP reservation store of the reference `host-local` IPAM plugin, byte for byte, so a
 * node can switch between tsnet's IPAM and host-local without losing reservations:
 * - directory `<dataDir>/<network name>/` (mode 0755), dataDir default /var/lib/cni/networks;
 * - one file per reserved address, named by the address (Go's net.IP.String(): dotted quad, RFC
 *   5952 for IPv6), created O_CREAT|O_EXCL mode 0644, content `<containerID>\r\n<ifname>` (files
 *   of old host-local versions hold the container id only; lookups accept both);
 * - `last_reserved_ip.<rangeIndex>`: the last address handed out from range set N;
 * - a `lock` file, which host-local flock(2)s around every operation.
 *
 * Locking: the reservation itself is the O_EXCL creation of the address's file (atomic in the
 * kernel), so allocation and release need no lock to be correct. For walks that remove other
 * owners' files (GC), tsnet processes exclude each other with the kernel-released abstract-socket
 * lock of sys/store/lock.ts (0.2 ms) keyed by the directory, NOT with flock(2) on `lock` (Node has no
 * flock without a native addon; flock(1) as a holder child costs 4-8 ms per acquisition). So a
 * tsnet process and a host-local process running at the same moment on the same directory do not
 * exclude each other. They still never hand out one address twice: both reserve by O_EXCL
 * creation, which the kernel makes atomic. What may race is only the round-robin hint
 * (last_reserved_ip) and a walk-based release seeing a file being created.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError, fsError } from '../../core/errors.js';
import { abstractSocketLock, createLocker } from './lock.js';
import type { HostLocalReservation, HostLocalStore } from './api.js';

export type { HostLocalReservation, HostLocalStore };

export const HOST_LOCAL_DATA_DIR = '/var/lib/cni/networks';
const LAST_IP_PREFIX = 'last_reserved_ip.';
const LINE_BREAK = '\r\n';
/** Temp files: `.NAME.tmp-PID-RANDOM` (a reservation or a hint being written). */
const TEMP = /^\.(.+)\.tmp-(\d+)-[0-9a-f]+$/;
const tempName = (final: string): string => `.${final}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;

function parseContent(ip: string, text: string): HostLocalReservation {
  const t = text.trim();
  const i = t.indexOf(LINE_BREAK);
  return i < 0 ? { ip, containerId: t, ifName: undefined } : { ip, containerId: t.slice(0, i), ifName: t.slice(i + LINE_BREAK.length) };
}

const IP_FILE = /^[0-9a-fA-F.:]+$/;
const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** Writes `text` to a temp file in `dir` and returns its path (removed again on failure). */
async function writeTemp(dir: string, final: string, text: string): Promise<string> {
  const tmp = join(dir, tempName(final));
  try {
    await writeFile(tmp, text, { mode: 0o644, flag: 'wx' });
    return tmp;
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

export async function openHostLocalStore(opts: { readonly dataDir?: string; readonly network: string; readonly lockTimeoutMs?: number }): Promise<HostLocalStore> {
  const dir = join(opts.dataDir ?? HOST_LOCAL_DATA_DIR, opts.network);
  // One stat when the directory exists (every ADD but a network's first); host-local creates the
  // directory and its `lock` file on open, and so do we when they are missing.
  const st = await stat(dir).catch((err: unknown) => (errnoOf(err) === 'ENOENT' ? undefined : Promise.reject(fsError(`ipam dataDir ${dir}`, err, 'dataDir'))));
  if (st !== undefined && !st.isDirectory()) throw new TsnetError('INVALID_CONFIG', `ipam dataDir ${dir}: not a directory`, { details: { field: 'dataDir' } });
  if (st === undefined) {
    try {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      await (await open(join(dir, 'lock'), 'a', 0o644)).close();
    } catch (err) {
      throw fsError(`ipam dataDir ${dir}`, err, 'dataDir');
    }
  }
  let locker: ReturnType<typeof createLocker> | undefined;
  const lockerFor = async (): Promise<ReturnType<typeof createLocker>> => {
    locker ??= createLocker({ crossProcess: abstractSocketLock(`host-local:${await realpath(dir)}`), label: dir, ...(opts.lockTimeoutMs === undefined ? {} : { defaultTimeoutMs: opts.lockTimeoutMs }) });
    return locker;
  };

  const get = async (ip: string): Promise<HostLocalReservation | undefined> => {
    try {
      return parseContent(ip, await readFile(join(dir, ip), 'utf8'));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw fsError(`ipam: read ${join(dir, ip)}`, err);
    }
  };

  return {
    dir,
    withLock: async (fn) => (await lockerFor()).withLock('ipam', fn),
    async reserve(ip, containerId, ifName) {
      // link(2) is the exclusive create (EEXIST: taken) of a file that already has its content.
      let tmp: string;
      try {
        tmp = await writeTemp(dir, ip, `${containerId.trim()}${LINE_BREAK}${ifName}`);
      } catch (err) {
        throw fsError(`ipam: reserve ${ip} in ${dir}`, err, 'dataDir');
      }
      try {
        await link(tmp, join(dir, ip));
        return true;
      } catch (err) {
        if (errnoOf(err) === 'EEXIST') return false;
        throw fsError(`ipam: reserve ${ip} in ${dir}`, err, 'dataDir');
      } finally {
        await unlink(tmp).catch(() => undefined);
      }
    },
    async lastReserved(rangeId) {
      try {
        return (await readFile(join(dir, `${LAST_IP_PREFIX}${rangeId}`), 'utf8')).trim();
      } catch {
        return undefined;
      }
    },
    async setLastReserved(rangeId, ip) {
      // Replaced atomically: a concurrent reader sees the old or the new hint, never a torn one.
      const final = `${LAST_IP_PREFIX}${rangeId}`;
      try {
        const tmp = await writeTemp(dir, final, ip);
        await rename(tmp, join(dir, final)).catch(async (err: unknown) => {
          await unlink(tmp).catch(() => undefined);
          throw err;
        });
      } catch {
        // best effort: the next allocation starts from an older hint
      }
    },
    get,
    async release(ip) {
      await unlink(join(dir, ip)).catch((err: unknown) => {
        if (errnoOf(err) !== 'ENOENT') throw fsError(`ipam: release ${ip} in ${dir}`, err);
      });
    },
    async list() {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        throw fsError(`ipam: list ${dir}`, err, 'dataDir');
      }
      const ips = names.filter((n) => n !== 'lock' && !n.startsWith(LAST_IP_PREFIX) && IP_FILE.test(n));
      const out = await Promise.all(ips.map((n) => get(n)));
      return out.filter((r): r is HostLocalReservation => r !== undefined);
    },
    async removeStaleTemps(isAlive) {
      const stale = (await readdir(dir).catch(() => [] as string[])).filter((n) => {
        const m = TEMP.exec(n);
        return m !== null && !isAlive(Number(m[2]));
      });
      for (const n of stale) await unlink(join(dir, n)).catch(() => undefined);
      return stale;
    },
  };
}
