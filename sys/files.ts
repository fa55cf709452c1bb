/**
 * Small file operations the other layers' composition roots need (sandbox files, pid files, log
 * files, installed binaries), in one place so that only sys/ touches the disk. Crash-safe record
 * writes are the store's (store/atomic.ts); these are plain.
 */
import { access, chmod, copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsError } from '../core/errors.js';
import type { Files } from './api.js';

/** A file's text, or undefined when it cannot be read. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

export async function readText(path: string): Promise<string> {
  return readFile(path, 'utf8');
}

export async function pathExists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

/** 'file', 'dir', 'socket', 'other', or undefined when nothing is there. */
export async function pathKind(path: string): Promise<'file' | 'dir' | 'socket' | 'other' | undefined> {
  const st = await stat(path).catch(() => undefined);
  if (st === undefined) return undefined;
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSocket() ? 'socket' : 'other';
}

/**
 * Writes `content` in place (the file's inode kept: a container bind-mounts /etc/hosts and
 * resolv.conf, and a rename would leave it looking at the old file), creating the parent.
 */
export async function writeInPlace(path: string, content: string, mode = 0o644): Promise<void> {
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content, { mode });
  } catch (err) {
    throw fsError(`write ${path}`, err); // a full disk: IO_FAILURE
  }
}

/** Replaces `path` by a temp file + rename (readers see the old or the new content). */
export async function replaceFile(path: string, content: string, mode = 0o644): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(tmp, content, { mode });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw fsError(`write ${path}`, err);
  }
}

export async function makeDir(path: string, mode = 0o755): Promise<void> {
  try {
    await mkdir(path, { recursive: true, mode });
  } catch (err) {
    throw fsError(`mkdir ${path}`, err);
  }
}

/** Removes a file or a directory tree; succeeds if it is gone. */
export async function removePath(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
}

export async function listDir(path: string): Promise<string[]> {
  return readdir(path);
}

export async function copyExecutable(from: string, to: string, mode = 0o755): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  const tmp = `${to}.${process.pid}.tmp`;
  await copyFile(from, tmp);
  await chmod(tmp, mode);
  await rename(tmp, to);
}

export async function setMode(path: string, mode: number): Promise<void> {
  await chmod(path, mode);
}

/** Opens `path` for appending and runs `fn` with its descriptor (a detached child's stdio). */
export async function withAppendFd<T>(path: string, fn: (fd: number) => Promise<T> | T): Promise<T> {
  await mkdir(dirname(path), { recursive: true });
  const fh = await open(path, 'a');
  try {
    return await fn(fh.fd);
  } finally {
    await fh.close();
  }
}

async function readChunk(path: string, offset: number, length: number): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
    throw err;
  }
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The local filesystem as the `Files` port. */
export const localFiles: Files = {
  async readText(path) {
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  },
  kind: pathKind,
  makeDir,
  write: writeInPlace,
  readChunk,
  remove: removePath,
};
