/**
 * What the library starts, `close()` stops: the built package (dist/lib.js, as `import 'tsnet'`
 * loads it) in an isolated host. A sandbox's first join starts the daemon (embedded DNS); close()
 * stops it again; with `keepDaemon: true` it keeps running (the engine owns it); a daemon that
 * already ran is never stopped by the library.
 */
import t from 'tap';
import { readFileSync as fsReadFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliFor, okCli } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

const LIB = fileURLToPath(new URL('../../dist/lib.js', import.meta.url));
type Lib = typeof import('../../lib/index.js');

const daemonPid = async (host: IsolatedHost): Promise<number | undefined> => {
  const text = await readFile(join(host.runDir, 'daemon.pid'), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : Number(text.trim());
};
/** A process, not a zombie waiting for its parent. */
const alive = (pid: number): boolean => {
  const st = readFileSync(`/proc/${pid}/stat`, { encoding: 'utf8', flag: 'r' }).toString();
  return !/\) [ZX] /.test(st);
};
const readFileSync = (p: string, o: { encoding: 'utf8'; flag: string }): string => {
  try {
    return fsReadFileSync(p, o);
  } catch {
    return '1 (gone) Z ';
  }
};

t.test('the library stops the daemon it started, unless keepDaemon', { skip: skipUnlessRoot }, async (t) => {
  const lib = (await import(LIB)) as Lib;
  await withIsolatedHost(async (host) => {
    if (host.ns.kind !== 'path') throw new Error('isolated host without a netns path');
    const cli = okCli(cliFor(host));
    host.defer(() => cli('daemon', '--stop'));
    const open = (keepDaemon?: boolean): ReturnType<Lib['createController']> => lib.createController({
      stateDir: host.stateDir, runDir: host.runDir, hostNetns: host.ns.kind === 'path' ? host.ns.path : '', log: 'error', ...(keepDaemon !== undefined ? { keepDaemon } : {}),
    });

    const c1 = await open();
    await c1.createNetwork({ name: 'app', subnets: [{ subnet: '10.31.0.0/24' }] });
    await c1.createSandbox({ name: 'web', mode: { kind: 'network', network: 'app' } });
    const pid = await daemonPid(host);
    t.ok(pid !== undefined && alive(pid), `the first join started the daemon (pid ${String(pid)})`);
    t.match(await cli('daemon', '--status'), /"dns"/, 'it answers');
    await c1.close();
    t.notOk(pid !== undefined && alive(pid), 'close() stopped it');
    t.equal(await daemonPid(host), undefined, 'its pid file is gone');

    const c2 = await open(true);
    await c2.createSandbox({ name: 'api', mode: { kind: 'network', network: 'app' } });
    const kept = await daemonPid(host);
    t.ok(kept !== undefined && alive(kept), 'started again by the next join');
    await c2.close();
    t.ok(kept !== undefined && alive(kept), 'keepDaemon: close() leaves it running');
    t.match(await cli('daemon', '--status'), new RegExp(`"pid": ${String(kept)}`), 'and it still serves');

    const c3 = await open();
    await c3.createSandbox({ name: 'db', mode: { kind: 'network', network: 'app' } });
    await c3.close();
    t.ok(kept !== undefined && alive(kept), 'a daemon this controller did not start is never stopped by it');

    const c4 = await open();
    for (const n of ['web', 'api', 'db']) await c4.deleteSandbox(n);
    await c4.deleteNetwork('app');
    await c4.close();
  });
});
