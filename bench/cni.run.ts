// A quick run of the CNI benchmark with small counts: node --import tsx bench/cni.run.ts [n crowd parallel]
import { withIsolatedHost } from '../test/helpers/isolated-host.js';
import { benchCni } from './cni.bench.js';
import { formatSection } from './report.js';

const [n, crowd, parallel] = process.argv.slice(2).map(Number);
const section = await withIsolatedHost((host) => benchCni(host, { n: n || 10, crowd: crowd || 20, parallel: parallel || 20 }));
process.stdout.write(`${formatSection(section)}\n`);
