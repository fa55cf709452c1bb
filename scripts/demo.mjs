#!/usr/bin/env node
// `npm run demo`: builds tsnet, then, inside a throwaway namespace that plays the host (safe on
// any machine), creates a network, runs a web server (port 80 published on 8080) and a client
// container on it, shows the client reaching the server BY NAME (the embedded DNS resolver on the
// network's gateway, started on demand) and the host reaching the published port,
// shows `tsnet network inspect`, removes everything and proves that nothing is left (links,
// addresses, routes, namespaces, firewall rules, records).
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

if (process.env.TSNET_ISOLATED !== '1') {
  if (process.getuid?.() !== 0) {
    console.error('demo: needs root (it creates namespaces, bridges and firewall rules inside a throwaway namespace)');
    process.exit(77);
  }
  execFileSync(process.execPath, [`${root}/scripts/build.mjs`], { stdio: 'inherit' });
  const r = spawnSync(process.execPath, [`${root}/scripts/isolate.mjs`, '--enter', '--', process.execPath, fileURLToPath(import.meta.url)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

// The binary itself, as a user runs it (its #! line drops NODE_EXTRA_CA_CERTS: tsnet makes no TLS
// connections, and that variable costs every Node start ~50-80 ms).
const tsnet = [`${root}/dist/tsnet.js`];
const show = (argv) => argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)).join(' ');
function step(args, { quiet = false } = {}) {
  console.log(`\n$ tsnet ${show(args)}`);
  const r = spawnSync(tsnet[0], [...tsnet.slice(1), ...args], { encoding: 'utf8' });
  if (!quiet) process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  if (r.status !== 0) {
    console.error(`demo: step failed with exit code ${r.status}`);
    process.exit(1);
  }
  return r.stdout;
}
function snapshot() {
  const sh = (...a) => execFileSync(a[0], a.slice(1), { encoding: 'utf8', env: { PATH } });
  const links = JSON.parse(sh('ip', '-json', 'link', 'show')).map((l) => `${l.ifname} ${l.operstate}`).sort();
  const addrs = JSON.parse(sh('ip', '-json', 'addr', 'show')).flatMap((l) => l.addr_info.map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`)).filter((a) => !a.includes(' fe80::')).sort();
  // IPv6 link-local addresses/routes appear by themselves on the default bridge the first time it
  // gets carrier (a kernel behaviour, not a leftover): they are left out of the comparison.
  const ll = (s) => s.includes('fe80::') || s.startsWith('ff00::/8');
  const routes = JSON.parse(sh('ip', '-json', '-6', 'route', 'show', 'table', 'all')).concat(JSON.parse(sh('ip', '-json', '-4', 'route', 'show', 'table', 'all')))
    .map((r) => `${r.dst} ${r.dev ?? ''} ${r.table ?? ''}`).filter((r) => !ll(r)).sort();
  const rules = sh('nft', 'list', 'ruleset').split('\n').filter((l) => /elements|ip saddr|ip daddr|oifname|iifname/.test(l)).map((l) => l.trim()).sort();
  const netns = existsSync('/run/tsnet/netns') ? readdirSync('/run/tsnet/netns').sort() : [];
  const recordDirs = ['endpoints', 'sandboxes', 'containers'].map((c) => `${c}: ${existsSync(`/run/tsnet/state/${c}`) ? readdirSync(`/run/tsnet/state/${c}`).filter((f) => f.endsWith('.json')).length : 0}`);
  return { links, addrs, routes, rules, netns, recordDirs };
}

console.log('tsnet demo: everything below runs inside a throwaway network namespace playing "host".');
step(['network', 'ls']); // creates the predefined networks (bridge/tsnet0, host, none)
const before = snapshot();
step(['network', 'create', '--subnet', '10.123.0.0/24', 'demo-net']);
const server = "require('http').createServer((q,s)=>s.end('hello from '+require('os').hostname()+' to '+q.socket.remoteAddress+'\\n')).listen(80)";
step(['run', '-d', '--name', 'web', '--hostname', 'web', '--network', 'demo-net', '-p', '8080:80', '--', 'node', '-e', server]);
const ip = JSON.parse(step(['inspect', 'web'], { quiet: true }))[0].NetworkSettings.Networks['demo-net'].IPAddress;
console.log(`(web's address on demo-net: ${ip})`);
// By name: the container's resolv.conf points at the gateway, where the tsnet daemon answers.
const client = `require('dns').lookup('web',(e,a)=>{if(e){console.error(e.message);process.exit(1)}console.log('web resolves to '+a);require('http').get('http://web/',r=>r.pipe(process.stdout)).on('error',e=>{console.error(e.message);process.exit(1)})})`;
// The server may take a moment to listen: retry a few times, bounded.
let reply = '';
for (let i = 0; i < 20 && reply === ''; i++) {
  const r = spawnSync(tsnet[0], [...tsnet.slice(1), 'run', '--rm', '--name', `client${i}`, '--network', 'demo-net', '--', 'node', '-e', client], { encoding: 'utf8' });
  if (r.status === 0) {
    console.log(`\n$ tsnet run --rm --name client --network demo-net -- node -e "${client}"`);
    reply = r.stdout;
    process.stdout.write(reply);
  } else spawnSync('sleep', ['0.2']);
}
if (!reply.includes(`web resolves to ${ip}`) || !reply.includes('hello from web')) {
  console.error('demo: the client did not reach the server by name');
  process.exit(1);
}
// The published port, from the host: DNAT in the kernel, no proxy process.
console.log('\n$ node -e "http.get(\'http://127.0.0.1:8080/\')"   # from the host, through the published port');
const viaHost = spawnSync(process.execPath, ['-e', "require('http').get('http://127.0.0.1:8080/',r=>r.pipe(process.stdout)).on('error',e=>{console.error(e.message);process.exit(1)})"], { encoding: 'utf8' });
process.stdout.write(viaHost.stdout);
if (!viaHost.stdout.startsWith('hello from web')) {
  console.error(`demo: the published port did not answer: ${viaHost.stderr}`);
  process.exit(1);
}
step(['ps']);
step(['network', 'inspect', 'demo-net']);
step(['rm', '-f', 'web']);
step(['network', 'rm', 'demo-net']);
step(['ps', '-a']);
step(['daemon', '--stop']);
const after = snapshot();
const diff = Object.keys(before).flatMap((k) => {
  const b = new Set(before[k]);
  const a = new Set(after[k]);
  return [...[...a].filter((x) => !b.has(x)).map((x) => `+ ${k}: ${x}`), ...[...b].filter((x) => !a.has(x)).map((x) => `- ${k}: ${x}`)];
});
console.log('\nState compared with before the demo (links, addresses, routes, firewall rules, namespaces, records):');
if (diff.length > 0) {
  console.log(diff.join('\n'));
  console.error('demo: something was left behind');
  process.exit(1);
}
console.log(`nothing left: ${before.links.length} links, ${before.addrs.length} addresses, ${before.routes.length} routes, ${before.rules.length} rule lines, ${before.netns.length} namespaces, records ${before.recordDirs.join(', ')} — identical.`);
console.log('\ndemo: ok');
