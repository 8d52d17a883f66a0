/**
 * `deploy`: converge the cluster to the inventory. The plan: images everywhere first, the new
 * version's migrations when the image changes, nodes that serve nothing yet (the master alone
 * first, so its migrations run before any slave starts), nodes an earlier run left out put back,
 * serving nodes rolled with draining, then the balancer. Nothing changed means nothing restarts.
 */
import { dirname } from 'node:path';
import type { LoadedInventory } from '../inventory/load.js';
import type { Plan } from '../plan/steps.js';
import { rolloutSteps } from '../plan/steps.js';
import { getContainerState } from '../probes/container.js';
import { containerName, renderCluster } from '../render/render.js';
import { loadTemplates } from '../render/templates.js';
import type { RunEnv } from './run-env.js';
import { runOperation } from './runner.js';
import { readTlsFiles } from './tls.js';
import { gatherWork, selectNodes } from './work.js';

export interface DeployOptions {
  dryRun: boolean;
  only: string[] | undefined;
}

export async function runDeploy(env: RunEnv, loaded: LoadedInventory, opts: DeployOptions): Promise<void> {
  const inv = loaded.inventory;
  const targets = selectNodes(inv.nodes, opts.only);
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const rendered = renderCluster(inv, templates);
  const image = inv.cluster.image;
  const command = ['deploy', ...(opts.only?.length ? ['--only', ...opts.only] : [])].join(' ');
  // Certificate files are bad input when they do not parse or do not match: exit 2 before any network.
  await readTlsFiles(loaded);

  await runOperation(env, loaded, {
    command,
    dryRun: opts.dryRun,
    templates,
    plan: async (session, progress, balancer): Promise<Plan> => {
      const work = await gatherWork(session, progress, balancer, rendered.nodes.filter((f) => targets.includes(f.node)), () => image);
      // New API runs migrations only on the master, at start-up: a slave must never start on a
      // version whose migrations have not run (issue #4144). A running master on another image
      // means a new version is coming: its migrations run first, as in upgrade.
      const master = session.master;
      const masterContainer = work.find((w) => w.plan.node === master)?.facts.container ?? (await getContainerState(session.on(master), containerName(inv)));
      const masterFiles = rendered.nodes.find((f) => f.node === master)!;
      const migrate = masterContainer.running && masterContainer.image !== image && inv.rollout.migrateFirst ? { image, files: masterFiles, backup: inv.rollout.backupBeforeMigrate } : undefined;
      return {
        operation: command,
        verb: 'deployed',
        work,
        // The balancer step only when the balancers differ from what the deploy leaves, or nodes move.
        steps: rolloutSteps({
          work,
          batchSize: inv.rollout.batchSize,
          migrate,
          balancer: work.some((w) => w.plan.restart || w.plan.readmit) || (await balancer.needsWork()) !== undefined,
          prune: true,
          pullWithStart: inv.images.transfer === 'pull',
        }),
        warnings: [],
        ...(balancer.enabled ? { balancer: { path: inv.loadBalancer.configPath, before: await balancer.read(), after: balancer.renderFinal() } } : {}),
      };
    },
  });
  if (!opts.dryRun && inv.loadBalancer.type === 'none' && !env.out.json) {
    // loadBalancer.type: none — the operator runs the balancer; this is what it should hold.
    env.out.print(`\n# nginx upstream for cluster ${inv.cluster.name} (loadBalancer.type: none, not pushed):`);
    env.out.print(rendered.balancer.content);
  }
}

