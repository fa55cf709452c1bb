/**
 * The attach protocol between a container's supervisor (sys/shim.ts) and its clients (a foreground
 * `run -i`/`-t`), over the unix socket in the container's run directory. Frames as Docker's stream
 * multiplexing: an 8-byte header (stream type, three zero bytes, big-endian payload length), then
 * the payload. Client → shim: stdin data, stdin closed, terminal resized. Shim → client: stdout and
 * stderr data. The shim closes the connection once the container exited and its output is out.
 */
import { open } from 'node:fs/promises';
import net from 'node:net';
import { basename, dirname } from 'node:path';
import type { AttachConnection } from './api.js';

/** sun_path holds 108 bytes with its NUL. */
const SUN_PATH_MAX = 107;

/**
 * Runs `fn` with a name for `path` that fits a unix socket address: the path itself, or (for a
 * deep run directory) the socket seen through a descriptor of its directory, /proc/self/fd/N/NAME.
 */
export async function socketPath<T>(path: string, fn: (p: string) => Promise<T>): Promise<T> {
  if (Buffer.byteLength(path) <= SUN_PATH_MAX) return fn(path);
  const dir = await open(dirname(path), 'r');
  try {
    return await fn(`/proc/self/fd/${dir.fd}/${basename(path)}`);
  } finally {
    await dir.close();
  }
}

export const FRAME = { stdin: 0, stdout: 1, stderr: 2, resize: 3, stdinEnd: 4 } as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

export function encodeFrame(type: FrameType, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

export const resizePayload = (cols: number, rows: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(cols, 0);
  b.writeUInt16BE(rows, 2);
  return b;
};

/** Splits a byte stream into frames; `onFrame` is called per complete frame. */
export function frameReader(onFrame: (type: number, payload: Buffer) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 8) {
      const len = buf.readUInt32BE(4);
      if (buf.length < 8 + len) break;
      onFrame(buf.readUInt8(0), buf.subarray(8, 8 + len));
      buf = buf.subarray(8 + len);
    }
  };
}

/** Connects to a supervisor's attach socket. */
export function connectAttach(path: string): Promise<AttachConnection> {
  return socketPath(path, (p) => connectAt(p));
}

function connectAt(path: string): Promise<AttachConnection> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.off('error', reject);
      sock.on('error', () => undefined);
      const outputs: ((stream: 'stdout' | 'stderr', data: Buffer) => void)[] = [];
      sock.on('data', frameReader((type, payload) => {
        const stream = type === FRAME.stderr ? 'stderr' : type === FRAME.stdout ? 'stdout' : undefined;
        if (stream !== undefined) for (const f of outputs) f(stream, Buffer.from(payload));
      }));
      const closed = new Promise<void>((r) => sock.once('close', () => r()));
      const send = (type: FrameType, payload?: Buffer): void => {
        if (!sock.destroyed && sock.writable) sock.write(encodeFrame(type, payload));
      };
      resolve({
        onOutput: (f) => outputs.push(f),
        write: (data) => send(FRAME.stdin, Buffer.from(data)),
        endInput: () => send(FRAME.stdinEnd),
        resize: (cols, rows) => send(FRAME.resize, resizePayload(cols, rows)),
        closed,
        close: () => sock.destroy(),
      });
    });
  });
}
