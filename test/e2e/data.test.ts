/**
 * Data safety against the lab's real MariaDB: a backup under load while rows are being written
 * (consistent, secret-free), restore (maintenance 503 meanwhile, the nodes back on the backup's
 * version, a row written after the backup gone), the backup an upgrade takes before its migrate
 * step and the way back from a failed upgrade, the release history, and prune.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoadGenerator } from '../support/load.js';
import { cli, hostExec, killClis, LB, labEnv, labInventory, labSecrets, resetLab, startCli } from '../support/lab.js';

const execFileP = promisify(execFile);

interface Manifest {
  file: string;
  cluster: string;
  version: string;
  tables: { name: string; rows: number }[];
  rows: number;
  bytes: number;
  sha256: string;
  automatic: boolean;
}

async function sql(query: string): Promise<string> {
  const env = labEnv();
  const { stdout } = await execFileP('mariadb', ['-S', env.MYSQL_ROOT_SOCKET!, '-u', 'root', '-N', '-B', '-r', 'newapi', '-e', query]);
  return stdout.trim();
}

function getOnce(path: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: LB, port: 80, path, agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type'] ?? '') }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

describe('backup, restore, releases and prune', () => {
  let inventory: string;
  let dir: string;
  let first: Manifest;

  beforeAll(async () => {
    await resetLab();
    inventory = labInventory((t) => t.replace('minReadySeconds: 1', 'minReadySeconds: 1\n  keepReleases: 2'));
    dir = dirname(inventory);
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    await sql('DROP TABLE IF EXISTS markers; CREATE TABLE markers (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64) NOT NULL) CHARACTER SET utf8mb4');
    await sql("INSERT INTO markers (note) VALUES ('before'), ('it''s (tricky), \\\\ \"quoted\"')");
  });

  afterAll(async () => {
    await killClis();
  });

  it('backup under load, while rows are written: zero failed requests, a consistent dump, a manifest with no secret', async () => {
    const load = new LoadGenerator({ host: LB, port: 80, workers: 6, maxDurationMs: 120_000, maxRequests: 20_000, pauseMs: 50 });
    let writing = true;
    const writer = (async () => {
      let n = 0;
      while (writing && n < 2_000) {
        await sql(`INSERT INTO markers (note) VALUES ('during-${n++}')`);
      }
      return n;
    })();
    const r = await cli(['backup', '--json', inventory]);
    writing = false;
    const written = await writer;
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(report.failures).toEqual([]);
    expect(written).toBeGreaterThan(0);
    first = JSON.parse(r.stdout) as Manifest;
    expect(first).toMatchObject({ cluster: 'lab', version: 'v0.9.20', automatic: false });
    const path = join(dir, 'backups', first.file);
    expect(first.file).toMatch(/^lab-\d{8}T\d{6}Z-v0\.9\.20\.sql\.gz$/);
    expect(createHash('sha256').update(readFileSync(path)).digest('hex')).toBe(first.sha256);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'backups')).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(dir, '.gitignore'), 'utf8')).toMatch(/^\/?backups\/?$/m);
    // One snapshot: the markers the dump holds are a prefix of those written, none torn.
    const markers = first.tables.find((t) => t.name === 'markers')!.rows;
    expect(markers).toBeGreaterThanOrEqual(2);
    expect(markers).toBeLessThanOrEqual(2 + written);
    const manifestText = readFileSync(join(dir, 'backups', first.file.replace(/\.sql\.gz$/, '.json')), 'utf8');
    for (const secret of labSecrets()) {
      expect(manifestText).not.toContain(secret);
      expect(first.file).not.toContain(secret);
    }
  });

  it('restore: maintenance (503 with a JSON body) meanwhile, the rows after the backup gone, every node back on the backup\'s version', async () => {
    await sql("INSERT INTO markers (note) VALUES ('after-backup')");
    const before = Number(await sql('SELECT COUNT(*) FROM markers'));
    const run = startCli(['restore', join(dir, 'backups', first.file), inventory, '--yes'], { timeoutMs: 200_000 });
    let maintenance: { status: number; body: string; type: string } | undefined;
    while (run.child.exitCode === null && !maintenance) {
      const answer = await getOnce('/api/status').catch(() => undefined);
      if (answer?.status === 503) maintenance = answer;
      await new Promise((r) => setTimeout(r, 100));
    }
    const r = await run.result;
    expect(r.code, r.stderr).toBe(0);
    expect(maintenance).toBeDefined();
    expect(maintenance!.type).toMatch(/application\/json/);
    expect(JSON.parse(maintenance!.body)).toMatchObject({ success: false });
    expect(r.stdout).toMatch(/downtime: \d+\.\d s/);
    expect(await sql("SELECT COUNT(*) FROM markers WHERE note = 'after-backup'")).toBe('0');
    expect(Number(await sql('SELECT COUNT(*) FROM markers'))).toBe(first.tables.find((t) => t.name === 'markers')!.rows);
    expect(Number(await sql('SELECT COUNT(*) FROM markers'))).toBeLessThan(before);
    expect(await sql("SELECT note FROM markers WHERE id = 2")).toBe('it\'s (tricky), \\ "quoted"');
    const s = JSON.parse((await cli(['status', '--json', inventory])).stdout) as { nodes: { version: string; healthy: boolean; balancer: string }[] };
    expect(s.nodes.map((n) => [n.version, n.healthy, n.balancer])).toEqual([
      ['v0.9.20', true, 'in'],
      ['v0.9.20', true, 'in'],
      ['v0.9.20', true, 'in'],
    ]);
  });

  it('restore refuses a backup of another cluster, and asks for --yes without a terminal; nothing changes', async () => {
    const other = labInventory((t) => t.replace('name: lab', 'name: other'));
    const r = await cli(['restore', join(dir, 'backups', first.file), other, '--yes']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${first.file} is a backup of cluster lab, not other; nothing was changed`);
    const noYes = await cli(['restore', join(dir, 'backups', first.file), inventory]);
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toContain('restore replaces the whole database: it needs --yes');
  });

  it('an upgrade takes a backup before its migrate step; when the upgrade fails, the report says how to restore it, and restoring it returns the schema', async () => {
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.23-unhealthy', labInventory(() => readFileSync(inventory, 'utf8').replace('healthTimeoutSeconds: 60', 'healthTimeoutSeconds: 10'))]);
    expect(r.code).toBe(1);
    const m = /database backup taken before the v0\.9\.23-unhealthy migrations: (\S+) \(to return to it: newapi-cluster restore (\S+)\)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(r.stderr).toMatch(/the migrate step failed/);
    // As if the failed version had half-migrated the shared schema:
    await sql("UPDATE standin_schema SET version = 'v0.9.23' WHERE id = 1");
    const backupPath = m![2]!;
    const restored = await cli(['restore', backupPath, inventory, '--yes'], { timeoutMs: 200_000 });
    expect(restored.code, restored.stderr).toBe(0);
    expect(await sql('SELECT version FROM standin_schema')).toBe('v0.9.20');
    const manifest = JSON.parse(readFileSync(backupPath.replace(/\.sql\.gz$/, '.json'), 'utf8')) as Manifest;
    expect(manifest.automatic).toBe(true);
  });

  it('releases lists every operation newest first, with versions and results, merged from the nodes', async () => {
    for (const v of ['v0.9.21', 'v0.9.22']) {
      const r = await cli(['upgrade', '--rolling', '--to', v, inventory]);
      expect(r.code, r.stderr).toBe(0);
    }
    const r = await cli(['releases', '--json', inventory]);
    expect(r.code, r.stderr).toBe(0);
    const rows = (JSON.parse(r.stdout) as { releases: { operation: string; from: string[]; to: string[]; result: string; nodes: string[] }[] }).releases;
    expect(rows.map((x) => [x.operation.replace(/ lab-\S+/, ' FILE'), x.result.replace(/:.*/, '')])).toEqual([
      ['upgrade --rolling --to v0.9.22', 'ok'],
      ['upgrade --rolling --to v0.9.21', 'ok'],
      ['restore FILE', 'ok'],
      ['upgrade --rolling --to v0.9.23-unhealthy', 'failed'],
      ['restore FILE', 'ok'],
      ['deploy', 'ok'],
    ]);
    expect(rows[0]).toMatchObject({ from: ['v0.9.21'], to: ['v0.9.22'], nodes: ['master', 'slave-1', 'slave-2'] });
    const table = await cli(['releases', inventory]);
    expect(table.stdout).toMatch(/^WHEN \(UTC\)\s+WHO\s+OPERATION\s+VERSIONS\s+RESULT\s+NODES$/m);
    expect(table.stdout).toMatch(/upgrade --rolling --to v0\.9\.22\s+v0\.9\.21 → v0\.9\.22\s+ok\s+master, slave-1, slave-2/);
  });

  it('prune (and every successful upgrade) keeps rollout.keepReleases releases and their images, never the running one', async () => {
    const r = await cli(['prune', inventory]);
    expect(r.code, r.stderr).toBe(0);
    for (const host of ['n1', 'n2', 'n3'] as const) {
      const releases = (await hostExec(host, 'ls /opt/new-api/.newapi-cluster/releases')).trim().split('\n');
      expect(releases).toHaveLength(2);
      expect(releases.map((x) => x.replace(/^\d{8}T\d{6}Z-/, ''))).toEqual(['v0.9.21', 'v0.9.22']);
      const images = (await hostExec(host, "docker image ls --format '{{.Tag}}' 10.77.0.1:5000/calciumion/new-api | sort")).trim().split('\n');
      expect(images).toEqual(['v0.9.21', 'v0.9.22']);
    }
    // What is kept still works: one step back.
    const back = await cli(['rollback', inventory]);
    expect(back.code, back.stderr).toBe(0);
    expect(readdirSync(join(dir, 'backups')).filter((f) => f.endsWith('.sql.gz')).length).toBeGreaterThanOrEqual(2);
  });
});
