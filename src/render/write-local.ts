/** `render --out DIR`: the rendered files on the operator's disk, one folder per node. */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { LoadedInventory } from '../inventory/load.js';
import { renderCluster } from './render.js';
import { loadTemplates } from './templates.js';

export interface WrittenFile {
  path: string;
  mode: number;
}

export async function writeRendered(loaded: LoadedInventory, outDir: string): Promise<WrittenFile[]> {
  const inv = loaded.inventory;
  const files = renderCluster(inv, await loadTemplates(inv.templates, dirname(loaded.path)));
  const plan: { path: string; content: string; mode: number }[] = [];
  for (const n of files.nodes) {
    for (const f of [n.compose, n.env]) plan.push({ path: join(outDir, 'nodes', n.node.name, basename(f.path)), content: f.content, mode: f.mode });
  }
  if (inv.loadBalancer.type === 'nginx' || inv.loadBalancer.type === 'none') {
    plan.push({ path: join(outDir, 'balancer', basename(files.balancer.path)), content: files.balancer.content, mode: files.balancer.mode });
  }
  for (const f of plan) {
    await mkdir(dirname(f.path), { recursive: true });
    // Written with its final mode from the first byte, so a .env is never briefly world-readable.
    await writeFile(f.path, f.content, { mode: f.mode });
    await chmod(f.path, f.mode);
  }
  return plan.map(({ path, mode }) => ({ path, mode }));
}
