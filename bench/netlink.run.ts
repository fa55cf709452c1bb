/**
 * Runs the netlink benchmark alone:
 *   node scripts/isolate.mjs --enter -- npx tsx bench/netlink.run.ts [N]
 */
import { withIsolatedHost } from '../test/helpers/isolated-host.js';
import { benchNetlink } from './netlink.bench.js';
import { formatSection } from './report.js';

const n = Number(process.argv[2] ?? 50);
const section = await withIsolatedHost((host) => benchNetlink(host, { n }));
process.stdout.write(`${formatSection(section)}\n`);
