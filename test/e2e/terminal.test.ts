/**
 * At a terminal, as an operator runs it: the built CLI (one bundle, see scripts/build.mjs) under a
 * pseudo-terminal draws its task list (listr2) and asks init's questions (@inquirer/prompts).
 * Nothing else exercises those two libraries inside the bundle.
 */
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { labEnv, labInventory, labSecrets, resetLab } from '../support/lab.js';
import { runInPty } from '../support/pty.js';

describe('at a terminal', () => {
  it('init asks its questions, masks the DSN, and writes the inventory and a 0600 secrets file', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'newapi-init-pty-'));
    const dsn = 'newapi:pty-Secret-42@tcp(10.0.0.5:3306)/newapi';
    const r = await runInPty(['init'], {
      cwd: dir,
      env: {},
      timeoutMs: 45_000,
      answers: [
        [/Cluster name/, 'edge'],
        // Docker Hub cannot be asked here: the question comes without a default after its 3 s deadline.
        [/New API image/, 'calciumion/new-api:v0.9.20'],
        [/How many nodes/, '\b2'],
        [/Address of the master/, '10.0.0.11'],
        [/Address of slave-1/, '10.0.0.12'],
        [/Host running nginx/, '10.0.0.10'],
        [/nginx server_name/, 'api.example.com'],
        [/SSH user/, ''],
        [/SSH private key/, ''],
        [/SQL_DSN/, dsn],
        [/REDIS_CONN_STRING/, ''],
      ],
    });
    expect(r.code, r.screen).toBe(0);
    expect(r.screen).not.toContain('pty-Secret-42');
    const inventory = readFileSync(join(dir, 'inventory.yaml'), 'utf8');
    expect(inventory).toMatch(/^ {2}name: edge$/m);
    expect(inventory).toMatch(/^ {2}image: calciumion\/new-api:v0\.9\.20\s/m);
    expect(inventory).toMatch(/name: master, host: 10\.0\.0\.11, role: master/);
    expect(inventory).toMatch(/name: slave-1, host: 10\.0\.0\.12/);
    expect(inventory).not.toMatch(/slave-2/);
    expect(inventory).toMatch(/^ {2}host: 10\.0\.0\.10$/m);
    expect(inventory).not.toContain('pty-Secret-42');
    const secrets = join(dir, '.newapi-cluster.env');
    expect(statSync(secrets).mode & 0o777).toBe(0o600);
    expect(readFileSync(secrets, 'utf8')).toContain(`\nSQL_DSN=${dsn}\n`);
  });

  describe('against the lab', () => {
    let inventory: string;
    beforeAll(async () => {
      await resetLab();
      inventory = labInventory();
    });

    it('deploy draws its task list, then a second deploy finds nothing to do', { timeout: 200_000 }, async () => {
      const env = labEnv();
      const first = await runInPty(['deploy', inventory], { env, timeoutMs: 150_000 });
      expect(first.code, first.screen).toBe(0);
      // listr2's ticks beside the finished tasks (a plain log would stamp each line instead)
      expect(first.screen).toMatch(/✔ Compare rendered files with each host/);
      expect(first.screen).toMatch(/✔ Start master on v0\.9\.20/);
      expect(first.screen).toMatch(/✔ Start slave-2 on v0\.9\.20 once master is healthy/);
      expect(first.screen).not.toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ /m);
      expect(first.screen).toMatch(/deployed: 3 nodes changed, 0 unchanged, balancer reloaded/);

      const again = await runInPty(['deploy', inventory], { env, timeoutMs: 60_000 });
      expect(again.code, again.screen).toBe(0);
      expect(again.screen).toMatch(/✔ Compare rendered files with each host/);
      expect(again.screen).toMatch(/deploy: nothing to do, 3 nodes and the balancer already match \(\d+\.\d s, no lock taken\)/);
      for (const secret of labSecrets(env)) expect(first.screen + again.screen).not.toContain(secret);
    });
  });
});
