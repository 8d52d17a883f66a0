/**
 * HTTPS on the balancers from certificate files (loadBalancer.tls.certificateFile / keyFile):
 * readTlsFiles refuses bad files before any network (exit 2), and on the in-memory lab a deploy
 * uploads the key (0600) and the chain to every balancer, configures the HTTPS server only once
 * the certificate is there, uploads and reloads nothing when nothing changed, and uploads and
 * reloads — without a new nginx file — when the certificate changed. Certificates are made by
 * the real openssl.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CliError, ExitCode, InputError } from '../../../src/errors.js';
import { loadInventory } from '../../../src/inventory/load.js';
import { runDeploy } from '../../../src/orchestrate/deploy.js';
import { readTlsFiles } from '../../../src/orchestrate/tls.js';
import { tlsPaths } from '../../../src/render/render.js';
import { baseInventory, writeInventoryDir } from '../../fixtures/inventory.js';
import { Lab, type FakeEvent, type LabOptions, type RunOutcome } from '../../support/fake-cluster.js';

const B1 = '10.0.0.10';
const B2 = '10.0.0.20';
const PAIR = ['balancer-1', 'balancer-2'] as const;
const NAME = 'api.example.com';

// ---------------------------------------------------------------------------------------------
// Certificates, by openssl
// ---------------------------------------------------------------------------------------------

let work: string;

function openssl(args: string[], cwd = work): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

interface Pem {
  cert: string;
  key: string;
}

let n = 0;
/** A self-signed certificate for api.example.com, valid `days` from now. */
async function selfSigned(days = 90): Promise<Pem> {
  const id = `self-${++n}`;
  openssl(['req', '-x509', ...EC, '-keyout', `${id}.key`, '-out', `${id}.pem`, '-days', String(days), '-subj', `/CN=${NAME}`, '-addext', `subjectAltName=DNS:${NAME}`]);
  return { cert: await readFile(join(work, `${id}.pem`), 'utf8'), key: await readFile(join(work, `${id}.key`), 'utf8') };
}

/** A leaf for api.example.com signed by a test CA: `cert` is the full chain (leaf, then CA). */
async function chained(): Promise<Pem & { leaf: string }> {
  const id = `chain-${++n}`;
  openssl(['req', '-x509', ...EC, '-keyout', `${id}-ca.key`, '-out', `${id}-ca.pem`, '-days', '90', '-subj', '/CN=newapi-cluster test CA']);
  openssl(['req', '-new', ...EC, '-keyout', `${id}.key`, '-out', `${id}.csr`, '-subj', `/CN=${NAME}`]);
  openssl(['x509', '-req', '-in', `${id}.csr`, '-CA', `${id}-ca.pem`, '-CAkey', `${id}-ca.key`, '-CAcreateserial', '-out', `${id}.pem`, '-days', '90']);
  const leaf = await readFile(join(work, `${id}.pem`), 'utf8');
  return { leaf, cert: leaf + (await readFile(join(work, `${id}-ca.pem`), 'utf8')), key: await readFile(join(work, `${id}.key`), 'utf8') };
}

