/**
 * Comparing New API versions (image tags) the way semver does: v0.9.21 > v0.9.20, a release
 * candidate below its release (v0.10.0-rc.1 < v0.10.0), two-part tags read as x.y.0.
 */
import semver from 'semver';

/** The semver form of a tag, or undefined when it names no version (latest, nightly). */
export function toSemver(tag: string | undefined): semver.SemVer | undefined {
  if (!tag) return undefined;
  const text = tag.replace(/^v/, '');
  const full = /^\d+\.\d+(?=$|[-+])/.test(text) ? text.replace(/^(\d+\.\d+)/, '$1.0') : text;
  return semver.parse(full, { loose: true }) ?? undefined;
}

/** Negative when a < b, positive when a > b, 0 when equal; undefined when either is not a version. */
export function compareVersions(a: string | undefined, b: string | undefined): number | undefined {
  const x = toSemver(a);
  const y = toSemver(b);
  return x && y ? semver.compare(x, y) : undefined;
}
