/**
 * Runs the firewall benchmark alone:
 *   node scripts/isolate.mjs --enter -- npx tsx bench/firewall.run.ts
 */
import { withIsolatedHost } from '../test/helpers/isolated-host.js';
import { benchFirewall } from './firewall.bench.js';
import { formatSection } from './report.js';

const section = await withIsolatedHost((host) => benchFirewall(host));
process.stdout.write(`${formatSection(section)}\n`);
