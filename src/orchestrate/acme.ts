/**
 * ACME for the balancers: the certificate lives on the operator's side (beside the inventory, in
 * .newapi-cluster-acme/), is obtained when missing, due within 30 days, or not covering every
 * server name, over HTTP-01 with the tokens pushed to every balancer's webroot (so a balancer pair
 * shares one certificate), and is then uploaded like any certificate.
 */
import { dirname } from 'node:path';
import { CliError } from '../errors.js';
import { files } from '../remote/commands.js';
import { tlsPaths } from '../render/render.js';
import type { Balancer } from './balancer.js';
import type { Session } from './session.js';
import type { CertificatePair } from './tls.js';

export async function acmeCertificate(session: Session, balancer: Balancer, report: (t: string) => void, force: boolean): Promise<CertificatePair> {
  const inv = session.inv;
  const acme = inv.loadBalancer.tls?.acme;
  if (!acme) throw new CliError('loadBalancer.tls.acme is not set');
  const { needsRenewal, obtainCertificate } = await import('../probes/acme.js');
  const { loadAcmeState, saveAcmeState } = await import('../probes/acme-store.js');
  const dir = dirname(session.loaded.path);
  const domains = inv.loadBalancer.serverName.split(' ').filter(Boolean);
  const stored = await loadAcmeState(dir, inv.cluster.name);
  const due = needsRenewal(stored.certificatePem, domains, new Date(session.clock.now()));
  if (stored.certificatePem && stored.keyPem && !due.renew && !force) {
    report(`certificate valid: ${due.reason}`);
    return { certificatePem: stored.certificatePem, keyPem: stored.keyPem };
  }
  report(force ? 'obtaining a new certificate (forced)' : `obtaining a certificate: ${due.reason}`);
  // The CA fetches the tokens over port 80 from whichever balancer answers: every one must serve
  // them. A balancer that already does keeps its file (and its HTTPS server) as it is.
  if (!(await balancer.servesAcmeTokens())) await balancer.apply();
  const webroot = `${tlsPaths(inv).acmeWebroot}/.well-known/acme-challenge`;
  const caFile = acme.caFile ? (acme.caFile.startsWith('/') ? acme.caFile : `${dir}/${acme.caFile}`) : null;
  const issued = await obtainCertificate({
    directoryUrl: acme.directoryUrl,
    email: acme.email,
    caFile,
    domains,
    ...(stored.accountKeyPem ? { accountKeyPem: stored.accountKeyPem } : {}),
    publish: async (token, keyAuthorization) => {
      await Promise.all(session.balancers().map(async (b) => b.ex.upload(`${webroot}/${token}`, keyAuthorization, 0o644)));
    },
    unpublish: async (token) => {
      await Promise.all(session.balancers().map(async (b) => b.ex.exec(files.remove(`${webroot}/${token}`), { allowFailure: true, timeoutMs: 30_000 })));
    },
    signal: session.aborted,
    report,
  });
  await saveAcmeState(dir, inv.cluster.name, {
    accountKeyPem: issued.accountKeyPem,
    certificate: { certificatePem: issued.certificatePem, keyPem: issued.keyPem, domains: issued.domains, directoryUrl: acme.directoryUrl },
  });
  report(`certificate obtained for ${issued.domains.join(', ')}, valid until ${issued.notAfter.toISOString().slice(0, 10)}`);
  return { certificatePem: issued.certificatePem, keyPem: issued.keyPem };
}
