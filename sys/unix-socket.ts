/**
 * Servers on unix sockets for tsnet's own local protocols (the daemon's control socket, the CNI
 * front end's socket): a path that a dead server left behind is replaced (the caller holds the lock
 * that makes it the only server), the socket gets its mode before anyone is told it serves, and
 * `close` stops accepting, waits for nothing and removes the path.
 */
import { chmod, rm } from 'node:fs/promises';
import net from 'node:net';
import type { FramedConnection, UnixServer } from './api.js';

export type { FramedConnection, UnixServer };

async function listen(path: string, server: net.Server, mode: number | undefined): Promise<UnixServer> {
  await rm(path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (mode !== undefined) await chmod(path, mode);
  return {
    path,
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      await rm(path, { force: true });
    },
  };
}

/**
 * One newline-terminated request line (at most `maxLine` bytes) per connection, answered with
 * `handle`'s text (a newline is appended) and closed. A longer line drops the connection.
 */
export function listenLines(path: string, handle: (line: string) => Promise<string>, opts: { readonly mode?: number; readonly maxLine?: number } = {}): Promise<UnixServer> {
  const maxLine = opts.maxLine ?? 4096;
  const server = net.createServer((conn) => {
    let buf = '';
    let answered = false;
    conn.setEncoding('utf8');
    conn.on('error', () => undefined);
    conn.on('data', (chunk: string) => {
      if (answered) return;
      buf += chunk;
      if (buf.length > maxLine) {
        conn.destroy();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      answered = true;
      handle(buf.slice(0, nl)).then(
        (text) => {
          if (!conn.destroyed) conn.end(`${text}\n`);
        },
        () => conn.destroy(),
      );
    });
  });
  return listen(path, server, opts.mode);
}

/**
 * Half-open request/reply: the client sends its whole request (at most `maxRequest` bytes) and
 * ends its side; `handle`'s reply is written and the connection closed. A larger request drops it.
 */
export function listenRequests(path: string, handle: (request: Buffer) => Promise<string>, opts: { readonly mode?: number; readonly maxRequest: number }): Promise<UnixServer> {
  const server = net.createServer({ allowHalfOpen: true }, (conn) => {
    const chunks: Buffer[] = [];
    let size = 0;
    conn.on('error', () => undefined);
    conn.on('data', (c: Buffer) => {
      size += c.length;
      if (size > opts.maxRequest) {
        conn.destroy();
        return;
      }
      chunks.push(c);
    });
    conn.on('end', () => {
      handle(Buffer.concat(chunks)).then(
        (text) => {
          if (!conn.destroyed) conn.end(text);
        },
        () => conn.destroy(),
      );
    });
  });
  return listen(path, server, opts.mode);
}

/**
 * A server of long-lived connections carrying frames both ways (the CLI front end's: a request, then
 * signals; output, then an exit code). A frame larger than `maxFrame` drops the connection.
 */
export function listenFramed(path: string, onConnection: (c: FramedConnection) => void, opts: { readonly mode?: number; readonly maxFrame: number }): Promise<UnixServer> {
  const server = net.createServer((sock) => {
    const frames: ((type: number, payload: Buffer) => void)[] = [];
    const closers: (() => void)[] = [];
    let closed = false;
    const close = (): void => {
      if (closed) return;
      closed = true;
      for (const f of closers) f();
    };
    sock.on('error', close);
    sock.on('close', close);
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 8) {
        const len = buf.readUInt32BE(4);
        if (len > opts.maxFrame) {
          sock.destroy();
          return;
        }
        if (buf.length < 8 + len) break;
        const type = buf.readUInt8(0);
        const payload = Buffer.from(buf.subarray(8, 8 + len));
        buf = buf.subarray(8 + len);
        for (const f of frames) f(type, payload);
      }
    });
    onConnection({
      send(type, payload = Buffer.alloc(0)) {
        if (closed || sock.destroyed || !sock.writable) return false;
        const h = Buffer.alloc(8);
        h.writeUInt8(type, 0);
        h.writeUInt32BE(payload.length, 4);
        sock.write(Buffer.concat([h, payload]));
        return true;
      },
      end: () => sock.end(),
      onFrame: (f) => frames.push(f),
      onClose: (f) => {
        if (closed) f();
        else closers.push(f);
      },
    });
  });
  return listen(path, server, opts.mode);
}