/** A certificate valid from 2020-01-01 to 2020-01-02 (openssl ca sets both dates). */
async function expired(): Promise<Pem> {
  const dir = join(work, `ca-${++n}`);
  await mkdir(dir);
  await writeFile(join(dir, 'ca.cnf'), '[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = ./index.txt\nnew_certs_dir = .\nserial = ./serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[ p ]\ncommonName = supplied\n');
  await writeFile(join(dir, 'index.txt'), '');
  await writeFile(join(dir, 'serial'), '01\n');
  openssl(['req', '-new', ...EC, '-keyout', 'old.key', '-out', 'old.csr', '-subj', `/CN=${NAME}`], dir);
  openssl(['ca', '-selfsign', '-keyfile', 'old.key', '-in', 'old.csr', '-out', 'old.pem', '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-batch', '-notext', '-config', 'ca.cnf'], dir);
  return { cert: await readFile(join(dir, 'old.pem'), 'utf8'), key: await readFile(join(dir, 'old.key'), 'utf8') };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'newapi-cluster-tls-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// readTlsFiles
// ---------------------------------------------------------------------------------------------

describe('readTlsFiles: certificate files are checked before any network', { timeout: 30_000 }, () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });

  /** An inventory with loadBalancer.tls naming these files (relative to it), and the files it holds in certs/. */
  async function inventoryWith(tls: { certificateFile: string; keyFile: string }, present: Record<string, string>) {
    const raw = baseInventory();
    raw.loadBalancer.tls = tls;
    const tmp = await writeInventoryDir(raw);
    cleanups.push(tmp.cleanup);
    await mkdir(join(tmp.dir, 'certs'));
    for (const [name, text] of Object.entries(present)) await writeFile(join(tmp.dir, 'certs', name), text);
    return loadInventory(tmp.file, { env: {} });
  }

  async function refusal(p: Promise<unknown>): Promise<InputError> {
    const e = await p.then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(InputError);
    expect((e as CliError).exitCode).toBe(ExitCode.badInput);
    return e as InputError;
  }

  it('reads a matching pair, the full chain byte for byte', async () => {
    const pem = await chained();
    const loaded = await inventoryWith({ certificateFile: 'certs/fullchain.pem', keyFile: 'certs/privkey.pem' }, { 'fullchain.pem': pem.cert, 'privkey.pem': pem.key });
    expect(await readTlsFiles(loaded)).toEqual({ certificatePem: pem.cert, keyPem: pem.key });
  });

  it('refuses a path it cannot read', async () => {
    const pem = await selfSigned();
    const missing = await inventoryWith({ certificateFile: 'certs/missing.pem', keyFile: 'certs/privkey.pem' }, { 'privkey.pem': pem.key });
    let e = await refusal(readTlsFiles(missing));
    expect(e.message).toBe('loadBalancer.tls.certificateFile: cannot read certs/missing.pem (ENOENT)');
    expect(e.hint).toBe('the path is relative to the inventory');

    const folder = await inventoryWith({ certificateFile: 'certs/fullchain.pem', keyFile: 'certs' }, { 'fullchain.pem': pem.cert });
    e = await refusal(readTlsFiles(folder));
    expect(e.message).toBe('loadBalancer.tls.keyFile: cannot read certs (EISDIR)');
  });

  it('refuses a certificate file that is not PEM', async () => {
    const pem = await selfSigned();
    const loaded = await inventoryWith({ certificateFile: 'certs/fullchain.pem', keyFile: 'certs/privkey.pem' }, { 'fullchain.pem': 'this is not a certificate\n', 'privkey.pem': pem.key });
    const e = await refusal(readTlsFiles(loaded));
    expect(e.message).toBe('loadBalancer.tls.certificateFile: certs/fullchain.pem is not a PEM certificate');
    expect(e.hint).toBe('give the full chain in PEM (-----BEGIN CERTIFICATE-----)');
  });

  it('refuses a key that is not the certificate\'s (another key, or no key at all)', async () => {
    const a = await selfSigned();
    const b = await selfSigned();
    for (const key of [b.key, a.cert]) {
      const loaded = await inventoryWith({ certificateFile: 'certs/fullchain.pem', keyFile: 'certs/other.key' }, { 'fullchain.pem': a.cert, 'other.key': key });
      const e = await refusal(readTlsFiles(loaded));
      expect(e.message).toBe('loadBalancer.tls.keyFile: certs/other.key is not the private key of certs/fullchain.pem');
      expect(e.hint).toBe('give the key the certificate was issued for (PEM, unencrypted)');
    }
  });

  it('refuses an expired certificate', async () => {
    const old = await expired();
    const loaded = await inventoryWith({ certificateFile: 'certs/old.pem', keyFile: 'certs/old.key' }, { 'old.pem': old.cert, 'old.key': old.key });
    const e = await refusal(readTlsFiles(loaded));
    expect(e.message).toBe('loadBalancer.tls.certificateFile: certs/old.pem expired on 2020-01-02');
    expect(e.hint).toBe('renew it, or use tls.acme to have newapi-cluster obtain and renew one');
  });
});

// ---------------------------------------------------------------------------------------------
// Deploys on the fake lab
// ---------------------------------------------------------------------------------------------

const labs: Lab[] = [];

