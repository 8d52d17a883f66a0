/**
 * Making an image present on a node: `docker pull` (optionally from a mirror registry), or
 * `docker save` on the operator's machine streamed over SSH into `docker load`, for servers
 * that cannot reach Docker Hub.
 */
import { CliError } from '../errors.js';
import { parseImageRef } from '../inventory/image.js';
import type { InventoryNode } from '../inventory/schema.js';
import { getImageId } from '../probes/container.js';
import { docker } from '../remote/commands.js';
import type { Session } from './session.js';

/** `registry.example.com/ns/repo` → `ns/repo`: the path a mirror serves the same image under. */
export function mirrorReference(image: string, mirror: string): string {
  const { repository, tag } = parseImageRef(image);
  const [first, ...rest] = repository.split('/');
  const hasRegistry = rest.length > 0 && first !== undefined && (first.includes('.') || first.includes(':') || first === 'localhost');
  const path = hasRegistry ? rest.join('/') : repository;
  return `${mirror.replace(/\/$/, '')}/${path}:${tag ?? 'latest'}`;
}

export async function ensureImage(session: Session, node: InventoryNode, image: string, report?: (t: string) => void): Promise<'present' | 'pulled' | 'transferred'> {
  const ex = session.on(node);
  if (await getImageId(ex, image)) return 'present';
  const { transfer, registryMirror } = session.inv.images;
  if (transfer === 'ssh') {
    report?.(`streaming ${image} from this machine`);
    await transferOverSsh(session, node, image);
    return 'transferred';
  }
  const source = registryMirror ? mirrorReference(image, registryMirror) : image;
  report?.(`pulling ${source}`);
  const r = await ex.exec(docker.pull(source), { allowFailure: true, timeoutMs: 15 * 60_000 });
  if (r.code !== 0) {
    throw new CliError(`cannot pull ${source}: ${r.stderr.trim().split('\n').pop() ?? 'docker pull failed'}`, {
      node: node.name,
      hint: 'check the image name and tag, and that the node reaches the registry; or set images.transfer: ssh',
    });
  }
  if (source !== image) await ex.exec(docker.tag(source, image));
  return 'pulled';
}

async function transferOverSsh(session: Session, node: InventoryNode, image: string): Promise<void> {
  const { execa } = await import('execa');
  const local = await execa('docker', ['image', 'inspect', '--format', '{{.Id}}', image], { reject: false });
  if (local.exitCode !== 0) {
    const pulled = await execa('docker', ['pull', '--quiet', image], { reject: false });
    if (pulled.exitCode !== 0) {
      throw new CliError(`images.transfer is ssh, but this machine has no ${image} and cannot pull it`, {
        node: node.name,
        hint: `docker pull ${image} (or docker load it) on this machine first`,
      });
    }
  }
  const save = execa('docker', ['save', image], { buffer: false, stdout: 'pipe', stderr: 'pipe' });
  try {
    const r = await session.on(node).execWithInput(docker.load(), save.stdout, { allowFailure: true, timeoutMs: 30 * 60_000 });
    if (r.code !== 0) throw new CliError(`docker load failed: ${r.stderr.trim().split('\n').pop() ?? ''}`, { node: node.name, hint: 'check free disk space on the node' });
  } finally {
    await save.catch(() => undefined);
  }
}
