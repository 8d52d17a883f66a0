/**
 * What each node remembers, under `cluster.dir/.newapi-cluster/`:
 *   state.json             the deploy it runs now: image, sha256 of each file, when, by whom, its release
 *   releases/<id>/         one folder per deploy that passed its gate: docker-compose.yml, .env, release.json
 *   audit.log              one JSON line per operation
 * state.json and a release are written only after the node passed its health gate, so they always
 * name a version that worked; rollback reads releases, and trusts a release only when its files
 * still match the hashes recorded beside them.
 */
import { createHash } from 'node:crypto';
import { parseImageRef } from '../inventory/image.js';

export const STATE_DIR = '.newapi-cluster';
export const MANAGED_FILES = ['docker-compose.yml', '.env'] as const;

export interface NodeState {
  cluster: string;
  node: string;
  role: 'master' | 'slave';
  image: string;
  /** sha256 of each managed file, by file name. */
  files: Record<string, string>;
  deployedAt: string;
  deployedBy: string;
  /** The operation that deployed it (deploy, upgrade --rolling --to …, rollback, …). */
  operation?: string;
  /** The folder under releases/ that holds these files. */
  release?: string;
  /** The image deployed before this one. */
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
    return typeof s.image === 'string' && typeof s.files === 'object' && s.files !== null ? s : undefined;
  } catch {
    return undefined;
  }
}

export const statePaths = (dir: string) => ({
  dir: `${dir}/${STATE_DIR}`,
  state: `${dir}/${STATE_DIR}/state.json`,
  audit: `${dir}/${STATE_DIR}/audit.log`,
  releases: `${dir}/${STATE_DIR}/releases`,
  /** Written by versions before releases/ existed: one slot, read as a release called "previous". */
  legacyPrevious: `${dir}/${STATE_DIR}/previous`,
});

/** `20261126T234501Z-v0.9.21`: sorts by time, says the version. */
export function releaseId(at: Date, image: string): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const tag = (parseImageRef(image).tag ?? 'latest').replace(/[^A-Za-z0-9._-]/g, '_');
  return `${stamp}-${tag}`;
}

export interface Release {
  id: string;
  state: NodeState;
}

/**
 * Releases from the output of `files.listReleases`: `=== <id>` then that release's release.json.
 * Newest first; unreadable entries are left out.
 */
export function parseReleaseListing(text: string): Release[] {
  const out: Release[] = [];
  for (const chunk of text.split(/^=== /m).slice(1)) {
    const nl = chunk.indexOf('\n');
    const id = chunk.slice(0, nl).trim();
    const state = parseState(chunk.slice(nl + 1));
    if (id && state) out.push({ id, state });
  }
  return out.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

/** Whether files read back from a host are exactly the ones a state records. */
export function filesMatch(state: NodeState, files: Record<string, string | undefined>): boolean {
  return MANAGED_FILES.every((name) => {
    const content = files[name];
    return content !== undefined && state.files[name] === sha256(content);
  });
}

/** Releases beyond the newest `keep`, never `protect` (the running one, the one rollback would use). */
export function releasesToPrune<R extends { id: string }>(releases: readonly R[], keep: number, protect: ReadonlySet<string>): R[] {
  return releases.filter((r, i) => i >= keep && !protect.has(r.id));
}