afterEach(async () => {
  for (const lab of labs.splice(0)) {
    expect(lab.cluster.unmodelled, 'orchestration ran something the fake does not model').toEqual([]);
    await lab.cleanup();
  }
});

const TLS = { certificateFile: 'certs/fullchain.pem', keyFile: 'certs/privkey.pem' };

async function tlsLab(pem: Pem, opts: LabOptions = { balancers: [B1, B2] }): Promise<Lab> {
  const lab = await Lab.create({
    ...opts,
    inventory: (raw) => {
      raw.loadBalancer.tls = TLS;
    },
  });
  labs.push(lab);
  await writeCertificate(lab, pem);
  return lab;
}

async function writeCertificate(lab: Lab, pem: Pem): Promise<void> {
  await mkdir(join(lab.tmp.dir, 'certs'), { recursive: true });
  await writeFile(join(lab.tmp.dir, TLS.certificateFile), pem.cert);
  await writeFile(join(lab.tmp.dir, TLS.keyFile), pem.key, { mode: 0o600 });
}

const deploy = (lab: Lab) => lab.run((env, loaded) => runDeploy(env, loaded, { dryRun: false, only: undefined }));

function expectOk<T>(r: RunOutcome<T>): void {
  if (!r.ok) throw new Error(`the run failed: ${(r.error as Error)?.message}\n${r.stderr}`);
}

const lastSeq = (lab: Lab) => lab.cluster.events.at(-1)?.seq ?? 0;
const since = <E extends FakeEvent>(events: E[], mark: number) => events.filter((e) => e.seq > mark);
const HTTPS = /listen 443 ssl http2;/;
const uploadsOn = (lab: Lab, host: string, mark: number) => since(lab.cluster.events, mark).filter((e): e is Extract<FakeEvent, { kind: 'upload' }> => e.kind === 'upload' && e.host === host);

