/**
 * What `init` writes: an inventory with ${VAR} references, and the secrets file they resolve
 * from. Pure: the CLI gathers answers (prompts or flags) and writes the files.
 */
import { randomBytes } from 'node:crypto';

export interface ScaffoldAnswers {
  name: string;
  image: string;
  hosts: string[];
  balancerHost: string | undefined;
  serverName: string;
  sshUser: string;
  identityFile: string | undefined;
  sqlDsn: string | undefined;
  redisUrl: string | undefined;
}

/** 48 characters of [A-Za-z0-9]: strong, and safe in every file format it lands in. */
export function generateSecret(length = 48): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const out: string[] = [];
  // Rejection sampling keeps every character equally likely.
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out.push(alphabet[byte % 62] as string);
    }
  }
  return out.join('');
}

export function scaffoldInventory(a: ScaffoldAnswers): string {
  const nodes = a.hosts
    .map((host, i) =>
      i === 0
        ? `  - { name: master, host: ${host}, role: master, weight: 1 }`
        : `  - { name: slave-${i}, host: ${host}, role: slave, weight: 1 }`,
    )
    .join('\n');
  const balancer = a.balancerHost
    ? `loadBalancer:\n  type: nginx\n  host: ${a.balancerHost}\n  listen: 80\n  serverName: ${a.serverName}\n  configPath: /etc/nginx/conf.d/${a.name}.conf`
    : `loadBalancer:\n  type: none                         # prints the nginx upstream instead of pushing it`;
  return `# newapi-cluster inventory for cluster "${a.name}". Check it with: newapi-cluster validate
# \${VAR} values come from the environment, then from .newapi-cluster.env beside this file
# (mode 0600, git-ignored). Keep secrets there, never here.
cluster:
  name: ${a.name}
  image: ${a.image}        # name a version; upgrades use newapi-cluster upgrade --rolling --to vX.Y.Z
  port: 3000
  dir: /opt/new-api
  timezone: UTC
  syncFrequency: 60
  batchUpdate: { enabled: true, interval: 5 }
database:
  dsn: \${SQL_DSN}                   # user:password@tcp(host:3306)/new-api — utf8mb4
redis:
  url: \${REDIS_CONN_STRING}         # redis://default:password@host:6379/0
  poolSize: 10
secrets:
  sessionSecret: \${SESSION_SECRET}  # identical on every node, or logins are lost between nodes
  cryptoSecret: \${CRYPTO_SECRET}
ssh:
  user: ${a.sshUser}
  port: 22
${a.identityFile ? `  identityFile: ${a.identityFile}\n` : '  # identityFile: ~/.ssh/id_ed25519  # else ssh-agent\n'}  knownHostsFile: ~/.ssh/known_hosts
  sudo: ${a.sshUser === 'root' ? 'false' : 'true'}
nodes:
${nodes}
${balancer}
rollout:
  batchSize: 1
  drainSeconds: 10
  healthTimeoutSeconds: 120
  minReadySeconds: 5
  migrateFirst: true
  maxParallel: 10
images:
  transfer: pull                     # or ssh: stream the image from this machine
`;
}

export function scaffoldSecrets(a: Pick<ScaffoldAnswers, 'sqlDsn' | 'redisUrl'>): string {
  const line = (key: string, value: string | undefined, example: string) =>
    value ? `${key}=${quoteDotenv(value)}` : `# ${key}=${example}`;
  return `# Secrets for newapi-cluster (mode 0600, git-ignored). Values here fill \${VAR} in the inventory;
# the environment overrides them.
SESSION_SECRET=${generateSecret()}
CRYPTO_SECRET=${generateSecret()}
${line('SQL_DSN', a.sqlDsn, 'newapi:PASSWORD@tcp(10.0.0.5:3306)/new-api')}
${line('REDIS_CONN_STRING', a.redisUrl, 'redis://default:PASSWORD@10.0.0.6:6379/0')}
`;
}

/** Node's parseEnv reads single-quoted values literally. */
function quoteDotenv(value: string): string {
  return /^[A-Za-z0-9_./:@%+=,()?&-]*$/.test(value) ? value : `'${value}'`;
}
