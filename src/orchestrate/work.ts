/** Facts from every node a plan concerns, in parallel, and each node's plan. Read-only. */
import { InputError } from '../errors.js';
import type { InventoryNode } from '../inventory/schema.js';
import { planNode, type NodeWork } from '../plan/plan.js';
import { mapLimit } from '../remote/limit.js';
import type { NodeFiles } from '../render/render.js';
import type { Progress } from '../ui/progress.js';
import type { Balancer } from './balancer.js';
import { gatherFacts } from './node-files.js';
import type { Session } from './session.js';

export async function gatherWork(
  session: Session,
  progress: Progress,
  balancer: Balancer,
  files: NodeFiles[],
  imageOf: (node: InventoryNode) => string,
  title = 'Compare rendered files with each host',
): Promise<NodeWork[]> {
  let work: NodeWork[] = [];
  await progress.step(title, async () => {
    const memberships = await balancer.memberships();
    work = await mapLimit(files, session.inv.rollout.maxParallel, async (f) => {
      const image = imageOf(f.node);
      const facts = await gatherFacts(session, f, image, memberships.get(f.node.name));
      return { files: f, facts, plan: planNode(f, facts, image) };
    });
  });
  return work;
}

/** `--only a b`, `--only a,b` or both. */
export function selectNodes(nodes: InventoryNode[], onlyArgs: string[] | undefined): InventoryNode[] {
  const only = onlyArgs?.flatMap((a) => a.split(',')).filter(Boolean);
  if (!only || only.length === 0) return nodes;
  const unknown = only.filter((n) => !nodes.some((node) => node.name === n));
  if (unknown.length > 0) {
    throw new InputError(`--only: no node named ${unknown.map((n) => `"${n}"`).join(', ')}`, `known nodes: ${nodes.map((n) => n.name).join(', ')}`);
  }
  return nodes.filter((n) => only.includes(n.name));
}
