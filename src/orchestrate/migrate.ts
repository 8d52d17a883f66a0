/**
 * The migrate step. New API migrates its schema only in master mode, at start-up, before it
 * listens; a slave of a newer version meeting the old schema fails (issue #4144). So before any
 * slave moves, the new version runs once in master mode on the master host, on a loopback-only
 * spare port (no traffic reaches it), until healthy, and is then removed.
 *
 * It runs through compose (`run` on the master's compose file rendered for the new image), not
 * `docker run --env-file`: docker reads an env file raw, keeping the quotes compose strips, so a
 * password with a space or a `$` reached the migrate container different from the real one.
 */
import { CliError, errorMessage } from '../errors.js';
import { compose, docker, files } from '../remote/commands.js';
import { CONTAINER_PORT, containerName, type NodeFiles } from '../render/render.js';
import { statePaths } from '../plan/state.js';
import { waitHealthy } from './health.js';
import type { Session } from './session.js';

const SPARE_PORTS = [39300, 39301, 39302, 39303, 39304, 39305, 39306, 39307, 39308, 39309];
/** The service name in the bundled compose template. */
export const SERVICE = 'new-api';

export function migrateContainerName(session: Session): string {
  return `${containerName(session.inv)}-migrate`;
}

/** The compose file of the migrate container, beside the tool's own state. */
export function migrateComposePath(dir: string): string {
  return `${statePaths(dir).dir}/migrate.yml`;
}

/** @param masterFiles the master's files rendered for the new image */
export async function runMigrations(session: Session, masterFiles: NodeFiles, image: string, report: (t: string) => void): Promise<void> {
  const master = session.master;
  const ex = session.on(master);
  const name = migrateContainerName(session);
  const dir = session.inv.cluster.dir;
  await ex.exec(docker.remove(name), { allowFailure: true, timeoutMs: 60_000 }); // a leftover of an interrupted run
  let port: number | undefined;
  for (const candidate of SPARE_PORTS) {
    const busy = (await ex.exec(files.listening(candidate), { allowFailure: true, timeoutMs: 30_000 })).stdout.trim();
    if (!busy) {
      port = candidate;
      break;
    }
  }
  if (port === undefined) throw new CliError(`no free spare port (${SPARE_PORTS[0]}–${SPARE_PORTS.at(-1)}) on the master for the migrate step`, { node: master.name, hint: 'free one of these loopback ports on the master' });

  report(`running ${image} in master mode on 127.0.0.1:${port}`);
  const file = migrateComposePath(dir);
  await ex.exec(files.layout(dir, statePaths(dir).dir, statePaths(dir).releases), { timeoutMs: 30_000 });
  await ex.upload(file, masterFiles.compose.content, 0o600);
  const flavor = await session.composeFlavor(master);
  // The master's own .env (its database and Redis, no NODE_TYPE), so it migrates.
  const started = await ex.exec(compose.runOnce(flavor, session.project, dir, file, { name, publish: `127.0.0.1:${port}:${CONTAINER_PORT}`, service: SERVICE }), { allowFailure: true, timeoutMs: 5 * 60_000 });
  if (started.code !== 0) {
    throw new CliError(`the migrate step could not start ${image}: ${started.stderr.trim().split('\n').pop() ?? ''}`, {
      node: master.name,
      hint: 'nothing was upgraded; the cluster still runs its old version. Check the master\'s compose file with newapi-cluster render',
    });
  }
  try {
    await waitHealthy(session, master, { image, port, container: name, minReadySeconds: 0, report });
  } catch (e) {
    throw new CliError(`the migrate step failed: ${errorMessage(e)}`, {
      node: master.name,
      hint: `nothing was upgraded; the cluster still runs its old version. Inspect with: docker logs ${name} on the master (kept for you)`,
    });
  }
  await ex.exec(docker.remove(name), { timeoutMs: 60_000 });
  await ex.exec(files.remove(file), { allowFailure: true, timeoutMs: 30_000 });
}
