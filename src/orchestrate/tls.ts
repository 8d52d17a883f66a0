/**
 * HTTPS on the balancers: one certificate for every balancer host (a pair shares it), from files
 * the operator provides or obtained and renewed by the tool itself over ACME (HTTP-01: the CA
 * fetches tokens the tool pushes to every balancer's webroot, so no balancer needs extra software).
 * The key is uploaded 0600, root's; a changed certificate reloads nginx, which is graceful: streams
 * in flight finish on the old workers.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { CliError, InputError, errorMessage } from '../errors.js';
import type { LoadedInventory } from '../inventory/load.js';
import { sha256 } from '../plan/state.js';
import { files } from '../remote/commands.js';
import { tlsPaths } from '../render/render.js';
import type { Balancer } from './balancer.js';
import type { Session } from './session.js';

export interface CertificatePair {
  certificatePem: string;
  keyPem: string;
}

const fromInventory = (loaded: LoadedInventory, p: string) => (isAbsolute(p) ? p : resolve(dirname(loaded.path), p));

/**
 * The certificate and key files named by loadBalancer.tls, read and checked before any network:
 * both parse, the key is the certificate's, and it has not expired (exit 2 otherwise).
 */
export async function readTlsFiles(loaded: LoadedInventory): Promise<CertificatePair | undefined> {
  const tls = loaded.inventory.loadBalancer.tls;
  if (!tls?.certificateFile || !tls.keyFile) return undefined;
  const read = async (key: 'certificateFile' | 'keyFile', p: string) => {
    try {
      return await readFile(fromInventory(loaded, p), 'utf8');
    } catch (e) {
      throw new InputError(`loadBalancer.tls.${key}: cannot read ${p} (${(e as NodeJS.ErrnoException).code ?? errorMessage(e)})`, 'the path is relative to the inventory');
    }
  };
  const certificatePem = await read('certificateFile', tls.certificateFile);
  const keyPem = await read('keyFile', tls.keyFile);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certificatePem);
  } catch {
    throw new InputError(`loadBalancer.tls.certificateFile: ${tls.certificateFile} is not a PEM certificate`, 'give the full chain in PEM (-----BEGIN CERTIFICATE-----)');
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('mismatch');
  } catch {
    throw new InputError(`loadBalancer.tls.keyFile: ${tls.keyFile} is not the private key of ${tls.certificateFile}`, 'give the key the certificate was issued for (PEM, unencrypted)');
  }
  if (new Date(cert.validTo).getTime() < Date.now()) {
    throw new InputError(`loadBalancer.tls.certificateFile: ${tls.certificateFile} expired on ${new Date(cert.validTo).toISOString().slice(0, 10)}`, 'renew it, or use tls.acme to have newapi-cluster obtain and renew one');
  }
  return { certificatePem, keyPem };
}

/**
 * The certificate the balancers should hold now, without obtaining one: the files, or the ACME
 * certificate kept beside the inventory while it is not due. Undefined: one must be obtained.
 */
export async function desiredCertificate(session: Session): Promise<CertificatePair | undefined> {
  const tls = session.inv.loadBalancer.tls;
  if (!tls) return undefined;
  if (!tls.acme) return readTlsFiles(session.loaded);
  const { needsRenewal } = await import('../probes/acme.js');
  const { loadAcmeState } = await import('../probes/acme-store.js');
  const stored = await loadAcmeState(dirname(session.loaded.path), session.inv.cluster.name);
  if (!stored.certificatePem || !stored.keyPem) return undefined;
  const domains = session.inv.loadBalancer.serverName.split(' ').filter(Boolean);
  return needsRenewal(stored.certificatePem, domains, new Date(session.clock.now())).renew ? undefined : { certificatePem: stored.certificatePem, keyPem: stored.keyPem };
}

/** Uploads the pair where a balancer's copy differs; returns whether any did. */
export async function pushCertificate(session: Session, pair: CertificatePair): Promise<boolean> {
  const paths = tlsPaths(session.inv);
  const changed = await Promise.all(
    session.balancers().map(async (b) => {
      const [cert, key] = await Promise.all([b.ex.readFile(paths.certificate), b.ex.readFile(paths.key)]);
      if (cert !== undefined && key !== undefined && sha256(cert) === sha256(pair.certificatePem) && sha256(key) === sha256(pair.keyPem)) return false;
      await b.ex.exec(files.privateDir(paths.dir), { timeoutMs: 30_000 });
      await b.ex.upload(paths.key, pair.keyPem, 0o600);
      await b.ex.upload(paths.certificate, pair.certificatePem, 0o644);
      return true;
    }),
  );
  return changed.some(Boolean);
}

/**
 * Makes every balancer hold the certificate (from files, or obtained over ACME when missing, due
 * within 30 days, or not covering every server name), then the HTTPS server is configured and
 * nginx reloads if the certificate changed. `force`: obtain a new one even when not due.
 */
export async function ensureCertificate(session: Session, balancer: Balancer, report: (t: string) => void, opts: { force?: boolean } = {}): Promise<boolean> {
  const tls = session.inv.loadBalancer.tls;
  if (!tls || !balancer.enabled) return false;
  let pair: CertificatePair | undefined;
  if (tls.acme) {
    const { acmeCertificate } = await import('./acme.js');
    pair = await acmeCertificate(session, balancer, report, opts.force ?? false);
  } else {
    pair = await readTlsFiles(session.loaded);
  }
  if (!pair) throw new CliError('loadBalancer.tls has no certificate to use', { hint: 'set certificateFile and keyFile, or acme' });
  const changed = await pushCertificate(session, pair);
  if (changed) report('certificate uploaded to every balancer');
  balancer.tlsReady = true;
  await balancer.apply({ reload: changed });
  return changed;
}
