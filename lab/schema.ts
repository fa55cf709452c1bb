/**
 * The lab file: a containerlab-shaped subset (`name`, `networks`, `defaults`, `nodes`, `links` with
 * short `"node:if"` and extended endpoints, `mtu`, `impair`), plus what an image-less runtime needs
 * (`rootfs`, `workdir`, `hostname`) and containerlab's `kind: bridge` (a Linux bridge in the host
 * namespace: Mininet's switches). This zod schema checks the shape; lab/spec.ts checks what the
 * shape cannot say (references, addresses, names that must fit) and turns it into a LabSpec. The
 * JSON Schema for editors, lab/lab.schema.json, is generated from it (`npm run lab-schema`).
 */
import { z } from 'zod';

/** Lab and node names: they make container names `LAB-NODE` and bridge names, and DNS names. */
export const LAB_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_-]{0,31}$/;
export const NODE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

const Scalar = z.union([z.string(), z.number(), z.boolean()]);
const Cmd = z.union([z.string().min(1), z.array(z.string()).min(1)]).describe('the command: a string (split like a shell would, no shell runs it) or an argv list');
const Env = z.record(z.string().regex(/^[^=\0]+$/, 'must be a variable name without "=" or NUL'), Scalar).describe('environment variables');
const Sysctls = z.record(z.string().regex(/^net\.[A-Za-z0-9_./-]+$/, 'must be a net.* key (the node\'s network namespace)'), z.union([z.string(), z.number()]))
  .describe('net.* sysctls set in the node\'s namespace after its links are up');
const Exec = z.array(z.string().min(1)).describe('commands run in the node once it and its links are up (split like a shell would)');
const AbsPath = z.string().regex(/^\//, 'must be an absolute path');

const NetworkAttach = z.union([
  z.string().min(1),
  z.strictObject({
    network: z.string().min(1),
    ipv4: z.string().optional().describe('static IPv4 address on the network'),
    ipv6: z.string().optional().describe('static IPv6 address on the network'),
    mac: z.string().optional(),
    aliases: z.array(z.string()).optional().describe('more DNS names on this network (the node name always resolves)'),
  }),
]);

export const NetworkSchema = z.strictObject({
  driver: z.literal('bridge').optional(),
  subnet: z.string().optional().describe('IPv4 subnet (default: one from the pools)'),
  gateway: z.string().optional(),
  'ip-range': z.string().optional(),
  ipv6: z.boolean().optional().describe('dual stack (a ULA /64 unless subnet6 is given)'),
  subnet6: z.string().optional(),
  gateway6: z.string().optional(),
  internal: z.boolean().optional().describe('no traffic out of the network'),
  dns: z.boolean().optional().describe('the embedded resolver (default on)'),
  mtu: z.number().int().optional(),
  options: z.record(z.string(), z.string()).optional().describe('bridge driver options (-o)'),
});

const NodeFields = {
  cmd: Cmd.optional(),
  env: Env.optional(),
  sysctls: Sysctls.optional(),
  exec: Exec.optional(),
  rootfs: AbsPath.optional().describe('root directory (default: the host\'s tree in the node\'s own mount namespace)'),
  workdir: AbsPath.optional(),
};

export const DefaultsSchema = z.strictObject({
  ...NodeFields,
  kind: z.enum(['linux', 'bridge']).optional(),
  networks: z.array(NetworkAttach).optional(),
});

export const NodeSchema = z.strictObject({
  ...NodeFields,
  kind: z.enum(['linux', 'bridge']).optional().describe('linux: a container (default); bridge: a Linux bridge in the host namespace'),
  networks: z.array(NetworkAttach).optional().describe('lab networks the node joins, in order (eth0, eth1...)'),
  ports: z.array(z.string()).optional().describe('published ports, Docker\'s -p forms, on the node\'s first network'),
  hostname: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  bridge: z.string().regex(IFNAME, 'must be an interface name (1-15 of A-Z a-z 0-9 _ . -)').optional().describe('kind bridge: the bridge\'s name (default LAB-NODE)'),
  mtu: z.number().int().optional().describe('kind bridge: the bridge\'s MTU'),
});

const ShortEndpoint = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_-]*:[A-Za-z0-9_.-]{1,15}$/, 'must be "NODE:INTERFACE"');
export const EndpointSchema = z.strictObject({
  node: z.string().min(1),
  interface: z.string().min(1),
  ipv4: z.string().optional().describe('address with prefix length, e.g. 10.0.12.1/30'),
  ipv6: z.string().optional().describe('address with prefix length, e.g. fd00:12::1/64'),
  mac: z.string().optional(),
});

export const ImpairSchema = z.strictObject({
  rate: z.union([z.string(), z.number()]).optional().describe('tbf rate: 10mbit, 1gbit, 500kbit, 1mbps (bytes)'),
  delay: z.union([z.string(), z.number()]).optional().describe('netem delay: 20ms'),
  jitter: z.union([z.string(), z.number()]).optional().describe('netem jitter (with a delay): 2ms'),
  loss: z.union([z.string(), z.number()]).optional().describe('netem loss: 1%'),
}).describe('applied on both ends (what leaves each end)');

export const LinkSchema = z.strictObject({
  endpoints: z.tuple([z.union([ShortEndpoint, EndpointSchema]), z.union([ShortEndpoint, EndpointSchema])]),
  mtu: z.number().int().optional(),
  impair: ImpairSchema.optional(),
});

export const LabFileSchema = z.strictObject({
  name: z.string().regex(LAB_NAME, 'must be 1-32 of a-z A-Z 0-9 _ - (starting with a letter or digit)'),
  networks: z.record(z.string().regex(NODE_NAME, 'must be a name of a-z A-Z 0-9 _ -'), NetworkSchema).optional(),
  defaults: DefaultsSchema.optional(),
  nodes: z.record(z.string().regex(NODE_NAME, 'must be a name of a-z A-Z 0-9 _ - (at most 63)'), NodeSchema),
  links: z.array(LinkSchema).optional(),
});
export type LabFile = z.infer<typeof LabFileSchema>;
export type NodeFile = z.infer<typeof NodeSchema>;
export type NetworkFile = z.infer<typeof NetworkSchema>;
export type LinkFile = z.infer<typeof LinkSchema>;

/** lab/lab.schema.json's text (what `npm run lab-schema` writes; a test checks the file is current). */
export function labJsonSchemaText(): string {
  const schema = z.toJSONSchema(LabFileSchema, { target: 'draft-2020-12', io: 'input' });
  return `${JSON.stringify({ ...schema, title: 'tsnet lab file' }, null, 2)}\n`;
}
