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
    const r = (await transferImage(session, [node], image)).get(node.name);
    if (r instanceof Error) throw r;
    return r ?? 'transferred';
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

/**
 * `images.transfer: ssh`: the image leaves this machine once — one `docker save`, its stream fanned
 * out to `docker load` on every node that lacks it, at the pace of the slowest. A node whose load
 * fails is unplugged from the stream and drained, so the others go on. Returns, per node, whether
 * the image was there already or transferred; a node that failed maps to its error.
 */
export async function transferImage(session: Session, nodes: InventoryNode[], image: string): Promise<Map<string, 'present' | 'transferred' | Error>> {
  const out = new Map<string, 'present' | 'transferred' | Error>();
  const ids = await Promise.all(nodes.map((n) => getImageId(session.on(n), image)));
  const need = nodes.filter((n, i) => {
    if (ids[i]) out.set(n.name, 'present');
    return !ids[i];
  });
  if (need.length === 0) return out;
  const { execa } = await import('execa');
  const { PassThrough } = await import('node:stream');
  const local = await execa('docker', ['image', 'inspect', '--format', '{{.Id}}', image], { reject: false });
  if (local.exitCode !== 0) {
    const pulled = await execa('docker', ['pull', '--quiet', image], { reject: false });
    if (pulled.exitCode !== 0) {
      const e = new CliError(`images.transfer is ssh, but this machine has no ${image} and cannot pull it`, { hint: `docker pull ${image} (or docker load it) on this machine first` });
      for (const n of need) out.set(n.name, e);
      return out;
    }
  }
  const save = execa('docker', ['save', image], { buffer: false, stdout: 'pipe', stderr: 'pipe', cancelSignal: session.aborted });
  const streams = need.map(() => new PassThrough({ highWaterMark: 1 << 20 }));
  for (const s of streams) save.stdout.pipe(s);
  await Promise.all(
    need.map(async (node, i) => {
      const stream = streams[i]!;
      try {
        const r = await session.on(node).execWithInput(docker.load(), stream, { allowFailure: true, timeoutMs: 30 * 60_000 });
        if (r.code !== 0) throw new CliError(`docker load failed: ${r.stderr.trim().split('\n').pop() ?? ''}`, { node: node.name, hint: 'check free disk space on the node' });
        out.set(node.name, 'transferred');
      } catch (e) {
        save.stdout.unpipe(stream);
        stream.resume();
        out.set(node.name, e instanceof Error ? e : new Error(String(e)));
      }
    }),
  );
  await save.catch(() => undefined);
  return out;
}