describe('deploy with a certificate from files', { timeout: 30_000 }, () => {
  it('a first deploy uploads the key (0600) and the chain to every balancer, and configures HTTPS only once they are there', async () => {
    const pem = await chained();
    const lab = await tlsLab(pem);
    const c = lab.cluster;
    const paths = tlsPaths(lab.loaded.inventory);
    const config = lab.loaded.inventory.loadBalancer.configPath;
    const r = await deploy(lab);
    expectOk(r);

    for (const name of PAIR) {
      const b = lab.node(name);
      expect(b.files.get(paths.key), `${name}: the key`).toBe(pem.key);
      expect(b.modeOf(paths.key), `${name}: the key is 0600`).toBe(0o600);
      expect(b.files.get(paths.certificate), `${name}: the whole chain`).toBe(pem.cert);
      expect(b.modeOf(paths.certificate)).toBe(0o644);
      expect(b.dirModes.get(paths.dir), `${name}: its folder is 0700`).toBe(0o700);
      const ups = uploadsOn(lab, name, 0);
      const keyAt = ups.find((e) => e.path === paths.key)!.seq;
      const certAt = ups.find((e) => e.path === paths.certificate)!.seq;
      const pushes = c.balancerPushes(name);
      const withHttps = pushes.filter((p) => HTTPS.test(p.content));
      expect(withHttps.length, `${name}: the HTTPS server is configured`).toBeGreaterThan(0);
      for (const p of withHttps) expect(p.seq, `${name}: HTTPS only after the key and the certificate`).toBeGreaterThan(Math.max(keyAt, certAt));
      const final = b.files.get(config)!;
      expect(final).toMatch(HTTPS);
      expect(final).toContain(`ssl_certificate ${paths.certificate};`);
      expect(final).toContain(`ssl_certificate_key ${paths.key};`);
      expect(final).toContain('return 308 https://$host$request_uri;');
      expect(b.activeConfig, `${name}: nginx runs the HTTPS configuration`).toBe(final);
      expect(c.places(name)).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    }
    expect(r.stdout + r.stderr).not.toContain(pem.key.split('\n')[1]!);
  });

  it('a second deploy uploads nothing and reloads nothing', async () => {
    const lab = await tlsLab(await selfSigned());
    expectOk(await deploy(lab));
    const mark = lastSeq(lab);
    const r = await deploy(lab);
    expectOk(r);
    for (const name of PAIR) {
      expect(uploadsOn(lab, name, mark), `${name}: no upload`).toEqual([]);
      expect(since(lab.cluster.nginxEvents(name), mark), `${name}: no reload`).toEqual([]);
    }
    expect(r.stdout).toMatch(/nothing to do, 3 nodes and the balancer already match/);
  });

  it('a changed certificate file is uploaded again and nginx reloads, with the same nginx file', async () => {
    const lab = await tlsLab(await selfSigned());
    expectOk(await deploy(lab));
    const paths = tlsPaths(lab.loaded.inventory);
    const config = lab.loaded.inventory.loadBalancer.configPath;
    const files = Object.fromEntries(PAIR.map((name) => [name, lab.node(name).files.get(config)]));
    const renewed = await selfSigned();
    await writeCertificate(lab, renewed);
    const mark = lastSeq(lab);
    expectOk(await deploy(lab));

    for (const name of PAIR) {
      const b = lab.node(name);
      const ups = uploadsOn(lab, name, mark);
      expect(ups.map((e) => [e.path, e.mode]).sort(), `${name}: the new pair, and nothing else`).toEqual(
        [
          [paths.certificate, 0o644],
          [paths.key, 0o600],
        ].sort(),
      );
      expect(b.files.get(paths.certificate)).toBe(renewed.cert);
      expect(b.files.get(paths.key)).toBe(renewed.key);
      expect(b.files.get(config), `${name}: the nginx file is unchanged`).toBe(files[name]);
      const reloads = since(lab.cluster.nginxEvents(name), mark);
      expect(reloads.map((e) => e.op), `${name}: one graceful reload`).toEqual(['reload']);
      expect(reloads[0]!.seq).toBeGreaterThan(Math.max(...ups.map((e) => e.seq)));
    }
  });

  it('a deploy that only renewed the certificate says so: the run is recorded, and the balancer is not reported unchanged', async () => {
    const lab = await tlsLab(await selfSigned());
    expectOk(await deploy(lab));
    expect(lab.node('master').runLines()).toHaveLength(1);
    await writeCertificate(lab, await selfSigned());
    const r = await deploy(lab);
    expectOk(r);
    // The certificate was uploaded to every balancer and nginx reloaded: a change like any other.
    expect(lab.node('master').runLines(), 'the run that uploaded the certificate closes itself in the audit log').toHaveLength(2);
    expect(r.stdout, 'the summary does not claim the balancer is unchanged').not.toContain('balancer unchanged');
  });

  it('a balancer that lost its certificate gets it back without the other ever running a file without HTTPS', async () => {
    const lab = await tlsLab(await selfSigned());
    expectOk(await deploy(lab));
    const paths = tlsPaths(lab.loaded.inventory);
    const config = lab.loaded.inventory.loadBalancer.configPath;
    const b1 = lab.node('balancer-1');
    const b2 = lab.node('balancer-2');
    // balancer-2's nginx was reinstalled (/etc/nginx wiped): our file, the certificate and the key are gone.
    for (const f of [config, paths.certificate, paths.key]) b2.files.delete(f);
    const mark = lastSeq(lab);
    const served: string[] = [];
    const off = lab.cluster.onEvent((e) => {
      if (e.kind === 'nginx' && e.host === 'balancer-1') served.push(b1.activeConfig ?? '');
    });
    const r = await deploy(lab);
    off();
    expectOk(r);
    expect(b2.files.get(paths.key)).toBeDefined();
    expect(b2.files.get(config)).toMatch(HTTPS);
    for (const p of since(lab.cluster.balancerPushes('balancer-1'), mark)) expect(p.content, 'balancer-1 (serving HTTPS) never gets a file without the HTTPS server').toMatch(HTTPS);
    for (const s of served) expect(s, 'balancer-1 never reloads into a configuration without HTTPS').toMatch(HTTPS);
  });

  it('bad certificate files fail the deploy with exit 2 before any host is reached', async () => {
    const lab = await tlsLab(await expired(), {});
    const r = await deploy(lab);
    expect(r.error).toBeInstanceOf(InputError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.badInput);
    expect((r.error as Error).message).toBe('loadBalancer.tls.certificateFile: certs/fullchain.pem expired on 2020-01-02');
    expect(lab.cluster.events).toEqual([]);
  });
});
