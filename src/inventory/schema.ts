/**
 * The inventory's shape, defaults and per-field rules, as one zod schema. The typed
 * `Inventory` and the shipped JSON Schema (schema/inventory.schema.json) both come from it.
 * Rules that relate several fields live in lint.ts.
 *
 * Messages follow a convention that format.ts understands: "message\nhint".
 */
import { z } from 'zod';
import { HOST_RE, NAME_RE } from './patterns.js';

export { HOST_RE, NAME_RE };

export const withHint = (message: string, hint: string): string => `${message}\n${hint}`;

const USER_RE = /^[a-z_][a-z0-9_.-]*$/i;
const JUMP_RE = /^(?:[a-z_][a-z0-9_.-]*@)?[A-Za-z0-9.-]+(?::\d{1,5})?$/i;
const PATH_RE = /^[^\0\n\r]+$/;
const ABS_DIR_RE = /^\/[A-Za-z0-9._/-]+$/;
const IMAGE_RE = /^[a-z0-9][a-z0-9._/-]*(?::[0-9]+)?(?:\/[a-z0-9][a-z0-9._/-]*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;
const TZ_RE = /^[A-Za-z0-9_+\-/]+$/;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SERVER_NAME_RE = /^[A-Za-z0-9.*_-]+(?: [A-Za-z0-9.*_-]+)*$/;
const PERCENT_RE = /^([1-9][0-9]?|100)%$/;

const name = z
  .string()
  .regex(NAME_RE, withHint('should match [a-z0-9][a-z0-9-]*', 'use lower-case letters, digits and dashes, starting with a letter or digit'));

const host = z
  .string()
  .regex(HOST_RE, withHint('should be a host name or an IP address', 'write the address the operator\'s machine reaches the host at, e.g. 10.0.0.12'));

const port = z
  .number()
  .int(withHint('should be a port number from 1 to 65535', 'write a whole number'))
  .min(1, withHint('should be a port number from 1 to 65535', 'write a whole number'))
  .max(65535, withHint('should be a port number from 1 to 65535', 'write a whole number'));

const positiveInt = (what: string) =>
  z
    .number()
    .int(withHint(`should be a whole number of ${what}`, 'drop the fraction'))
    .min(1, withHint(`should be at least 1 ${what.replace(/s$/, '')}`, 'write a positive whole number'));

const nonNegativeInt = (what: string) =>
  z
    .number()
    .int(withHint(`should be a whole number of ${what}`, 'drop the fraction'))
    .min(0, withHint(`should not be negative`, `write 0 or more ${what}`));

const filePath = z.string().regex(PATH_RE, withHint('should be a file path on one line', 'remove the line break'));

/** Keys of `ssh:`: set at the top for every host, and any node (or the balancer) may override any of them. */
const sshShape = {
  user: z.string().regex(USER_RE, withHint('should be a user name', 'e.g. root or deploy')),
  port,
  identityFile: filePath,
  knownHostsFile: filePath,
  jumpHost: z
    .string()
    .regex(JUMP_RE, withHint('should be user@host[:port]', 'e.g. ops@bastion.example.com')),
  sudo: z.boolean(),
};

export const sshOverridesSchema = z.strictObject(sshShape).partial();

/**
 * The top-level `ssh:`. No key has a default here: remote/ssh-config.ts tells "the inventory says
 * so" (which wins) from "nobody says", where ~/.ssh/config, then the built-in defaults, apply.
 */
export const sshSchema = z
  .strictObject({
    ...sshOverridesSchema.shape,
    /** Left out: ~/.ssh/config if it exists; false: no ssh config at all. */
    configFile: z
      .union([z.literal(false), filePath], {
        error: withHint('should be a file path or false', 'e.g. ~/.ssh/config, or false to ignore any ssh config'),
      })
      .optional(),
  })
  .prefault({});

export const nodeSchema = z.strictObject({
  name,
  host,
  role: z
    .enum(['master', 'slave'], { error: withHint('should be master or slave', 'leave it out for a slave') })
    .default('slave'),
  weight: positiveInt('weight units').default(1),
  ssh: sshOverridesSchema.optional(),
});

/** Extra environment values: YAML scalars are accepted and rendered as text. */
const envValue = z
  .union([z.string(), z.number(), z.boolean()], { error: withHint('should be a text value', 'quote it: "value"') })
  .transform(String);

export const clusterSchema = z.strictObject({
  name,
  image: z
    .string()
    .regex(IMAGE_RE, withHint('should be an image reference', 'e.g. calciumion/new-api:v0.9.20')),
  port: port.default(3000),
  dir: z
    .string()
    .regex(ABS_DIR_RE, withHint('should be an absolute folder path', 'e.g. /opt/new-api (letters, digits, . _ - and /)'))
    .refine((d) => d !== '/' && !d.split('/').includes('..'), withHint('should be a folder of its own', 'e.g. /opt/new-api'))
    .default('/opt/new-api'),
  timezone: z.string().regex(TZ_RE, withHint('should be a time zone name', 'e.g. Asia/Shanghai or UTC')).default('UTC'),
  frontendBaseUrl: z
    .url({ protocol: /^https?$/, error: withHint('should be an http(s) URL', 'e.g. https://api.example.com') })
    .optional(),
  syncFrequency: positiveInt('seconds').default(60),
  batchUpdate: z
    .strictObject({
      enabled: z.boolean().default(false),
      interval: positiveInt('seconds').default(5),
    })
    .prefault({}),
  env: z.record(z.string(), envValue).default({}),
});

export const databaseSchema = z.strictObject({
  dsn: z.string().min(1, withHint('required', 'e.g. ${SQL_DSN}, set in .newapi-cluster.env')),
  logDsn: z.string().optional(),
});

export const redisSchema = z.strictObject({
  url: z.string().min(1, withHint('required', 'e.g. ${REDIS_CONN_STRING}, set in .newapi-cluster.env')),
  poolSize: positiveInt('connections').default(10),
});

const secret = z
  .string()
  .refine((v) => v !== 'random_string', withHint('is the literal "random_string", which New API refuses to start with', 'generate one: openssl rand -hex 32 (or run newapi-cluster init)'))
  .refine((v) => v === 'random_string' || v.length >= 32, withHint('should be at least 32 characters', 'generate one: openssl rand -hex 32 (or run newapi-cluster init)'));

export const secretsSchema = z.strictObject({
  sessionSecret: secret,
  cryptoSecret: secret,
});

const IP_RE = /^(?:\d{1,3}(?:\.\d{1,3}){3}|(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:)[0-9A-Fa-f:.]+)$/;
const IFACE_RE = /^[A-Za-z0-9_.:@-]{1,15}$/;

export const tlsSchema = z.strictObject({
  certificateFile: filePath.optional(),
  keyFile: filePath.optional(),
  acme: z
    .strictObject({
      email: z.email({ error: withHint('should be an e-mail address', 'the CA writes there about expiring certificates') }),
      directoryUrl: z.url({ protocol: /^https$/, error: withHint('should be the https URL of the CA\'s ACME directory', "e.g. https://acme-v02.api.letsencrypt.org/directory") }),
      caFile: filePath.nullable().default(null),
    })
    .optional(),
  listen: port.default(443),
  redirectHttp: z.boolean().default(true),
});

export const loadBalancerSchema = z
  .strictObject({
    type: z.enum(['nginx', 'none'], { error: withHint('should be nginx or none', 'none prints the upstream instead of pushing it') }).default('nginx'),
    host: host.optional(),
    hosts: z.array(host).min(1, withHint('should list at least one host', 'or leave hosts out and write host: …')).optional(),
    vip: z.string().regex(IP_RE, withHint('should be an IP address', 'the floating address clients use, e.g. 10.0.0.100')).optional(),
    vipInterface: z.string().regex(IFACE_RE, withHint('should be a network interface name', 'e.g. eth0; leave it out to use the interface that routes to the vip')).optional(),
    tls: tlsSchema.optional(),
    listen: port.default(80),
    serverName: z
      .string()
      .regex(SERVER_NAME_RE, withHint('should be nginx server names separated by spaces', 'e.g. api.example.com or _'))
      .default('_'),
    configPath: z
      .string()
      .regex(/^\/[A-Za-z0-9._/-]+\.conf$/, withHint('should be an absolute path ending in .conf', 'e.g. /etc/nginx/conf.d/new-api.conf'))
      .default('/etc/nginx/conf.d/new-api.conf'),
    ssh: sshOverridesSchema.optional(),
  })
  .prefault({});

/** A command run on the operator's machine by `sh -c`, in the inventory's folder. */
const hookCommand = z
  .string()
  .regex(/^[^\0\n\r]+$/, withHint('should be a command on one line', 'e.g. ./hooks/lb-out.sh'))
  .nullable()
  .default(null);

export const rolloutSchema = z
  .strictObject({
    batchSize: z
      .union([positiveInt('nodes'), z.string().regex(PERCENT_RE, withHint('should be a number of nodes or a percentage from 1% to 100%', 'e.g. 1 or "25%"'))], {
        error: withHint('should be a number of nodes or a percentage', 'e.g. 1 or "25%"'),
      })
      .default(1),
    drainSeconds: nonNegativeInt('seconds').default(10),
    drainTimeoutSeconds: nonNegativeInt('seconds').default(120),
    healthTimeoutSeconds: positiveInt('seconds').default(120),
    minReadySeconds: nonNegativeInt('seconds').default(5),
    migrateFirst: z.boolean().default(true),
    maxParallel: positiveInt('nodes').default(10),
    keepReleases: positiveInt('releases').default(3),
    backupBeforeMigrate: z.boolean().default(true),
    keepBackups: positiveInt('backups').default(5),
    hooks: z
      .strictObject({
        beforeDrain: hookCommand,
        afterReady: hookCommand,
        beforeUpgrade: hookCommand,
        afterUpgrade: hookCommand,
      })
      .prefault({}),
    hookTimeoutSeconds: positiveInt('seconds').default(60),
  })
  .prefault({});

export const imagesSchema = z
  .strictObject({
    transfer: z.enum(['pull', 'ssh'], { error: withHint('should be pull or ssh', 'ssh streams the image from this machine') }).default('pull'),
    registryMirror: z
      .string()
      .regex(/^[A-Za-z0-9.-]+(?::\d{1,5})?(?:\/[a-z0-9._/-]+)?$/, withHint('should be a registry address', 'e.g. mirror.example.com:5000'))
      .nullable()
      .default(null),
  })
  .prefault({});

export const inventorySchema = z.strictObject({
  cluster: clusterSchema,
  database: databaseSchema,
  redis: redisSchema,
  secrets: secretsSchema,
  ssh: sshSchema,
  nodes: z.array(nodeSchema).min(1, withHint('should list at least one node', 'add the master: - { name: master, host: 10.0.0.11, role: master }')),
  loadBalancer: loadBalancerSchema,
  rollout: rolloutSchema,
  images: imagesSchema,
  templates: filePath.nullable().default(null),
});

export type InventoryInput = z.input<typeof inventorySchema>;
export type Inventory = z.output<typeof inventorySchema>;
export type InventoryNode = Inventory['nodes'][number];
export type SshOverrides = z.output<typeof sshOverridesSchema>;
export type TlsSettings = z.output<typeof tlsSchema>;
export type HookName = keyof Inventory['rollout']['hooks'];
/** The top-level `ssh:` as parsed: every key optional (no defaults filled in). */
export type SshSettings = z.output<typeof sshSchema>;
