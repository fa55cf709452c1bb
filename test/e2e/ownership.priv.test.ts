/**
 * tsnet deletes only what it made (drivers/owner.ts): a bridge name that is a user's veth (holding
 * an address) or `lo` is refused with nothing touched; a user's existing bridge is used as Docker's
 * bridge driver uses one, and `network rm` leaves it with its own addresses; a second state
 * directory on the same host never tears down the first's objects: a name the first owns is
 * refused by name and place, and the second's default bridge is another one.
 */
import t from 'tap';
import { join } from 'node:path';
import { cliFor, okCli } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

interface IpLink { ifname: string; ifalias?: string; linkinfo?: { info_kind?: string }; addr_info: { local: string; prefixlen: number }[] }
const linkOf = async (host: IsolatedHost, name: string): Promise<IpLink | undefined> =>
  (JSON.parse((await host.exec(['ip', '-json', '-details', 'addr', 'show'])).stdout) as IpLink[]).find((l) => l.ifname === name);
const addrsOf = async (host: IsolatedHost, name: string): Promise<string[]> => ((await linkOf(host, name))?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`).filter((a) => !a.startsWith('fe80')).sort();

t.test('ownership: user interfaces are refused or used as they are, never deleted; a second store keeps off the first\'s', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const ok = okCli(cliFor(host));
    // A user's veth holding an address (its peer in a neighbour namespace).
    const nbr = await host.newNetns('nbr');
    await host.exec(['ip', 'link', 'add', 'uveth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nbr.kind === 'path' ? nbr.path : '']);
    await host.exec(['ip', 'addr', 'add', '192.168.90.1/24', 'dev', 'uveth0']);
    await host.exec(['ip', 'link', 'set', 'uveth0', 'up']);
    for (const name of ['uveth0', 'lo']) {
      await t.rejects(ok('network', 'create', '-o', `com.docker.network.bridge.name=${name}`, `n-${name}`), new RegExp(`bridge name ${name}: a [\\w-]+ interface of that name exists \\(nothing was changed\\)`), `${name}: refused`);
    }
    t.ok(await linkOf(host, 'uveth0'), 'the veth is still there');
    t.same(await addrsOf(host, 'uveth0'), ['192.168.90.1/24'], 'with its address');
    t.equal((await host.execIn(nbr, ['ip', '-o', 'link', 'show', 'eth0'])).stdout.includes('eth0'), true, 'and its peer');
    t.same(await addrsOf(host, 'lo'), ['127.0.0.1/8', '::1/128'], 'lo untouched');
    t.notMatch(await ok('network', 'ls'), /n-uveth0|n-lo/, 'no network record left');

    // A user's bridge: used, its own address kept; network rm removes only what tsnet added.
    await host.exec(['ip', 'link', 'add', 'userbr', 'type', 'bridge']);
    await host.exec(['ip', 'addr', 'add', '192.168.91.254/24', 'dev', 'userbr']);
    await ok('network', 'create', '-o', 'com.docker.network.bridge.name=userbr', '--subnet', '10.91.0.0/24', 'usernet');
    t.same(await addrsOf(host, 'userbr'), ['10.91.0.1/24', '192.168.91.254/24'], 'the gateway added beside the user\'s address');
    t.equal((await linkOf(host, 'userbr'))?.ifalias, undefined, 'the user\'s bridge is not tagged as tsnet\'s');
    await ok('run', '-d', '--name', 'u1', '--network', 'usernet', '--', 'sleep', '600');
    await ok('rm', '-f', 'u1');
    await ok('network', 'rm', 'usernet');
    t.ok(await linkOf(host, 'userbr'), 'network rm left the user\'s bridge');
    t.same(await addrsOf(host, 'userbr'), ['192.168.91.254/24'], 'with its own address, without tsnet\'s gateway');

    // tsnet's own bridge carries its tag; a second store refuses it by name and place.
    await ok('network', 'create', '--subnet', '10.92.0.0/24', '-o', 'com.docker.network.bridge.name=ownbr', 'own');
    t.match((await linkOf(host, 'ownbr'))?.ifalias ?? '', new RegExp(`^tsnet:[0-9a-f]{16}:[0-9a-f]{12}:${host.stateDir.replaceAll('/', '\\/')}$`), 'tagged with the store and the network');
    await ok('run', '-d', '--name', 'first', '--network', 'bridge', '--', 'sleep', '600');
    const second = okCli(cliFor(host, { stateDir: join(host.stateDir, 'second'), runDir: join(host.runDir, 'second') }));
    host.defer(() => host.exec(['umount', '-l', join(host.runDir, 'second', 'netns')]).catch(() => undefined));
    await t.rejects(second('network', 'create', '--subnet', '10.93.0.0/24', '-o', 'com.docker.network.bridge.name=ownbr', 'mine'), new RegExp(`ownbr belongs to the store at ${host.stateDir.replaceAll('/', '\\/')}`), 'refused by name and place');
    await second('run', '-d', '--name', 'second1', '--', 'sleep', '600');
    const defaultBr = JSON.parse(await second('network', 'inspect', 'bridge')) as { Options?: Record<string, string>; Tsnet?: { config?: { bridge?: string } } }[];
    t.match(JSON.stringify(defaultBr), /tsnet-[0-9a-f]{8}/, 'the second store\'s default bridge is its own');
    t.ok(await linkOf(host, 'tsnet0'), 'the first store\'s tsnet0 is still there');
    await second('rm', '-f', 'second1');
    await second('network', 'prune', '-f').catch(() => '');
    t.ok(await linkOf(host, 'ownbr'), 'and its ownbr');
    t.match(await ok('exec', 'first', 'ip', '-o', '-4', 'addr', 'show', 'eth0'), /inet 10\./, 'the first store\'s container still has its address');
    await ok('rm', '-f', 'first');
    await ok('network', 'rm', 'own');
    t.equal(await linkOf(host, 'ownbr'), undefined, 'tsnet removes its own bridge');
  });
});
