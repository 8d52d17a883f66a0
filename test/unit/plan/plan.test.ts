/**
 * planNode from tables of facts: what restarts and why, with no host. The reasons are what
 * `deploy --dry-run` prints, so they are compared verbatim.
 */
import { describe, expect, it } from 'vitest';
import type { InventoryNode } from '../../../src/inventory/schema.js';
import { isNoop, planNode, type NodeFacts } from '../../../src/plan/plan.js';
import type { NodeState } from '../../../src/plan/state.js';
import { NO_CONTAINER, type ContainerState } from '../../../src/probes/container.js';
import type { NodeFiles } from '../../../src/render/render.js';

const IMAGE = 'calciumion/new-api:v0.9.21';
const OLD_IMAGE = 'calciumion/new-api:v0.9.20';
const IMAGE_ID = 'sha256:1111111111111111111111111111111111111111111111111111111111111111';
const OTHER_ID = 'sha256:2222222222222222222222222222222222222222222222222222222222222222';
const COMPOSE = '/opt/new-api/docker-compose.yml';
const ENV = '/opt/new-api/.env';

const node: InventoryNode = { name: 'slave-1', host: '10.0.0.12', role: 'slave', weight: 1 };

const files: NodeFiles = {
  node,
  compose: { path: COMPOSE, content: 'services: {}\n', mode: 0o644, secret: false },
  env: { path: ENV, content: 'NODE_TYPE=slave\n', mode: 0o600, secret: true },
};

const state: NodeState = {
  cluster: 'prod',
  node: 'slave-1',
  role: 'slave',
  image: IMAGE,
  files: {},
  deployedAt: '2026-11-01T00:00:00.000Z',
  deployedBy: 'ops@laptop',
  tool: 'newapi-cluster 0.1.0',
};

const running = (image: string, imageId: string): ContainerState => ({
  exists: true,
  status: 'running',
  running: true,
  image,
  imageId,
  startedAt: '2026-11-01T00:00:00Z',
  restartCount: 0,
  health: 'healthy',
});

const sameFiles = { [COMPOSE]: files.compose.content, [ENV]: files.env.content };

function facts(over: Partial<NodeFacts>): NodeFacts {
  return { node, files: sameFiles, state, container: running(IMAGE, IMAGE_ID), desiredImageId: IMAGE_ID, ...over };
}

interface Row {
  name: string;
  facts: NodeFacts;
  restart: boolean;
  reasons: string[];
  pullImage: boolean;
  serving: boolean;
  firstDeploy: boolean;
  changed: string[];
}

const rows: Row[] = [
  {
    name: 'no container, no files, never deployed, image absent',
    facts: facts({ files: { [COMPOSE]: undefined, [ENV]: undefined }, state: undefined, container: NO_CONTAINER, desiredImageId: undefined }),
    restart: true,
    reasons: ['docker-compose.yml and .env changed', 'no container yet'],
    pullImage: true,
    serving: false,
    firstDeploy: true,
    changed: [COMPOSE, ENV],
  },
  {
    name: 'container stopped (exited)',
    facts: facts({ container: { ...running(IMAGE, IMAGE_ID), status: 'exited', running: false } }),
    restart: true,
    reasons: ['the container is exited'],
    pullImage: false,
    serving: false,
    firstDeploy: false,
    changed: [],
  },
  {
    name: 'container not running, status unknown',
    facts: facts({ container: { ...running(IMAGE, IMAGE_ID), status: undefined, running: false } }),
    restart: true,
    reasons: ['the container is not running'],
    pullImage: false,
    serving: false,
    firstDeploy: false,
    changed: [],
  },
  {
    name: 'running another image',
    facts: facts({ container: running(OLD_IMAGE, OTHER_ID) }),
    restart: true,
    reasons: [`the container runs ${OLD_IMAGE}`],
    pullImage: false,
    serving: true,
    firstDeploy: false,
    changed: [],
  },
  {
    name: 'same reference, but the tag now names another image id',
    facts: facts({ container: running(IMAGE, OTHER_ID) }),
    restart: true,
    reasons: [`${IMAGE} now names another image`],
    pullImage: false,
    serving: true,
    firstDeploy: false,
    changed: [],
  },
  {
    name: '.env changed on a running node',
    facts: facts({ files: { ...sameFiles, [ENV]: 'NODE_TYPE=slave\nTZ=UTC\n' } }),
    restart: true,
    reasons: ['.env changed'],
    pullImage: false,
    serving: true,
    firstDeploy: false,
    changed: [ENV],
  },
  {
    name: 'compose file changed and other image',
    facts: facts({ files: { ...sameFiles, [COMPOSE]: 'services: { old: {} }\n' }, container: running(OLD_IMAGE, OTHER_ID), desiredImageId: undefined }),
    restart: true,
    reasons: ['docker-compose.yml changed', `the container runs ${OLD_IMAGE}`],
    pullImage: true,
    serving: true,
    firstDeploy: false,
    changed: [COMPOSE],
  },
  {
    name: 'nothing changed',
    facts: facts({}),
    restart: false,
    reasons: [],
    pullImage: false,
    serving: true,
    firstDeploy: false,
    changed: [],
  },
  {
    name: 'nothing changed, but never recorded by this tool (deployed by hand)',
    facts: facts({ state: undefined }),
    restart: false,
    reasons: [],
    pullImage: false,
    serving: true,
    firstDeploy: true,
    changed: [],
  },
];

describe('planNode', () => {
  it.each(rows)('$name', (row) => {
    const plan = planNode(files, row.facts, IMAGE);
    expect(plan.restart).toBe(row.restart);
    expect(plan.reasons).toEqual(row.reasons);
    expect(plan.pullImage).toBe(row.pullImage);
    expect(plan.serving).toBe(row.serving);
    expect(plan.firstDeploy).toBe(row.firstDeploy);
    expect(plan.changes.map((c) => c.file.path)).toEqual(row.changed);
    expect(plan.image).toBe(IMAGE);
    expect(plan.node).toBe(node);
  });

  it('keeps what the host had, for the diff and for rollback', () => {
    const before = 'NODE_TYPE=slave\nTZ=UTC\n';
    const plan = planNode(files, facts({ files: { ...sameFiles, [ENV]: before } }), IMAGE);
    expect(plan.changes).toEqual([{ file: files.env, before }]);
  });

  it('treats an absent file as a change from undefined', () => {
    const plan = planNode(files, facts({ files: { [COMPOSE]: files.compose.content, [ENV]: undefined } }), IMAGE);
    expect(plan.changes).toEqual([{ file: files.env, before: undefined }]);
  });
});

describe('isNoop', () => {
  const unchanged = planNode(files, facts({}), IMAGE);
  const restarting = planNode(files, facts({ container: running(OLD_IMAGE, OTHER_ID) }), IMAGE);

  it('is true only when no node changes and the balancer is unchanged', () => {
    expect(isNoop([unchanged, unchanged], false)).toBe(true);
    expect(isNoop([unchanged, restarting], false)).toBe(false);
    expect(isNoop([unchanged], true)).toBe(false);
    expect(isNoop([], false)).toBe(true);
  });
});
