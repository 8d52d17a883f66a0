/**
 * Parsers for the connection strings New API reads. They are used to validate the inventory
 * and, later, to let the probes connect to the same database and Redis from each node.
 */

export interface DatabaseDsn {
  kind: 'mysql' | 'postgres';
  user: string;
  password: string;
  host: string;
  port: number;
  database: string;
  params: Record<string, string>;
}

export interface RedisUrl {
  tls: boolean;
  username: string | undefined;
  password: string | undefined;
  host: string;
  port: number;
  db: number;
}

/** Its message never quotes the DSN: a malformed one can hold a password in any part. */
export class DsnError extends Error {}

/**
 * go-sql-driver/mysql form: `user:pass@tcp(host:3306)/db?param=v`. The password may itself
 * contain `@`, so the credentials end at the last `@` before `tcp(` — the driver does the same.
 */
export function parseMysqlDsn(dsn: string): DatabaseDsn {
  const at = dsn.lastIndexOf('@tcp(');
  const credentials = at >= 0 ? dsn.slice(0, at) : '';
  const rest = at >= 0 ? dsn.slice(at + 1) : dsn;
  const m = /^tcp\(([^()]*)\)\/([^?/]*)(?:\?(.*))?$/.exec(rest);
  if (!m) {
    throw new DsnError('expected the MySQL form user:password@tcp(host:3306)/database');
  }
  const [, address = '', database = '', query = ''] = m;
  const colon = credentials.indexOf(':');
  const user = colon >= 0 ? credentials.slice(0, colon) : credentials;
  const password = colon >= 0 ? credentials.slice(colon + 1) : '';
  if (!user) throw new DsnError('the MySQL DSN has no user (user:password@tcp(host:3306)/database)');
  if (!database) throw new DsnError('the MySQL DSN names no database (…@tcp(host:3306)/database)');
  const { host, port } = splitHostPort(address, 3306);
  return { kind: 'mysql', user, password, host, port, database, params: parseQuery(query) };
}

export function parsePostgresDsn(dsn: string): DatabaseDsn {
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    throw new DsnError('expected postgres://user:password@host:5432/database');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new DsnError('expected postgres://user:password@host:5432/database');
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!url.hostname) throw new DsnError('the PostgreSQL DSN has no host');
  if (!database) throw new DsnError('the PostgreSQL DSN names no database (postgres://…/database)');
  return {
    kind: 'postgres',
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    host: stripBrackets(url.hostname),
    port: url.port ? Number(url.port) : 5432,
    database,
    params: Object.fromEntries(url.searchParams),
  };
}

/** New API decides by prefix: `postgres://` / `postgresql://` is PostgreSQL, anything else MySQL. */
export function parseDatabaseDsn(dsn: string): DatabaseDsn {
  return /^postgres(ql)?:\/\//.test(dsn) ? parsePostgresDsn(dsn) : parseMysqlDsn(dsn);
}

export function parseRedisUrl(value: string): RedisUrl {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new DsnError('expected redis://[user]:password@host:6379[/db]');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new DsnError('expected redis://[user]:password@host:6379[/db]');
  }
  if (!url.hostname) throw new DsnError('the Redis URL has no host');
  const dbPart = url.pathname.replace(/^\//, '');
  const db = dbPart === '' ? 0 : Number(dbPart);
  if (!Number.isInteger(db) || db < 0) throw new DsnError('the Redis database (after host:port/) is not a number');
  return {
    tls: url.protocol === 'rediss:',
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    host: stripBrackets(url.hostname),
    port: url.port ? Number(url.port) : 6379,
    db,
  };
}

function splitHostPort(address: string, defaultPort: number): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(address);
  if (v6) return { host: v6[1] ?? '', port: v6[2] ? Number(v6[2]) : defaultPort };
  const i = address.lastIndexOf(':');
  if (i < 0) {
    if (!address) throw new DsnError('the DSN has no host inside tcp(…)');
    return { host: address, port: defaultPort };
  }
  const port = Number(address.slice(i + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new DsnError('the port inside tcp(…) is not a port number from 1 to 65535');
  }
  return { host: address.slice(0, i), port };
}

function parseQuery(query: string): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(query));
}

function stripBrackets(host: string): string {
  return host.replace(/^\[(.*)\]$/, '$1');
}
