/** Splits an image reference into repository and tag, the way Docker reads it. */
export interface ImageRef {
  repository: string;
  /** undefined when the reference has no tag (Docker then means `latest`). */
  tag: string | undefined;
  digest: string | undefined;
}

export function parseImageRef(ref: string): ImageRef {
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) return { repository: rest.slice(0, colon), tag: rest.slice(colon + 1), digest };
  return { repository: rest, tag: undefined, digest };
}

/** `v0.9.20` or `0.9.20-rc.1`: a tag that names a version New API reports in /api/status. */
export function isVersionTag(tag: string | undefined): tag is string {
  return tag !== undefined && /^v?\d+\.\d+(\.\d+)?([.-][A-Za-z0-9.-]+)?$/.test(tag);
}

export function withTag(ref: string, tag: string): string {
  const { repository } = parseImageRef(ref);
  return `${repository}:${tag}`;
}
