/** The Go-template subset of Docker's --format, against the forms Docker's documentation shows. */
import t from 'tap';
import { formatEach, formatList, goMap, parseTemplate, tabwrite } from './template.js';

const run = (src: string, data: unknown): string => parseTemplate(src).execute(data);

const container = {
  Name: '/Web',
  Args: ['-c', 'sleep 5'],
  State: { Status: 'running', Running: true, Pid: 4242, ExitCode: 0 },
  Config: { Labels: goMap({ 'com.example.team': 'net' }), Env: ['PATH=/bin', 'A=1'] },
  NetworkSettings: {
    Ports: goMap({ '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }], '53/udp': null }),
    Networks: goMap({ lab: { IPAddress: '10.20.0.2', MacAddress: '02:42:0a:14:00:02' }, app: { IPAddress: '10.30.0.5', MacAddress: '02:42:0a:1e:00:05' } }),
  },
};

t.test('the functions of "Format command and log output"', async (t) => {
  t.equal(run('{{join .Args " , "}}', container), '-c , sleep 5', 'join');
  t.equal(run('{{json .State}}', container), '{"Status":"running","Running":true,"Pid":4242,"ExitCode":0}', 'json');
  t.equal(run('{{lower .Name}}', container), '/web', 'lower');
  t.equal(run('{{upper .Name}}', container), '/WEB', 'upper');
  t.equal(run('{{title .State.Status}}', container), 'Running', 'title');
  t.equal(run('{{split (join .Args "/") "/"}}', container), '[-c sleep 5]', 'split of a parenthesised join prints a Go list');
  t.equal(run('{{range .NetworkSettings.Networks}}{{println .IPAddress}}{{end}}', container), '10.30.0.5\n10.20.0.2\n', 'println in range (map keys in order)');
  t.equal(run('{{json .}}', { a: 1 }), '{"a":1}', '{{json .}}');
  t.equal(run('{{pad .State.Status 1 2}}|', container), ' running  |', 'pad');
  t.equal(run('{{truncate .Name 3}}', container), '/We', 'truncate');
});

t.test('the forms of docker inspect\'s examples', async (t) => {
  t.equal(run('{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', container), '10.30.0.510.20.0.2', 'IP addresses');
  t.equal(run('{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}', container), '02:42:0a:1e:00:0502:42:0a:14:00:02', 'MAC addresses');
  t.equal(
    run('{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}', { NetworkSettings: { Ports: goMap({ '80/tcp': [{ HostIp: '', HostPort: '8080' }] }) } }),
    ' 80/tcp -> 8080 ', 'range $p, $conf with (index ...).Field',
  );
  t.equal(run('{{(index .NetworkSettings.Ports "80/tcp" 0).HostPort}}', container), '8080', 'index with a map key and a list index');
  t.equal(run('{{json .Config}}', { Config: { Hostname: 'h' } }), '{"Hostname":"h"}', 'a section as JSON');
  t.equal(run('{{.State.Pid}}', container), '4242', 'nested path');
  t.equal(run('{{.State.Pid | json}}', container), '4242', 'pipe into json');
  t.equal(run('{{.Name | lower | upper}}', container), '/WEB', 'a chain of pipes');
  t.equal(run('{{index .Config.Labels "com.example.team"}}', container), 'net', 'index of a label with dots');
  t.equal(run('{{.Config.Labels.missing}}', container), '<no value>', 'a missing map key is <no value>');
  t.equal(run('{{.Config.Labels}}', container), 'map[com.example.team:net]', 'a map prints as Go does');
});

t.test('control structures, variables, comparisons', async (t) => {
  t.equal(run('{{if .State.Running}}up{{else}}down{{end}}', container), 'up', 'if/else');
  t.equal(run('{{if eq .State.Status "exited"}}x{{else if eq .State.Status "running"}}r{{else}}?{{end}}', container), 'r', 'else if and eq');
  t.equal(run('{{if and .State.Running (gt .State.Pid 1)}}yes{{end}}', container), 'yes', 'and with a comparison');
  t.equal(run('{{if or .Missing2 .State.Running}}y{{end}}', goMap({ State: { Running: true } })), 'y', 'or');
  t.equal(run('{{if not .State.ExitCode}}ok{{end}}', container), 'ok', 'not of zero');
  t.equal(run('{{with .State}}{{.Pid}}{{end}}', container), '4242', 'with');
  t.equal(run('{{with .Config.Labels.none}}x{{else}}none{{end}}', container), 'none', 'with/else');
  t.equal(run('{{range .Args}}[{{.}}]{{else}}empty{{end}}', { Args: [] }), 'empty', 'range/else');
  t.equal(run('{{range $i, $a := .Args}}{{$i}}={{$a}};{{end}}', container), '0=-c;1=sleep 5;', 'range with index');
  t.equal(run('{{$n := .Name}}{{range .Args}}{{$n}}{{end}}', container), '/Web/Web', 'a variable seen inside range');
  t.equal(run('{{range .Args}}{{$.Name}}{{end}}', container), '/Web/Web', '$ is the top');
  t.equal(run('{{len .Args}} {{len .Name}}', container), '2 4', 'len');
  t.equal(run('{{printf "%s has pid %d" .Name .State.Pid}}', container), '/Web has pid 4242', 'printf');
  t.equal(run('{{printf "%-6s|" "ab"}}', {}), 'ab    |', 'printf width');
  t.equal(run('a {{- " b " -}} c', {}), 'a b c', 'trim markers');
  t.equal(run('{{/* a comment */}}x', {}), 'x', 'comment');
  t.equal(run('{{.Label "k"}}', { Label: (k: string) => `v-${k}` }), 'v-k', 'a method with an argument');
});

t.test('errors name what is wrong', async (t) => {
  t.throws(() => run('{{.Nope}}', container), /can't evaluate field Nope/, 'unknown field of a struct');
  t.throws(() => parseTemplate('{{.Name'), /unclosed action/, 'unclosed action');
  t.throws(() => parseTemplate('{{if .A}}x'), /missing \{\{end\}\}/, 'missing end');
  t.throws(() => run('{{nosuch .Name}}', container), /function "nosuch" not defined/, 'unknown function');
  t.throws(() => parseTemplate('{{end}}'), /unexpected \{\{end\}\}/, 'stray end');
  t.throws(() => run('{{.Name.X}}', container), /can't evaluate field X in type string/, 'field of a string');
});

t.test('table and json list formats (docker ps / network ls)', async (t) => {
  const rows = [{ ID: 'abc', Names: 'web', Status: 'Up 5 seconds' }, { ID: 'defdefdefdef', Names: 'db', Status: 'Exited (1) 2 minutes ago' }];
  const headers = { ID: 'CONTAINER ID', Names: 'NAMES', Status: 'STATUS' };
  const table = formatList(rows, 'table {{.ID}}\\t{{.Names}}', { defaultTable: '', headers, json: (x) => x });
  t.equal(table, 'CONTAINER ID   NAMES\nabc            web\ndefdefdefdef   db\n', 'header row and columns aligned like Docker (padding 3)');
  t.equal(formatList(rows, '{{.ID}}: {{.Names}}', { defaultTable: '', headers, json: (x) => x }), 'abc: web\ndefdefdefdef: db\n', 'a template without table: one line each, no header');
  t.equal(formatList(rows, 'json', { defaultTable: '', headers, json: (x) => x }), `${JSON.stringify(rows[0])}\n${JSON.stringify(rows[1])}\n`, 'json: one object per line');
  t.equal(formatList(rows, 'table', { defaultTable: '{{.Names}}\t{{.Status}}', headers, json: (x) => x }), 'NAMES     STATUS\nweb       Up 5 seconds\ndb        Exited (1) 2 minutes ago\n', 'table alone: the default columns (min width 10)');
  t.equal(tabwrite(['a\tb\tc', 'aaaaaaaaaaaa\tb']), 'a              b         c\naaaaaaaaaaaa   b\n', 'tabwriter semantics');
  t.equal(formatEach([container], '{{.State.Pid}}'), '4242\n', 'inspect --format, one line per object');
});
