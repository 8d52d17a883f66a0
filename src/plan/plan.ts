/**
 * Rendered files + facts gathered from the hosts → what to change. Pure, so --dry-run is
 * simply "print the plan", and unit tests need no host.
 */
import type { InventoryNode } from '../inventory/schema.js';
import type { ContainerState } from '../probes/container.js';
import type { NodeFiles, RenderedFile } from '../render/render.js';
import type { NodeState } from './state.js';

export interface NodeFacts {
  node: InventoryNode;
  /** Current content of each managed file, by remote path; undefined when absent. */
  files: Record<string, string | undefined>;
  state: NodeState | undefined;
  container: ContainerState;
  /** The image id the host has for the desired image, if any. */
  desiredImageId: string | undefined;
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
  if (!c.exists) reasons.push('no container yet');
  else if (!c.running) reasons.push(`the container is ${c.status ?? 'not running'}`);
  else if (c.image !== image) reasons.push(`the container runs ${c.image ?? 'another image'}`);
  else if (facts.desiredImageId !== undefined && c.imageId !== facts.desiredImageId) reasons.push(`${image} now names another image`);
  return {
    node: files.node,
    image,
    changes,
    pullImage: facts.desiredImageId === undefined,
    restart: reasons.length > 0,
    reasons,
    firstDeploy: facts.state === undefined,
    serving: c.running,
  };
}

export function isNoop(plans: readonly NodePlan[], balancerChanged: boolean): boolean {
  return !balancerChanged && plans.every((p) => !p.restart && p.changes.length === 0);
}
