/**
 * Rendered files + facts gathered from the hosts → what to change on each node. Pure, so
 * --dry-run is simply "print the plan", and unit tests need no host.
 */
import type { InventoryNode } from '../inventory/schema.js';
import type { ContainerState } from '../probes/container.js';
import type { NodeFiles, RenderedFile } from '../render/render.js';
import type { NodeState } from './state.js';

/** Where the balancer has a node: serving, marked down (drained), not listed, or no balancer managed. */
export type BalancerMembership = 'in' | 'drained' | 'absent' | 'unmanaged';

export interface NodeFacts {
  node: InventoryNode;
  /** Current content of each managed file, by remote path; undefined when absent. */
  files: Record<string, string | undefined>;
  state: NodeState | undefined;
  container: ContainerState;
  /** The image id the host has for the desired image, if any. */
  desiredImageId: string | undefined;
  /** The node's place in the balancer (default: unmanaged). */
  balancer?: BalancerMembership;
  /**
   * Whether the node answers healthy on its running version. Asked only of running nodes the
   * balancer does not send traffic to (an earlier run left them out), to know whether they may
   * simply be put back.
   */
  healthy?: boolean;
}

export interface FileChange {
  file: RenderedFile;
  before: string | undefined;
}

export interface NodePlan {
  node: InventoryNode;
  image: string;
  changes: FileChange[];
  pullImage: boolean;
  restart: boolean;
  /** Why the container (re)starts, in words for the operator. */
  reasons: string[];
  /** The node has never been deployed by this tool. */
  firstDeploy: boolean;
  /** The node currently serves traffic, so restarting it must drain it first. */
  serving: boolean;
  /** Right as it is, but out of the balancer: it only needs its gate and to be put back. */
  readmit: boolean;
}

export interface NodeWork {
  files: NodeFiles;
  facts: NodeFacts;
  plan: NodePlan;
}

export function planNode(files: NodeFiles, facts: NodeFacts, image: string): NodePlan {
  const changes: FileChange[] = [];
  for (const file of [files.compose, files.env]) {
    const before = facts.files[file.path];
    if (before !== file.content) changes.push({ file, before });
  }
  const reasons: string[] = [];
  if (changes.length > 0) reasons.push(`${changes.map((c) => c.file.path.split('/').pop()).join(' and ')} changed`);
  const c = facts.container;
  const membership = facts.balancer ?? 'unmanaged';
  const outOfBalancer = membership === 'drained' || membership === 'absent';
  if (!c.exists) reasons.push('no container yet');
  else if (!c.running) reasons.push(`the container is ${c.status ?? 'not running'}`);
  else if (c.image !== image) reasons.push(`the container runs ${c.image ?? 'another image'}`);
  else if (facts.desiredImageId !== undefined && c.imageId !== facts.desiredImageId) reasons.push(`${image} now names another image`);
  else if (outOfBalancer && facts.healthy === false) reasons.push(`it is out of the balancer and not healthy`);
  const restart = reasons.length > 0;
  return {
    node: files.node,
    image,
    changes,
    pullImage: facts.desiredImageId === undefined,
    restart,
    reasons,
    firstDeploy: facts.state === undefined,
    // A node the balancer already left out needs no draining.
    serving: c.running && !outOfBalancer,
    readmit: !restart && c.running && outOfBalancer,
  };
}

export function isNoop(plans: readonly NodePlan[], balancerChanged: boolean): boolean {
  return !balancerChanged && plans.every((p) => !p.restart && !p.readmit && p.changes.length === 0);
}
