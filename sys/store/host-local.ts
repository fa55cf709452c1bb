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
import { mkdir, open, readdir, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError } from '../../core/errors.js';
import { abstractSocketLock, createLocker } from './lock.js';

export const HOST_LOCAL_DATA_DIR = '/var/lib/cni/networks';
const LAST_IP_PREFIX = 'last_reserved_ip.';
const LINE_BREAK = '\r\n';

export interface HostLocalReservation {
  readonly ip: string;
  readonly containerId: string;
  /** Undefined for a legacy file holding the container id only. */
  readonly ifName: string | undefined;
}

export interface HostLocalStore {
  readonly dir: string;
  /** Runs `fn` holding the directory's lock (kernel-released; see the file comment). Taken by GC;
   *  ADD and DEL rely on the exclusive creation of reservation files. */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
  /** Reserves `ip` (false if it is taken) and records it as the range set's last reservation. */
  reserve(ip: string, containerId: string, ifName: string, rangeId: number): Promise<boolean>;
  lastReserved(rangeId: number): Promise<string | undefined>;
  /** The reservation of one address, if any. */
  get(ip: string): Promise<HostLocalReservation | undefined>;
  /** Deletes the reservation file of `ip`; succeeds if absent. */
  release(ip: string): Promise<void>;
  /** Every reservation (walks the directory; skips `lock` and `last_reserved_ip.*`). */
  list(): Promise<HostLocalReservation[]>;
}

function parseContent(ip: string, text: string): HostLocalReservation {
  const t = text.trim();
  const i = t.indexOf(LINE_BREAK);
  return i < 0 ? { ip, containerId: t, ifName: undefined } : { ip, containerId: t.slice(0, i), ifName: t.slice(i + LINE_BREAK.length) };
}

const IP_FILE = /^[0-9a-fA-F.:]+$/;

export async function openHostLocalStore(opts: { readonly dataDir?: string; readonly network: string; readonly lockTimeoutMs?: number }): Promise<HostLocalStore> {
  const dir = join(opts.dataDir ?? HOST_LOCAL_DATA_DIR, opts.network);
  // One stat when the directory exists (every ADD but a network's first); host-local creates the
  // directory and its `lock` file on open, and so do we when they are missing.
  const present = await stat(dir).then((st) => st.isDirectory(), () => false);
  if (!present) {
    try {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      await (await open(join(dir, 'lock'), 'a', 0o644)).close();
    } catch (err) {
      throw new TsnetError('UNAVAILABLE', `ipam dataDir ${dir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { field: 'dataDir' } });
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
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  };

  return {
    dir,
    withLock: async (fn) => (await lockerFor()).withLock('ipam', fn),
    async reserve(ip, containerId, ifName, rangeId) {
      let fh;
      try {
        fh = await open(join(dir, ip), 'wx', 0o644);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw err;
      }
      try {
        await fh.writeFile(`${containerId.trim()}${LINE_BREAK}${ifName}`);
        await fh.close();
      } catch (err) {
        await fh.close().catch(() => undefined);
        await unlink(join(dir, ip)).catch(() => undefined);
        throw err;
      }
      // Replaced atomically: a concurrent reader sees the old or the new hint, never a torn one.
      const hint = join(dir, `${LAST_IP_PREFIX}${rangeId}`);
      // Unique per call, not per process: the daemon's CNI service runs many ADDs in one process.
      const tmp = `${hint}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(tmp, ip, { mode: 0o644 });
      await rename(tmp, hint);
      return true;
    },
    async lastReserved(rangeId) {
      try {
        return (await readFile(join(dir, `${LAST_IP_PREFIX}${rangeId}`), 'utf8')).trim();
      } catch {
        return undefined;
      }
    },
    get,
    async release(ip) {
      await unlink(join(dir, ip)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    },
    async list() {
      const names = (await readdir(dir)).filter((n) => n !== 'lock' && !n.startsWith(LAST_IP_PREFIX) && IP_FILE.test(n));
      const out = await Promise.all(names.map((n) => get(n)));
      return out.filter((r): r is HostLocalReservation => r !== undefined);
    },
  };
}
