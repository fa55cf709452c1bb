#!/usr/bin/env node
// Inside a container: polls NAME until it resolves and PORT on it accepts a connection, then
// prints the wall-clock time (ms) it did; exit 1 after TIMEOUT_MS. Used by bench/multihost.
import dns from 'node:dns/promises';
import net from 'node:net';

const [name, port, timeout = '10000'] = process.argv.slice(2);
const end = Date.now() + Number(timeout);
const tryOnce = async () => {
  const { address } = await dns.lookup(name, { family: 4 });
  await new Promise((resolve, reject) => {
    const s = net.connect({ host: address, port: Number(port) }, () => { s.destroy(); resolve(); });
    s.on('error', reject);
    s.setTimeout(200, () => { s.destroy(); reject(new Error('timeout')); });
  });
};
for (;;) {
  try {
    await tryOnce();
    process.stdout.write(`${Date.now()}\n`);
    process.exit(0);
  } catch {
    if (Date.now() > end) process.exit(1);
    await new Promise((r) => setTimeout(r, 5));
  }
}
