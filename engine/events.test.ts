import t from 'tap';
import { makeWorld } from '../test/helpers/cnm-world.js';
import { withNetworkEvents, type DockerEvent } from './events.js';

t.test('network events: two removals of one sandbox at once report its endpoint once', async (t) => {
  const w = makeWorld();
  const seen: DockerEvent[] = [];
  const c = withNetworkEvents(w.controller, { emit: (e) => void seen.push(e), flush: async () => undefined }, () => new Date());
  await c.ensurePredefined();
  const sb = await c.createSandbox({ name: 'twice', mode: { kind: 'network', network: 'bridge' } });
  t.same(seen.map((e) => e.Action), ['connect']);
  // As when a container's exit is seen by `stop` and by the daemon: both remove its sandbox.
  await Promise.all([c.deleteSandbox(sb.record.id), c.deleteSandbox(sb.record.id)]);
  t.same(seen.map((e) => e.Action), ['connect', 'disconnect'], 'one disconnect, not one per remover');
});
