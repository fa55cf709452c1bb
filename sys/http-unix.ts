/**
 * A JSON-over-HTTP/1.1 server on a unix socket (node:http), the transport of Docker's plugin
 * protocol: reads each POST body (bounded), hands path and body to the handler, writes its JSON
 * answer with the given content type. Malformed HTTP is node:http's to answer (400); nothing here
 * throws into the event loop.
 */
import { mkdir, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { TsnetError } from '../core/errors.js';
import type { Logger } from '../core/log.js';

/** Answers one call: the request path (no query) and body → HTTP status and JSON body. */
export type JsonHandler = (path: string, body: string) => Promise<{ readonly status: number; readonly body: unknown }>;

const MAX_BODY = 1 << 20;

export interface JsonServer {
  readonly socketPath: string;
  /** Stops accepting, waits for calls in progress, removes the socket file. */
  close(): Promise<void>;
}

function sendWith(res: ServerResponse, contentType: string, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > MAX_BODY) return undefined;
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Removes a stale socket left by a crashed plugin; refuses to remove anything that is not a socket. */
async function clearStale(path: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (st === undefined) return;
  if (!st.isSocket()) throw new TsnetError('ALREADY_EXISTS', `socket ${path}: a file that is not a socket is in the way`, { details: { field: 'socket' } });
  await rm(path, { force: true });
}

export async function serveJsonOverUnixHttp(opts: { readonly socketPath: string; readonly contentType: string; readonly handle: JsonHandler; readonly log: Logger }): Promise<JsonServer> {
  const { socketPath, handle, log } = opts;
  const send = (res: ServerResponse, status: number, body: unknown): void => sendWith(res, opts.contentType, status, body);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method !== 'POST') {
      send(res, 405, { Err: `method ${req.method ?? ''} not allowed: calls are POST /<Interface>.<Method>` });
      return;
    }
    readBody(req).then(
      async (body) => {
        if (body === undefined) {
          send(res, 413, { Err: `request body larger than ${MAX_BODY} bytes` });
          return;
        }
        log.debug('request', { path, body });
        const r = await handle(path, body);
        log.debug('response', { path, status: r.status, body: r.body });
        send(res, r.status, r.body);
      },
      (err: unknown) => {
        log.warn('reading a request failed', { err });
        if (!res.headersSent) send(res, 400, { Err: 'could not read the request body' });
      },
    );
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  await mkdir(dirname(socketPath), { recursive: true });
  await clearStale(socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  log.info('listening', { socket: socketPath });
  return {
    socketPath,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await rm(socketPath, { force: true });
    },
  };
}
