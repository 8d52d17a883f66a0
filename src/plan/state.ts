/**
 * `.newapi-cluster/state.json` on each node: what was deployed, from which files, when, by whom.
 * It is written only after the node passed its health gate, so it always names a good version.
 */
import { createHash } from 'node:crypto';

export const STATE_DIR = '.newapi-cluster';

export interface NodeState {
  cluster: string;
  node: string;
  role: 'master' | 'slave';
  image: string;
  /** sha256 of each managed file, by file name. */
  files: Record<string, string>;
  deployedAt: string;
  deployedBy: string;
  /** The image deployed before this one, for rollback. */
  previousImage?: string;
  tool: string;
}

export function sha256(content: string | Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

export function parseState(text: string | undefined): NodeState | undefined {
  if (!text) return undefined;
  try {
    const s = JSON.parse(text) as NodeState;
    return typeof s.image === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}

export const statePaths = (dir: string) => ({
  dir: `${dir}/${STATE_DIR}`,
  state: `${dir}/${STATE_DIR}/state.json`,
  audit: `${dir}/${STATE_DIR}/audit.log`,
  previous: `${dir}/${STATE_DIR}/previous`,
});
