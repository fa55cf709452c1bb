/**
 * Crash-safe file replacement (the embedded store's writes, fs.ts; also the CNI plugins' DNS
 * records, cni-attachments.ts): a reader sees the old file or the new one, never a torn one, and a
 * process killed mid-write leaves at most a dot-file (`.NAME.tmp-PID-RANDOM`) that readers ignore.
 * Nothing here validates: no zod, so the CNI plugin bundle stays small.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** A temp name beside `final`: a dot-file, unique per process and call. */
export const tmpName = (final: string): string => `.${final}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;

/** The fixed temp name of `final` (see writeAtomic). */
export const fixedTempName = (final: string): string => `.${final}.tmp`;

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * temp + write + fsync + rename + fsync(dir). `tmp`: a fixed temp name (`.NAME.tmp`), for a file with
 * one writer at a time: a writer killed mid-way leaves a temp file whose name its owner knows (and
 * removes); the default is unique per process and call, created exclusively.
 */
export async function writeAtomic(dir: string, final: string, text: string, opts: { readonly fixedTemp?: boolean } = {}): Promise<void> {
  const tmp = join(dir, opts.fixedTemp === true ? fixedTempName(final) : tmpName(final));
  try {
    const fh = await open(tmp, opts.fixedTemp === true ? 'w' : 'wx', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dir, final));
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dir);
}
