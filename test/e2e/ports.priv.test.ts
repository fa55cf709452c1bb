/**
 * Published ports end to end through the built `tsnet` CLI, with real packets: a neighbouring host
 * on a link to the host namespace (IPv4 and IPv6), the host itself, 127.0.0.1, hairpin from a
 * container; TCP and UDP; ephemeral ports, -P, `tsnet port`; refusals; a flushed ruleset and
 * `tsnet firewall reload`; `tsnet doctor`.
 */
import t from 'tap';
import { fileURLToPath } from 'node:url';
import type { NetnsRef } from '../../core/net.js';
import { inNetns, run, execDetails } from '../../sys/exec.js';
import { afterFirstRecovery, cliFor, okCli, type Cli } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { reachable, request, startServer } from '../helpers/traffic.js';

const TOOLS = fileURLToPath(new URL('../helpers/net-tools.mjs', import.meta.url));

/** TCP and UDP on every given port, answering "hello <msg> from <hostname> to <client>". */
const SERVER = (ports: number[]): string => [
  "const os=require('os'),net=require('net'),dgram=require('dgram');const strip=a=>a.replace('::ffff:','');",
  `for(const p of ${JSON.stringify(ports)}){`,
  "net.createServer(s=>{s.setEncoding('utf8');let b='';s.on('data',d=>{b+=d;if(b.includes('\\n'))s.end('hello '+b.trim()+' from '+os.hostname()+' to '+strip(s.remoteAddress)+'\\n')})}).listen(p);",
  "const u=dgram.createSocket({type:'udp6',ipv6Only:false});u.on('message',(m,r)=>u.send('hello '+m.toString().trim()+' from '+os.hostname()+' to '+strip(r.address)+'\\n',r.port,r.address));u.bind(p);}",
].join('');

interface Ctx {
  readonly host: IsolatedHost;
  readonly cli: Cli;
  readonly ok: (...a: string[]) => Promise<string>;
  /** The neighbour: 192.168.50.2 / fd50::2, the host 192.168.50.1 / fd50::1 on the same link. */
  readonly nbr: NetnsRef;
}

async function withPorts(fn: (ctx: Ctx) => Promise<void>, firewall = 'nftables'): Promise<void> {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host, { firewall });
    host.defer(async () => {
      await cli('ps', '-aq').then(async (r) => {
        for (const id of r.stdout.split('\n').filter(Boolean)) await cli('rm', '-f', id);
      });
    });
    const nbr = await host.newNetns('nbr');
    const nbrPath = nbr.kind === 'path' ? nbr.path : '';
    await host.exec(['ip', 'link', 'add', 'vnb0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nbrPath]);
    await host.exec(['ip', 'addr', 'add', '192.168.50.1/24', 'dev', 'vnb0']);
    await host.exec(['ip', 'addr', 'add', 'fd50::1/64', 'dev', 'vnb0', 'nodad']);
    await host.exec(['ip', 'link', 'set', 'vnb0', 'up']);
    await host.execIn(nbr, ['ip', 'addr', 'add', '192.168.50.2/24', 'dev', 'eth0']);
    await host.execIn(nbr, ['ip', 'addr', 'add', 'fd50::2/64', 'dev', 'eth0', 'nodad']);
    await host.execIn(nbr, ['ip', 'link', 'set', 'eth0', 'up']);
    await fn({ host, cli, ok: okCli(cli), nbr });
  });
}

