/** The JSON-over-HTTP transport (Docker's plugin protocol) on a real unix socket (no root): shapes on the wire, bad clients. */
import t from 'tap';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nullLogger } from '../core/log.js';
import { serveJsonOverUnixHttp, type JsonHandler } from './http-unix.js';

const CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';
const servePlugin = (o: { socketPath: string; dispatch: JsonHandler; log: typeof nullLogger }) => serveJsonOverUnixHttp({ socketPath: o.socketPath, contentType: CONTENT_TYPE, handle: o.dispatch, log: o.log });

interface Reply { status: number; type: string | undefined; body: string }
function call(socketPath: string, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: { Host: 'plugin.moby.localhost', Accept: 'application/vnd.docker.plugins.v1.2+json' } }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body: data }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

t.test('serves the dispatcher over HTTP on a unix socket and survives bad clients', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsnet-plugin-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sock = join(dir, 'plugins', 'tsnet.sock');
  const seen: [string, string][] = [];
  const dispatch: JsonHandler = async (path, body) => {
    seen.push([path, body]);
    return path === '/Plugin.Activate' ? { status: 200, body: { Implements: ['NetworkDriver', 'IpamDriver'] } } : { status: 404, body: { Err: 'nope' } };
  };
  const server = await servePlugin({ socketPath: sock, dispatch, log: nullLogger });
  t.ok((await stat(sock)).isSocket(), 'the socket exists (its directory was made)');

  const a = await call(sock, 'POST', '/Plugin.Activate');
  t.same(a, { status: 200, type: 'application/vnd.docker.plugins.v1.2+json', body: '{"Implements":["NetworkDriver","IpamDriver"]}\n' });
  const b = await call(sock, 'POST', '/NetworkDriver.Join?x=1', '{"NetworkID":"n"}');
  t.equal(b.status, 404);
  t.same(seen.at(-1), ['/NetworkDriver.Join', '{"NetworkID":"n"}'], 'path without query, body as sent');
  t.match(await call(sock, 'GET', '/Plugin.Activate'), { status: 405, body: /not allowed/ });
  t.match(await call(sock, 'POST', '/Plugin.Activate', 'x'.repeat((1 << 20) + 1)), { status: 413 });
  // Garbage that is not HTTP: answered 400 and closed; the server goes on.
  const raw = await new Promise<string>((resolve) => {
    const s = connect(sock);
    let d = '';
    s.on('data', (c) => (d += c.toString()));
    s.on('close', () => resolve(d));
    s.on('error', () => resolve(d));
    s.end('\u0000\u0001 not http at all\r\n\r\n');
  });
  t.match(raw, /^HTTP\/1\.1 400/, 'non-HTTP bytes get a 400');
  t.equal((await call(sock, 'POST', '/Plugin.Activate')).status, 200, 'still serving');

  await server.close();
  await t.rejects(stat(sock), { code: 'ENOENT' }, 'close removes the socket');

  // Served again on the same path; a file that is not a socket in the way is refused, not removed.
  const again = await servePlugin({ socketPath: sock, dispatch, log: nullLogger });
  await again.close();
  await writeFile(sock, 'not a socket');
  await t.rejects(servePlugin({ socketPath: sock, dispatch, log: nullLogger }), { code: 'ALREADY_EXISTS', message: /not a socket/ });
});
