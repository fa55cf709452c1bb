#!/usr/bin/env node
// Tiny traffic endpoints for privileged tests, started inside a namespace with nsenter:
//   tcp-server HOST PORT        prints "listening", answers each connection with
//                               "hello <line> from <local addr> to <remote addr>\n" and closes
//   udp-server HOST PORT        prints "listening", answers each datagram the same way
//   tcp-client HOST PORT MSG [TIMEOUT_MS]   prints the reply; exit 1 on failure/timeout
//   udp-client HOST PORT MSG [TIMEOUT_MS]
// Only ever used against addresses inside namespaces a test created, or loopback.
import net from 'node:net';
import dgram from 'node:dgram';

const [mode, host, portStr, msg = 'ping', timeoutStr = '3000'] = process.argv.slice(2);
const port = Number(portStr);
const timeout = Number(timeoutStr);
const strip = (a) => (a ?? '').replace(/^::ffff:/, '');

switch (mode) {
  case 'tcp-server': {
    const srv = net.createServer((sock) => {
      sock.setEncoding('utf8');
      let buf = '';
      sock.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) sock.end(`hello ${buf.trim()} from ${strip(sock.localAddress)} to ${strip(sock.remoteAddress)}\n`);
      });
      sock.on('error', () => undefined);
    });
    srv.listen({ host, port, ipv6Only: host.includes(':') }, () => console.log('listening'));
    break;
  }
  case 'udp-server': {
    const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    sock.on('message', (m, rinfo) => {
      sock.send(`hello ${m.toString().trim()} from ${host} to ${strip(rinfo.address)}\n`, rinfo.port, rinfo.address);
    });
    sock.bind(port, host, () => console.log('listening'));
    break;
  }
  case 'tcp-client': {
    const timer = setTimeout(() => { console.error('timeout'); process.exit(1); }, timeout);
    const sock = net.connect({ host, port }, () => sock.write(`${msg}\n`));
    let out = '';
    sock.setEncoding('utf8');
    sock.on('data', (d) => { out += d; });
    sock.on('end', () => { clearTimeout(timer); process.stdout.write(out); process.exit(out ? 0 : 1); });
    sock.on('error', (e) => { clearTimeout(timer); console.error(e.message); process.exit(1); });
    break;
  }
  case 'udp-client': {
    const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => { console.error('timeout'); process.exit(1); }, timeout);
    sock.on('message', (m) => { clearTimeout(timer); process.stdout.write(m.toString()); process.exit(0); });
    sock.on('error', (e) => { clearTimeout(timer); console.error(e.message); process.exit(1); });
    sock.send(`${msg}\n`, port, host);
    break;
  }
  default:
    console.error(`unknown mode ${mode}`);
    process.exit(64);
}
