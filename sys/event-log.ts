/**
 * The event log behind `tsnet events`: every process that changes state (CLI commands, the library,
 * the daemon, the CNI service) appends Docker-shaped events to one file in the state directory;
 * readers replay it and follow it.
 *
 * Design:
 * - One JSON line per event, appended with O_APPEND. Linux serialises appends to a regular file
 *   (the inode lock covers the offset update and the copy), so lines of concurrent writers never
 *   interleave; a line is ~300 bytes and written by one write(2). No lock on the hot path: an
 *   append costs one open+write+close (~30 µs), so `run` pays nothing it would notice.
 * - Bounded: once the file passes `maxBytes`, the writer that sees it rotates under the store's
 *   kernel-released lock "events": events.jsonl becomes events.1.jsonl (replacing the older
 *   generation). At most two generations, ~2 x maxBytes on disk (~3,000 events at the default
 *   512 KiB; Docker keeps 256 in memory). A writer still holding the old file open appends its
 *   line there: readers read both generations, so nothing in flight is lost.
 * - Readers (`--since`, `--until`) read .1 then the current file and keep events in the window;
 *   following polls the current file's size every 100 ms and, when its inode changed (rotated),
 *   drains the rest of the old generation before continuing with the new file.
 * - Considered: a socket to the daemon (events lost when no daemon runs, and the CLI must work
 *   without one); a record per event in the store (one file per event, a directory listing per
 *   read); SQLite (a native dependency for an append-only log).
 */
import { appendFile, mkdir, open, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { EventLog } from './api.js';

export type { EventLog };

export interface EventLogOptions {
  readonly dir: string;
  /** Rotate past this size (default 512 KiB). */
  readonly maxBytes?: number;
  /** The cross-process lock rotation holds (the store's withLock). */
  readonly lock: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
}


const CURRENT = 'events.jsonl';
const OLD = 'events.1.jsonl';

async function readFrom(path: string, offset: number): Promise<{ text: string; size: number; ino: number } | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const st = await fh.stat();
    if (st.size <= offset) return { text: '', size: st.size, ino: st.ino };
    const buf = Buffer.alloc(st.size - offset);
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    return { text: buf.subarray(0, bytesRead).toString('utf8'), size: offset + bytesRead, ino: st.ino };
  } finally {
    await fh.close();
  }
}

/** Splits complete lines off `text`; the incomplete tail is returned for the next read. */
function lines(text: string): { done: string[]; rest: string } {
  const i = text.lastIndexOf('\n');
  if (i < 0) return { done: [], rest: text };
  return { done: text.slice(0, i).split('\n').filter((l) => l !== ''), rest: text.slice(i + 1) };
}

export function createEventLog(o: EventLogOptions): EventLog {
  const max = o.maxBytes ?? 512 * 1024;
  const cur = join(o.dir, CURRENT);
  const old = join(o.dir, OLD);
  return {
    async append(line) {
      await appendFile(cur, `${line}\n`, { mode: 0o600 }).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
        await mkdir(o.dir, { recursive: true, mode: 0o700 });
        await appendFile(cur, `${line}\n`, { mode: 0o600 });
      });
      const size = (await stat(cur).catch(() => undefined))?.size ?? 0;
      if (size <= max) return;
      await o.lock('events', async () => {
        const again = (await stat(cur).catch(() => undefined))?.size ?? 0;
        if (again > max) await rename(cur, old);
      });
    },
    async read(onLine, follow) {
      const first = await readFrom(old, 0);
      if (first !== undefined) lines(first.text.endsWith('\n') ? first.text : `${first.text}\n`).done.forEach(onLine);
      let r = await readFrom(cur, 0);
      let offset = r?.size ?? 0;
      let ino = r?.ino;
      let rest = '';
      if (r !== undefined) {
        const l = lines(r.text);
        rest = l.rest;
        l.done.forEach(onLine);
      }
      while (follow !== undefined && !follow.aborted) {
        await new Promise<void>((res) => {
          const t = setTimeout(res, 100);
          follow.addEventListener('abort', () => {
            clearTimeout(t);
            res();
          }, { once: true });
        });
        if (follow.aborted) break;
        const st = await stat(cur).catch(() => undefined);
        if (st !== undefined && ino !== undefined && st.ino !== ino) {
          // Rotated: the rest of what we were reading is now the old generation.
          const tail = await readFrom(old, offset);
          if (tail !== undefined && tail.ino === ino) lines(`${rest}${tail.text}\n`).done.forEach(onLine);
          offset = 0;
          rest = '';
          ino = st.ino;
        }
        r = await readFrom(cur, offset);
        if (r === undefined) continue;
        ino ??= r.ino;
        offset = r.size;
        const l = lines(rest + r.text);
        rest = l.rest;
        l.done.forEach(onLine);
      }
    },
  };
}
