/**
 * An operation as data: the ordered steps that deploy, upgrade, rollback, add-node and
 * remove-node take, built by pure functions from the nodes' plans. `--dry-run` prints this list;
 * the runner (orchestrate/runner.ts) executes exactly this list. One description, so what a dry
 * run shows is what runs.
 */
import type { InventoryNode } from '../inventory/schema.js';
import { parseImageRef } from '../inventory/image.js';
import type { NodeFiles } from '../render/render.js';
import type { NodeWork } from './plan.js';

export type Step =
  /** Make each node's image present (pull or transfer), in parallel, before anything moves. */
  | { kind: 'images'; work: NodeWork[] }
  /** A database backup before migrations. */
  | { kind: 'backup'; image: string }
  /** Run `image` once in master mode on the master, on a loopback port, until healthy (New API issue #4144). */
  | { kind: 'migrate'; image: string; files: NodeFiles }
  /**
   * Nodes that serve nothing yet: `first` starts alone (the master migrates), `rest` is prepared
   * meanwhile, then started. With `admit`, each goes into the balancer once healthy.
   */
  | { kind: 'start'; first: NodeWork[]; rest: NodeWork[]; admit: boolean }
  /** Serving nodes: drain, wait, recreate, gate, put back; a failed batch returns to where it was. */
  | { kind: 'batch'; work: NodeWork[] }
  /** Nodes an earlier run left out of the balancer that are right as they are: gate, put back. */
  | { kind: 'readmit'; work: NodeWork[]; admit: boolean }
  /** Nodes already right but never recorded by this tool: write their state and release. */
  | { kind: 'record'; work: NodeWork[] }
  /** Push the final balancer configuration (members, weights), `nginx -t`, reload. */
  | { kind: 'balancer' }
  /** Drain a node, wait, stop it; remove its files with `purge`. */
  | { kind: 'remove'; node: InventoryNode; purge: boolean }
  /** Write the edited inventory file. */
  | { kind: 'inventory'; what: string; text: string }
  /** The balancer answers 503 with a JSON body (on), or serves again with every started node in (off). */
  | { kind: 'maintenance'; on: boolean }
  /** Stop the containers of these nodes (they stay created). */
  | { kind: 'stop'; nodes: InventoryNode[] }
  /** Load a verified backup into the database, through the master's SSH connection. */
  | { kind: 'restore'; path: string; file: string }
  /** Remove releases and images older than rollout.keepReleases (never the running or a kept one). */
  | { kind: 'prune'; nodes: InventoryNode[] }
  /** The balancers' certificate: obtained or renewed over ACME when due (or forced), uploaded, nginx reloaded. */
  | { kind: 'tls'; force: boolean };

export interface Plan {
  /** The command, as the lock, the audit log and the report name it. */
  operation: string;
  /** Past tense for the summary: deployed, upgraded, rolled back, added, removed. */
  verb: string;
  work: NodeWork[];
  steps: Step[];
  /** Said before the steps run: nodes skipped, and why. */
  warnings: string[];
  /** The balancer's file now and as the plan leaves it (undefined: no balancer managed). */
  balancer?: { path: string; before: string | undefined; after: string };
}

/** Steps that change a host (the lock is verified before each). */
export function changesHosts(step: Step): boolean {
  return step.kind !== 'inventory';
}

/** A step whose failure does not fail the run: the work is done, only housekeeping is left. */
export function isHousekeeping(step: Step): boolean {
  return step.kind === 'prune';
}

