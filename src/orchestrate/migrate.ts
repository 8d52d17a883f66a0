/**
 * The migrate step of an upgrade. New API migrates its schema only in master mode, at start-up,
 * before it listens; a slave of a newer version meeting the old schema fails (issue #4144).
 * So before any slave moves, the new version runs once in master mode on the master host, on a
 * loopback-only spare port (no traffic reaches it), until healthy, and is then removed.
 */
import { CliError } from '../errors.js';
import { docker, files } from '../remote/commands.js';
import { containerName } from '../render/render.js';
import { waitHealthy } from './health.js';
import type { Session } from './session.js';

const SPARE_PORTS = [39300, 39301, 39302, 39303, 39304, 39305, 39306, 39307, 39308, 39309];

export function migrateContainerName(session: Session): string {
  return `${containerName(session.inv)}-migrate`;
}

export async function runMigrations(session: Session, image: string, report: (t: string) => void): Promise<void> {
  const master = session.master;
  const ex = session.on(master);
  const name = migrateContainerName(session);
  const dir = session.inv.cluster.dir;
  await ex.exec(docker.remove(name), { allowFailure: true }); // a leftover of an interrupted run
  let port: number | undefined;
  for (const candidate of SPARE_PORTS) {
    const busy = (await ex.exec(files.listening(candidate), { allowFailure: true })).stdout.trim();
    if (!busy) {
      port = candidate;
      break;
    }
  }
  if (port === undefined) throw new CliError(`no free spare port (${SPARE_PORTS[0]}–${SPARE_PORTS.at(-1)}) on the master for the migrate step`, { node: master.name, hint: 'free one of these loopback ports on the master' });

  report(`running ${image} in master mode on 127.0.0.1:${port}`);
  // The master's own .env: its database and Redis, and no NODE_TYPE, so it migrates.
  await ex.exec(docker.runDetached({ name, image, envFile: `${dir}/.env`, publish: `127.0.0.1:${port}:3000`, volumes: [], args: ['--log-dir', '/app/logs'] }));
  try {
    await waitHealthy(session, master, { image, port, container: name, minReadySeconds: 0, report });
  } catch (e) {
    throw new CliError(`the migrate step failed: ${e instanceof Error ? e.message : String(e)}`, {
      node: master.name,
      hint: `nothing was upgraded; the cluster still runs its old version. Inspect with: docker logs ${name} on the master (kept for you)`,
    });
  }
  await ex.exec(docker.remove(name));
}