/** A request retried while the container's server starts. */
async function answer(ns: NetnsRef, proto: 'tcp' | 'udp', addr: string, port: number, msg = 'x'): Promise<string> {
  let last: unknown;
  for (let i = 0; i < 30; i++) {
    try {
      return await request(ns, proto, addr, port, msg, 1000);
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  throw new Error(`no ${proto} answer from ${addr}:${port}: ${String(last)}`);
}

/** Why a TCP connection fails ("ECONNREFUSED", "timeout"), or "connected". */
async function tcpFailure(ns: NetnsRef, addr: string, port: number): Promise<string> {
  try {
    await run(inNetns(ns, [process.execPath, TOOLS, 'tcp-client', addr, String(port), 'probe', '1500']), { timeoutMs: 10_000 });
    return 'connected';
  } catch (err) {
    return execDetails(err)?.stderr.trim() ?? String(err);
  }
}

t.test('TCP and UDP from a neighbour (v4 and v6), the host, 127.0.0.1 and a container; ephemeral ports, -P, tsnet port', { skip: skipUnlessRoot }, async (t) => {
  await withPorts(async ({ host, cli, ok, nbr }) => {
    await ok('network', 'create', '--ipv6', '--subnet', '10.72.0.0/24', '--subnet', 'fd72::/64', 'pub');
    await ok('run', '-d', '--name', 'web', '--hostname', 'web', '--network', 'pub',
      '-p', '8080:80', '-p', '8080:80/udp', '-p', '80', '-p', '127.0.0.1::81', '--expose', '7000/udp', '-P', '--', 'node', '-e', SERVER([80, 81, 7000]));

    // `tsnet port`: every mapping, Docker's lines; the ephemeral ones inside ip_local_port_range.
    const [lo, hi] = (await host.exec(['cat', '/proc/sys/net/ipv4/ip_local_port_range'])).stdout.trim().split(/\s+/).map(Number) as [number, number];
    const lines = (await ok('port', 'web')).trim().split('\n');
    const eph = (re: RegExp): number => Number(lines.map((l) => re.exec(l)).find((x) => x !== null)?.[1]);
    const e80 = eph(/^80\/tcp -> 0\.0\.0\.0:(?!8080$)(\d+)$/);
    const e81 = eph(/^81\/tcp -> 127\.0\.0\.1:(\d+)$/);
    const e7000 = eph(/^7000\/udp -> 0\.0\.0\.0:(\d+)$/);
    for (const [what, p] of [['80/tcp', e80], ['81/tcp on 127.0.0.1', e81], ['7000/udp by -P', e7000]] as const) {
      t.ok(p >= lo && p <= hi, `${what}: ephemeral host port ${p} in ${lo}-${hi}`);
    }
    t.ok(lines.includes('80/tcp -> 0.0.0.0:8080') && lines.includes('80/tcp -> [::]:8080') && lines.includes('80/udp -> 0.0.0.0:8080'), `port lists the fixed mappings: ${lines.join(' | ')}`);
    t.same((await ok('port', 'web', '80/udp')).trim().split('\n'), ['0.0.0.0:8080', '[::]:8080'], 'port CONTAINER 80/udp');
    const none = await cli('port', 'web', '9999');
    t.equal(none.code, 3, 'an unpublished port: not found');
    t.match(none.stderr, /no public port '9999\/tcp' published for web/);

    // From the neighbour, IPv4 and IPv6, TCP and UDP: the container sees the neighbour's address.
    t.equal(await answer(nbr, 'tcp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2', 'TCP v4 from the neighbour, source kept');
    t.equal(await answer(nbr, 'udp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2', 'UDP v4 from the neighbour, source kept');
    t.equal(await answer(nbr, 'tcp', 'fd50::1', 8080), 'hello x from web to fd50::2', 'TCP v6 from the neighbour, source kept');
    t.equal(await answer(nbr, 'udp', 'fd50::1', 8080), 'hello x from web to fd50::2', 'UDP v6 from the neighbour, source kept');
    t.equal(await answer(nbr, 'tcp', '192.168.50.1', e80), 'hello x from web to 192.168.50.2', 'the ephemeral TCP port');
    t.equal(await answer(nbr, 'udp', '192.168.50.1', e7000), 'hello x from web to 192.168.50.2', 'the -P UDP port');
    t.notOk(await reachable(nbr, 'tcp', '192.168.50.1', e81, 1000), 'the 127.0.0.1-published port is not reachable from the neighbour');

    // From the host itself: its own addresses and 127.0.0.1 (route_localnet), TCP and UDP.
    t.match(await answer(host.ns, 'tcp', '192.168.50.1', 8080), /^hello x from web to /, 'TCP from the host to its own address');
    t.match(await answer(host.ns, 'tcp', 'fd50::1', 8080), /^hello x from web to /, 'TCP v6 from the host to its own address');
    t.match(await answer(host.ns, 'tcp', '127.0.0.1', 8080), /^hello x from web to /, 'TCP from 127.0.0.1');
    t.match(await answer(host.ns, 'udp', '127.0.0.1', 8080), /^hello x from web to /, 'UDP from 127.0.0.1');
    t.match(await answer(host.ns, 'tcp', '127.0.0.1', e81), /^hello x from web to /, 'the 127.0.0.1-only port from the host');
    // ::1 cannot be DNAT'd by Linux (no route_localnet for IPv6): it must fail at once, not hang.
    t.match(await tcpFailure(host.ns, '::1', 8080), /ECONNREFUSED/, '::1:8080 is refused at once, not black-holed');

    // Hairpin: a container on the same bridge reaches the host's published port.
    await ok('run', '-d', '--name', 'client', '--network', 'pub', '--', 'sleep', '600');
    let hair = '';
    for (let i = 0; i < 30 && hair === ''; i++) {
      const r = await cli('exec', 'client', process.execPath, TOOLS, 'tcp-client', '192.168.50.1', '8080', 'hair', '1000');
      hair = r.code === 0 ? r.stdout.trim() : '';
    }
    t.match(hair, /^hello hair from web to /, 'hairpin: container → host:8080 → container on the same bridge');
    const hairUdp = await cli('exec', 'client', process.execPath, TOOLS, 'udp-client', '192.168.50.1', '8080', 'hair', '1500');
    t.match(hairUdp.stdout, /^hello hair from web to /, 'hairpin over UDP');
  });
});

t.test('refused before anything changes: taken, busy and foreign host ports, bad specs', { skip: skipUnlessRoot }, async (t) => {
  await withPorts(async ({ host, cli, ok }) => {
    await ok('network', 'create', '--subnet', '10.73.0.0/24', 'pub');
    await ok('run', '-d', '--name', 'web', '--network', 'pub', '-p', '8080:80', '--', 'sleep', '600');
    await startServer(host, host.ns, 'tcp', '127.0.0.1', 8090);
    const rules = async (): Promise<string> => (await host.exec(['nft', 'list', 'ruleset'])).stdout;
    const before = { rules: await rules(), ps: await ok('ps', '-aq'), links: (await host.exec(['ip', '-br', 'link'])).stdout };
    const cases: [string[], number, RegExp][] = [
      [['-p', '8080:80'], 4, /publish: cannot publish 0\.0\.0\.0:8080\/tcp: 0\.0\.0\.0:8080\/tcp is already published by container web/],
      [['-p', '8085-8095:80-90'], 4, /tcp port 8090 is in use by a process on the host \(listening on 127\.0\.0\.1:8090\)/],
      [['-p', '198.51.100.1:8081:80'], 2, /host address 198\.51\.100\.1 is not an address of this host/],
      [['-p', '[::1]:8081:80'], 2, /publish: .*::1/],
      [['-p', '0:80'], 2, /^Error: publish: invalid value "0:80": host port 0 is outside 1-65535/],
      [['-p', '65536:80'], 2, /host port 65536 is outside 1-65535/],
      [['-p', '8100-8000:80'], 2, /host port range 8100-8000 is reversed/],
      [['-p', '8000-8010:80-81'], 2, /the host range has 11 ports and the container range 2: they must be equal/],
      [['-p', '8080:80/icmp'], 2, /unknown protocol "icmp" \(tcp, udp or sctp\)/],
      [['--expose', '70000', '-P'], 2, /^Error: expose: /],
    ];
    for (const [args, code, re] of cases) {
      const r = await cli('run', '-d', '--network', 'pub', ...args, '--', 'sleep', '600');
      t.equal(r.code, code, `${args.join(' ')}: exit ${code}`);
      t.match(r.stderr, re, `${args.join(' ')}: the error names the cause`);
    }
    t.equal(await rules(), before.rules, 'the ruleset is unchanged');
    t.equal(await ok('ps', '-aq'), before.ps, 'no container was left');
    t.equal((await host.exec(['ip', '-br', 'link'])).stdout, before.links, 'no link was left');
  });
});

/** Stops the daemon the CLI started and waits until it is gone. */
async function stopDaemon(cli: Cli): Promise<void> {
  await cli('daemon', '--stop');
  for (let i = 0; i < 100 && (await cli('daemon', '--status')).code === 0; i++) await new Promise((r) => setTimeout(r, 100));
}

t.test('the daemon puts flushed rules back by itself (nft flush ruleset, iptables -t nat -F)', { skip: skipUnlessRoot }, async (t) => {
  for (const backend of ['nftables', 'iptables'] as const) {
    await withPorts(async ({ host, cli, ok, nbr }) => {
      await ok('network', 'create', '--subnet', '10.76.0.0/24', 'pub');
      await ok('run', '-d', '--name', 'web', '--hostname', 'web', '--network', 'pub', '-p', '8080:80', '--', 'node', '-e', SERVER([80]));
      t.equal(await answer(nbr, 'tcp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2', `${backend}: published`);
      t.equal((await cli('daemon', '--status')).code, 0, `${backend}: the daemon runs`);
      // Else its first recovery pass (1 s after it started) may be what puts the rules back.
      await afterFirstRecovery(ok);
      const flush: [string, ...string[]] = backend === 'nftables' ? ['nft', 'flush', 'ruleset'] : ['iptables', '-t', 'nat', '-F'];
      const t0 = Date.now();
      await host.exec(flush);
      let back = '';
      for (let i = 0; i < 100 && back === ''; i++) back = await request(nbr, 'tcp', '192.168.50.1', 8080, 'x', 300).catch(() => '');
      t.equal(back, 'hello x from web to 192.168.50.2', `${backend}: after ${flush.join(' ')} the port answers again without any command`);
      t.comment(`${backend}: answered again ${Date.now() - t0} ms after the flush (the bench measures this)`);
      const status = JSON.parse((await ok('daemon', '--status'))) as { services: { firewall: { restoredEndpoints: number } } };
      t.ok(status.services.firewall.restoredEndpoints >= 1, `${backend}: the daemon says it restored the published ports (${JSON.stringify(status.services.firewall)})`);
    }, backend);
  }
});

t.test('nft flush ruleset: doctor sees it, tsnet firewall reload restores every rule and mapping', { skip: skipUnlessRoot }, async (t) => {
  await withPorts(async ({ host, cli, ok, nbr }) => {
    await ok('network', 'create', '--subnet', '10.74.0.0/24', 'pub');
    await ok('run', '-d', '--name', 'web', '--hostname', 'web', '--network', 'pub', '-p', '8080:80', '-p', '9000-9009:7000-7009/udp', '--', 'node', '-e', SERVER([80, 7005]));
    t.equal(await answer(nbr, 'tcp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2');
    const doctorOk = await cli('doctor');
    t.equal(doctorOk.code, 0, 'doctor: nothing wrong');
    t.match(doctorOk.stdout, /\[ ok \] rules: tsnet's rules match its records \(2 networks, 1 containers with published ports\)/);
    // Without the daemon (which would put the rules back by itself: see the next test).
    await stopDaemon(cli);
    const ruleset = (await host.exec(['nft', 'list', 'table', 'inet', 'tsnet'])).stdout;
    await host.exec(['nft', 'flush', 'ruleset']);
    t.notOk(await reachable(nbr, 'tcp', '192.168.50.1', 8080, 1000), 'after the flush the port is gone');
    const doctorBad = await cli('doctor');
    t.equal(doctorBad.code, 1, 'doctor fails');
    t.match(doctorBad.stdout, /\[FAIL\] rules: the kernel has rules for 0 of 2 networks and 0 of 1 containers .*tsnet firewall reload/);
    t.match(await ok('firewall', 'reload'), /^reloaded: 2 network\(s\) \(bridge, pub\), published ports of 1 container\(s\)$/m);
    t.equal((await host.exec(['nft', 'list', 'table', 'inet', 'tsnet'])).stdout, ruleset, 'the table is exactly what it was');
    t.equal(await answer(nbr, 'tcp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2', 'TCP works again');
    t.equal(await answer(nbr, 'udp', '192.168.50.1', 9005), 'hello x from web to 192.168.50.2', 'and the UDP range');
    t.match(await ok('firewall', 'reload'), /^reloaded: 2 network/, 'reload twice is fine');
    t.equal((await host.exec(['nft', 'list', 'table', 'inet', 'tsnet'])).stdout, ruleset, 'and changes nothing');
    // A ufw-like forward chain with a drop policy: doctor explains it.
    await host.exec(['nft', 'add table ip filter ; add chain ip filter ufw-before-forward ; add chain ip filter FORWARD { type filter hook forward priority 0 ; policy drop ; }']);
    const doctorUfw = await cli('doctor');
    t.match(doctorUfw.stdout, /\[warn\] ufw: ufw is active/);
    t.match(doctorUfw.stdout, /\[ ok \] forward policy: the IPv4 iptables FORWARD policy is DROP .*tsnet accepts its bridges at the head of FORWARD/);
    t.match(doctorUfw.stdout, /\[FAIL\] host firewall: .*let-through rules for 2 network\(s\) \((pub, bridge|bridge, pub)\) are missing/, 'the drop came after the networks (no daemon runs): doctor says they are cut off');
    t.match(await ok('firewall', 'reload'), /^reloaded: 2 network/);
    const doctorFixed = await cli('doctor');
    t.match(doctorFixed.stdout, /\[ ok \] forward policy: .*2 rule\(s\) for 1 network\(s\)|\[ ok \] forward policy: .*4 rule\(s\) for 2 network\(s\)/, '`tsnet firewall reload` put them in FORWARD');
    t.notMatch(doctorFixed.stdout, /\[FAIL\] host firewall/);
  });
});

t.test('the iptables backend: published TCP/UDP from the neighbour and 127.0.0.1, flush and reload', { skip: skipUnlessRoot }, async (t) => {
  await withPorts(async ({ host, cli, ok, nbr }) => {
    await ok('network', 'create', '--subnet', '10.75.0.0/24', 'pub');
    await ok('run', '-d', '--name', 'web', '--hostname', 'web', '--network', 'pub', '-p', '8080:80', '-p', '8080:80/udp', '-p', '127.0.0.1:8081:81', '--', 'node', '-e', SERVER([80, 81]));
    t.equal(await answer(nbr, 'tcp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2', 'TCP from the neighbour');
    t.equal(await answer(nbr, 'udp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2', 'UDP from the neighbour');
    t.match(await answer(host.ns, 'tcp', '127.0.0.1', 8081), /^hello x from web/, '127.0.0.1-published from the host');
    t.notOk(await reachable(nbr, 'tcp', '192.168.50.1', 8081, 1000), '... not from the neighbour');
    await stopDaemon(cli); // it would put the rules back by itself (tested above)
    await host.exec(['iptables', '-t', 'nat', '-F']);
    t.notOk(await reachable(nbr, 'tcp', '192.168.50.1', 8080, 1000), 'after flushing the nat table the port is gone');
    t.match(await ok('firewall', 'reload'), /^reloaded: /);
    t.equal(await answer(nbr, 'tcp', '192.168.50.1', 8080), 'hello x from web to 192.168.50.2', 'restored');
  }, 'iptables');
});