/** Splits slaves into batches: `batchSize` nodes, or a percentage of them (at least one). */
export function batchesOf<T>(items: readonly T[], batchSize: number | string): T[][] {
  const size =
    typeof batchSize === 'number' ? batchSize : Math.max(1, Math.floor((items.length * Number(batchSize.replace('%', ''))) / 100));
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export interface RolloutInput {
  work: NodeWork[];
  batchSize: number | string;
  /** Run this image's migrations (with the master's files for it) before any slave moves, if any node restarts onto it. */
  migrate?: { image: string; files: NodeFiles; backup: boolean } | undefined;
  /** Push the final balancer configuration at the end (deploy, add-node). */
  balancer: boolean;
  /** Started nodes go into the balancer as they pass their gate (not for add-node: the inventory names a node first). */
  admitStarted?: boolean;
  /** Inventory edits, written after the nodes moved (and before the balancer names a new node). */
  inventory?: { what: string; text: string } | undefined;
  /** Prune old releases and images after success (deploy, upgrade). */
  prune?: boolean;
  /**
   * Nodes that serve nothing yet pull their own image as part of their start (images.transfer:
   * pull); with transfer: ssh every node gets it in the images step, from one `docker save`.
   */
  pullWithStart?: boolean;
}

/**
 * The shape every rolling operation shares: images first, the migrate step, nodes that serve
 * nothing yet (the master alone first), nodes left out by an earlier run put back, serving slaves
 * in batches, the serving master last, state for unrecorded nodes, then the balancer.
 */
export function rolloutSteps(input: RolloutInput): Step[] {
  const { work } = input;
  const restarting = work.filter((w) => w.plan.restart);
  const steps: Step[] = [];
  // Nodes that serve get their image before anything is drained; nodes that serve nothing yet
  // pull their own as part of their start, so the master starts as soon as its image is there.
  const early = (w: NodeWork) => w.plan.serving || !input.pullWithStart || (input.migrate !== undefined && w.plan.node.role === 'master');
  const needImage = restarting.filter((w) => w.plan.pullImage && early(w));
  if (needImage.length > 0) steps.push({ kind: 'images', work: needImage });
  if (input.migrate && restarting.some((w) => w.plan.image === input.migrate!.image)) {
    if (input.migrate.backup) steps.push({ kind: 'backup', image: input.migrate.image });
    steps.push({ kind: 'migrate', image: input.migrate.image, files: input.migrate.files });
  }
  const fresh = restarting.filter((w) => !w.plan.serving);
  const freshMaster = fresh.filter((w) => w.plan.node.role === 'master');
  const freshSlaves = fresh.filter((w) => w.plan.node.role !== 'master');
  if (fresh.length > 0) steps.push({ kind: 'start', first: freshMaster, rest: freshSlaves, admit: input.admitStarted ?? true });
  const readmit = work.filter((w) => w.plan.readmit);
  if (readmit.length > 0) steps.push({ kind: 'readmit', work: readmit, admit: input.admitStarted ?? true });
  const serving = restarting.filter((w) => w.plan.serving);
  const slaves = serving.filter((w) => w.plan.node.role !== 'master');
  const master = serving.filter((w) => w.plan.node.role === 'master');
  for (const batch of batchesOf(slaves, input.batchSize)) steps.push({ kind: 'batch', work: batch });
  if (master.length > 0) steps.push({ kind: 'batch', work: master });
  const unrecorded = work.filter((w) => !w.plan.restart && w.facts.state === undefined);
  if (unrecorded.length > 0) steps.push({ kind: 'record', work: unrecorded });
  if (input.inventory) steps.push({ kind: 'inventory', ...input.inventory });
  if (input.balancer) steps.push({ kind: 'balancer' });
  // A node deployed for the first time has no older release of ours to prune (and any image it
  // had before is not ours to remove).
  const prunable = restarting.filter((w) => !w.plan.firstDeploy);
  if (input.prune && prunable.length > 0) steps.push({ kind: 'prune', nodes: prunable.map((w) => w.plan.node) });
  return steps;
}

const names = (work: readonly NodeWork[]) => work.map((w) => w.plan.node.name).join(', ');
const tagOf = (image: string) => parseImageRef(image).tag ?? image;

/** One line per step, in the words the task list uses. */
export function describeStep(step: Step, opts: { drainSeconds: number; transfer: string }): string {
  switch (step.kind) {
    case 'images':
      return `make the image present on ${names(step.work)} (${step.work.length > 1 ? 'in parallel, ' : ''}${opts.transfer})`;
    case 'backup':
      return `back up the database before the ${tagOf(step.image)} migrations`;
    case 'migrate':
      return `run ${step.image} once in master mode on the master (migrations), loopback only`;
    case 'start': {
      const first = step.first.length ? `start ${names(step.first)} first, then ` : '';
      return step.rest.length ? `${first}start ${names(step.rest)}; health-gate each` : `start ${names(step.first)}; health-gate it`;
    }
    case 'batch':
      return `drain ${names(step.work)}, wait ${opts.drainSeconds} s, recreate on ${tagOf(step.work[0]!.plan.image)}, health-gate, put back`;
    case 'readmit':
      return `health-gate ${names(step.work)} (left out of the balancer by an earlier run) and put back`;
    case 'record':
      return `record the deployed state of ${names(step.work)}`;
    case 'balancer':
      return 'update the balancer (nginx -t, then reload) if its configuration changed';
    case 'remove':
      return `drain ${step.node.name}, wait ${opts.drainSeconds} s, stop it${step.purge ? ' and remove its files' : ''}`;
    case 'inventory':
      return `write the inventory: ${step.what}`;
    case 'maintenance':
      return step.on ? 'put the balancer in maintenance: every request gets 503 with a JSON body' : 're-open the balancer: every started node in';
    case 'stop':
      return `stop ${step.nodes.map((n) => n.name).join(', ')}`;
    case 'restore':
      return `restore the database from ${step.file} (every table dropped first), through the master`;
    case 'prune':
      return `remove releases and images older than rollout.keepReleases on ${step.nodes.map((n) => n.name).join(', ')}`;
    case 'tls':
      return `renew the balancers' certificate${step.force ? '' : ' if it expires within 30 days or does not cover every server name'}, upload it, reload nginx`;
  }
}
