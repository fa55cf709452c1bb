/**
 * Carries Docker's plugin protocol over HTTP/1.1 on a unix socket (node:http): reads each request
 * body (bounded), hands path and body to the dispatcher, writes its JSON answer with Docker's
 * plugin content type. Malformed HTTP is node:http's to answer (400); nothing here throws into the
 * event loop.
 */
import { mkdir, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { TsnetError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Dispatcher } from './dispatch.js';
import { CONTENT_TYPE } from './protocol.js';

const MAX_BODY = 1 << 20;

export interface PluginServer {
  readonly socketPath: string;
  /** Stops accepting, waits for calls in progress, removes the socket file. */
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'Content-Type': CONTENT_TYPE, 'Content-Length': Buffer.byteLength(text) });
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

export async function servePlugin(opts: { readonly socketPath: string; readonly dispatch: Dispatcher; readonly log: Logger }): Promise<PluginServer> {
  const { socketPath, dispatch, log } = opts;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method !== 'POST') {
      send(res, 405, { Err: `method ${req.method ?? ''} not allowed: plugin calls are POST /<Interface>.<Method>` });
      return;
    }
    readBody(req).then(
      async (body) => {
        if (body === undefined) {
          send(res, 413, { Err: `request body larger than ${MAX_BODY} bytes` });
          return;
        }
        log.debug('plugin request', { path, body });
        const r = await dispatch(path, body);
        log.debug('plugin response', { path, status: r.status, body: r.body });
        send(res, r.status, r.body);
      },
      (err: unknown) => {
        log.warn('reading a plugin request failed', { err });
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
  log.info('docker plugin listening', { socket: socketPath });
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
