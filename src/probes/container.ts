/** What docker says about the cluster's container on a node. Read-only. */
import { docker } from '../remote/commands.js';
import type { Executor } from '../remote/types.js';

export interface ContainerState {
  exists: boolean;
  status: string | undefined; // running, restarting, exited, created…
  running: boolean;
  image: string | undefined; // as configured (the reference)
  imageId: string | undefined;
  startedAt: string | undefined;
  restartCount: number;
  health: string | undefined; // healthy, unhealthy, starting (the image's own HEALTHCHECK)
}

export const NO_CONTAINER: ContainerState = {
  exists: false,
  status: undefined,
  running: false,
  image: undefined,
  imageId: undefined,
  startedAt: undefined,
  restartCount: 0,
  health: undefined,
};

interface Inspect {
  Image?: string;
  RestartCount?: number;
  Config?: { Image?: string };
  State?: { Status?: string; Running?: boolean; StartedAt?: string; Health?: { Status?: string } };
}

export async function getContainerState(ex: Executor, name: string): Promise<ContainerState> {
  const r = await ex.exec(docker.inspectContainer(name), { allowFailure: true });
  return r.code === 0 ? parseContainerInspect(r.stdout) : NO_CONTAINER;
}

/** `docker container inspect`'s JSON → the state; no container when absent or unreadable. */
export function parseContainerInspect(json: string | undefined): ContainerState {
  if (!json) return NO_CONTAINER;
  let c: Inspect | undefined;
  try {
    [c] = JSON.parse(json) as Inspect[];
  } catch {
    return NO_CONTAINER;
  }
  if (!c) return NO_CONTAINER;
  return {
    exists: true,
    status: c.State?.Status,
    running: c.State?.Running === true,
    image: c.Config?.Image,
    imageId: c.Image,
    startedAt: c.State?.StartedAt,
    restartCount: c.RestartCount ?? 0,
    health: c.State?.Health?.Status,
  };
}

export async function getImageId(ex: Executor, image: string): Promise<string | undefined> {
  const r = await ex.exec(docker.imageId(image), { allowFailure: true });
  return r.code === 0 ? r.stdout.trim() || undefined : undefined;
}
