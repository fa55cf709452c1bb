/**
 * A controller over fakes (netlink, firewall, IPAM memory store, memory state, files in memory):
 * for unit tests of cnm and of everything that sequences it. No root, no kernel.
 */
import { createHash } from 'node:crypto';
import { TsnetError } from '../../core/errors.js';
import { nullLogger } from '../../core/log.js';
import { HOST_NETNS, type NetnsRef } from '../../core/net.js';
import { createController, type CnmChange, type Controller } from '../../cnm/controller.js';
import { createMemoryCnmState, type CnmState } from '../../cnm/state.js';
import { hostsFile } from '../../dns/hosts-file.js';
import { containerResolvConf, parseResolvConf } from '../../dns/resolv-conf.js';
import { createDriverRegistry } from '../../drivers/registry.js';
import { createIpam } from '../../ipam/allocator.js';
import type { Ipam } from '../../ipam/api.js';
import { createMemoryIpamStore } from '../../ipam/memory-store.js';
import { createFakeFirewall, type FakeFirewall } from '../../sys/firewall/fake.js';
import { createFakeNetlink, type FakeNetlink } from '../../sys/netlink/fake.js';
import type { Listener, NetnsManager, PortRange, TcFor } from '../../sys/api.js';
import { fakeTc } from './fake-tc.js';

export interface World {
  readonly controller: Controller;
  readonly kernel: FakeNetlink;
  readonly firewall: FakeFirewall;
  readonly ipam: Ipam;
  readonly state: CnmState;
  readonly files: Map<string, string>;
  readonly namespaces: Map<string, NetnsRef>;
  /** Sockets "host processes" listen on, and the ephemeral range: tests change them. */
  readonly host: { listeners: Listener[]; ephemeral: PortRange };
}

/** Deterministic but well spread hex, so prefixes (netns names, veth names) do not collide. */
export function seededHex(): (bytes: number) => string {
  let counter = 0;
  return (bytes) => {
    counter++;
    let out = '';
    for (let i = 0; out.length < bytes * 2; i++) out += createHash('sha256').update(`${counter}:${i}`).digest('hex');
    return out.slice(0, bytes * 2);
  };
}

/** `tc`: the controller's traffic control (link impairments); without it they are refused. */
export function makeWorld(opts: { readonly hostRoutes?: string[]; readonly onChange?: (e: CnmChange) => Promise<void>; readonly tc?: TcFor } = {}): World {
  const kernel = createFakeNetlink();
  const firewall = createFakeFirewall();
  const state = createMemoryCnmState();
  const files = new Map<string, string>();
  const namespaces = new Map<string, NetnsRef>();
  const randomHex = seededHex();
  const ipam = createIpam({ store: createMemoryIpamStore(), hostRoutes: async () => (opts.hostRoutes ?? []) as never, ulaSeed: 'test' });
  const dir = '/fake/netns';
  const netns: NetnsManager = {
    dir,
    pathOf: (name) => `${dir}/${name}`,
    async create(name, o = {}) {
      if (namespaces.has(name)) throw new TsnetError('ALREADY_EXISTS', `netns ${name} exists`);
      const ref = kernel.addNetns(`${dir}/${name}`);
      namespaces.set(name, ref);
      if (o.sysctls) await kernel.sysctlFor(ref).set(o.sysctls);
      return ref;
    },
    async open(name) {
      const ref = namespaces.get(name);
      if (!ref) throw new TsnetError('NOT_FOUND', `netns ${name}`);
      return ref;
    },
    list: async () => [...namespaces.keys()].sort(),
    async remove(name) {
      const ref = namespaces.get(name);
      if (ref) kernel.removeNetns(ref);
      namespaces.delete(name);
    },
  };
  const tc = fakeTc();
  const drivers = createDriverRegistry({ hostNs: HOST_NETNS, netlink: kernel.netlinkFor, sysctl: kernel.sysctlFor, firewall, log: nullLogger, randomHex, tc: tc.tcFor, withLock: (_n, fn) => fn() });
  const host: World['host'] = { listeners: [], ephemeral: { start: 32768, end: 60999 } as PortRange };
  const hostResolv = parseResolvConf('nameserver 192.0.2.53\nsearch example.test\n');
  const controller = createController({
    state, ipam, drivers, netns, hostNs: HOST_NETNS, netlink: kernel.netlinkFor, owner: { scope: 'testscope', where: '/fake/state' },
    hostPorts: { listeners: async () => [...host.listeners], ephemeralRange: async () => host.ephemeral },
    files: {
      dirFor: (id) => `/fake/sandboxes/${id}`,
      write: async (p, c) => { files.set(p, c); },
      removeDir: async (d) => { for (const k of [...files.keys()]) if (k.startsWith(`${d}/`)) files.delete(k); },
    },
    resolvConf: async (o) => containerResolvConf(hostResolv, undefined, o),
    hostsFile: (self, extra) => hostsFile({ self, extra }),
    log: nullLogger,
    randomHex,
    now: () => new Date(0),
    ...(opts.onChange !== undefined ? { onChange: opts.onChange } : {}),
    sysctl: kernel.sysctlFor,
    ...(opts.tc !== undefined ? { tc: opts.tc } : {}),
  });
  return { controller, kernel, firewall, ipam, state, files, namespaces, host };
}
