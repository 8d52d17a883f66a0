import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The installed package's own folder (package.json, templates/, schema/). Found by walking up from
 * this module, because where this module sits differs: src/ under tests, the bundle's chunks under
 * dist/ when installed.
 */
export const PACKAGE_ROOT: string = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'newapi-cluster') return dir;
    if (dirname(dir) === dir) throw new Error(`newapi-cluster: no package.json of newapi-cluster above ${from} (a broken install?)`);
  }
}
