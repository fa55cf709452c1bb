import t from 'tap';
import type { IfName } from '../../core/net.js';
import type { Argv, RunOptions, RunResult } from '../exec.js';
import { createFirewalld, firewalldArgv, firewalldNames, NOT_RUNNING, parseDbusStrings, planFirewalld, type FirewalldState } from './firewalld.js';
import { goldenIn } from '../../test/helpers/golden.js';

const golden = goldenIn('firewall');
const BR = 'br-lab' as IfName;
const N = firewalldNames('tsnet');
const BUS = 'unix:path=/run/dbus/system_bus_socket';
const FRESH: FirewalldState = { running: true, zone: false, policy: false, interfaces: [] };
const READY: FirewalldState = { running: true, zone: true, policy: true, interfaces: [] };

t.test('planFirewalld: zone and policy once, bridges bound and unbound (golden)', async (t) => {
  const cases: Record<string, ReturnType<typeof planFirewalld>> = {
    fresh: planFirewalld(FRESH, { bind: [BR] }),
    ready: planFirewalld(READY, { bind: [BR] }),
    unbind: planFirewalld({ ...READY, interfaces: [BR] }, { unbind: [BR] }),
  };
  for (const [name, steps] of Object.entries(cases)) {
    const text = steps.flatMap((s) => firewalldArgv(N, BUS, s).map((a) => a.join(' '))).join('\n');
    await golden(t, `firewalld-${name}.txt`, `${text}\n`);
  }
  t.same(cases['fresh']?.map((s) => s.kind), ['create-zone', 'create-policy', 'reload', 'bind'], 'a fresh firewalld: zone, policy, reload, then the binding');
  t.same(cases['ready']?.map((s) => s.kind), ['bind'], 'zone and policy there: only the binding (one dbus-send)');
  t.same(planFirewalld({ ...READY, interfaces: [BR] }, { bind: [BR] }), [], 'already bound: nothing');
  t.same(planFirewalld(NOT_RUNNING, { bind: [BR], unbind: [BR] }), [], 'no firewalld: nothing');
  t.same(planFirewalld(READY, { unbind: [BR] }), [], 'not bound: nothing to unbind');
  t.same(planFirewalld({ running: true, zone: true, policy: false, interfaces: [BR] }, { bind: [BR] }).map((s) => s.kind), ['create-policy', 'reload'], 'a policy someone deleted comes back');
  t.notOk(Object.values(cases).flat().flatMap((s) => firewalldArgv(N, BUS, s)).some((a) => a.some((x) => /--(add|remove)-(service|port|rich-rule|masquerade)|--set-default-zone|public|trusted|--panic/.test(x))), 'nothing outside tsnet\'s own zone and policy');
});

t.test('parseDbusStrings', async (t) => {
  const out = 'method return time=1.2 sender=:1.2 -> destination=:1.9 serial=9 reply_serial=2\n   array [\n      string "block"\n      string "tsnet"\n   ]\n';
  t.same(parseDbusStrings(out), ['block', 'tsnet']);
  t.same(parseDbusStrings('method return ...\n'), []);
});

/** firewalld as a scripted D-Bus: getZones, getPolicies, getInterfaces answered from `s`. */
function fakeBus(s: FirewalldState | 'absent') {
  const calls: string[] = [];
  const exec = async (argv: Argv, opts: RunOptions): Promise<RunResult> => {
    calls.push(`${argv.join(' ')} [${opts.env?.['DBUS_SYSTEM_BUS_ADDRESS'] ?? ''}]`);
    if (s === 'absent') throw Object.assign(new Error('Error org.freedesktop.DBus.Error.ServiceUnknown: The name org.fedoraproject.FirewallD1 was not provided by any .service files'));
    const arr = (xs: readonly string[]): string => `method return\n   array [\n${xs.map((x) => `      string "${x}"\n`).join('')}   ]\n`;
    const m = argv.find((a) => a.startsWith('org.fedoraproject.FirewallD1.')) ?? '';
    if (m.endsWith('zone.getZones')) return { stdout: arr(['public', ...(s.zone ? ['tsnet'] : [])]), stderr: '' };
    if (m.endsWith('policy.getPolicies')) return { stdout: arr(['allow-host-ipv6', ...(s.policy ? ['tsnet-forwarding'] : [])]), stderr: '' };
    if (m.endsWith('zone.getInterfaces')) return { stdout: arr(s.interfaces), stderr: '' };
    return { stdout: '', stderr: '' };
  };
  return { exec, calls };
}

t.test('createFirewalld: reads over D-Bus, writes only what the plan says', async (t) => {
  const bus = 'unix:abstract=tsnet-test-bus'; // no socket file to look for: asked directly
  const absent = fakeBus('absent');
  const fa = createFirewalld({ netns: { kind: 'host' }, name: 'tsnet', systemBus: bus, exec: absent.exec });
  t.same(await fa.read({}), NOT_RUNNING, 'nobody owns the name: not running');
  await fa.ensure(BR, {});
  t.equal(absent.calls.filter((c) => !/get(Zones|Policies|Interfaces)/.test(c)).length, 0, 'and nothing written');

  const ready = fakeBus({ ...READY, interfaces: ['br-old'] });
  const fr = createFirewalld({ netns: { kind: 'host' }, name: 'tsnet', systemBus: bus, exec: ready.exec });
  const st = await fr.read({});
  t.same(st, { running: true, zone: true, policy: true, interfaces: ['br-old'] });
  t.same(fr.blocked(st, [BR, 'br-old' as IfName]), [BR], 'an unbound bridge is blocked');
  await fr.ensure(BR, {});
  t.match(ready.calls.at(-1), /^dbus-send --bus=unix:abstract=tsnet-test-bus --print-reply --dest=org\.fedoraproject\.FirewallD1 \/org\/fedoraproject\/FirewallD1 org\.fedoraproject\.FirewallD1\.zone\.changeZoneOfInterface string:tsnet string:br-lab \[unix:abstract=tsnet-test-bus\]$/, 'one dbus-send binds it, on the configured bus');
  t.notOk(ready.calls.some((c) => c.startsWith('firewall-cmd')), 'no firewall-cmd when zone and policy exist');

  const missing = createFirewalld({ netns: { kind: 'host' }, name: 'tsnet', systemBus: 'unix:path=/nonexistent/tsnet-test/bus', exec: absent.exec });
  absent.calls.length = 0;
  t.same(await missing.read({}), NOT_RUNNING, 'no socket file: not running');
  t.same(absent.calls, [], 'without starting a process');
});
